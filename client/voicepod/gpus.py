"""RunPod's GPU types, one naming for ``voicepod cost`` and ``voicepod deploy``: the price table's groups.

Each group of ``prices.json`` (shipped with the package) is one serverless price tier: a short name such as
"RTX 4090 (24 GB)", its per-second prices, and the RunPod GPU type ids billed at that price (what an endpoint's
``gpuTypeIds`` takes, e.g. "NVIDIA GeForce RTX 4090"). A user may name a tier or a GPU by any unambiguous part:
"4090", "RTX 4090", "l4", "NVIDIA L4".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GpuPrice:
    """A price tier. ``flex``/``active``: USD per second of one worker that scales to zero / is always on;
    ``gpu_ids``: RunPod's GPU type ids billed at this price."""

    name: str
    flex: float
    active: float
    gpu_ids: tuple[str, ...] = ()


def default_prices_path() -> Path:
    # Shipped as package data, so `voicepod cost` works from an installed client too.
    return Path(__file__).with_name("prices.json")


def load_prices(path: Path | None = None) -> tuple[list[GpuPrice], dict[str, Any]]:
    """The tiers of a price table file (the shipped one by default), and the file's other fields."""
    table = json.loads(Path(path or default_prices_path()).read_text())
    prices = [GpuPrice(name, float(p["flex"]), float(p["active"]), tuple(p.get("gpu_ids", ())))
              for name, p in table["gpus"].items()]
    return prices, {k: v for k, v in table.items() if k != "gpus"}


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _matches(query: str, name: str) -> bool:
    # Whole words, so "L4" is not taken for "L40S".
    words = _tokens(name)
    return all(token in words for token in _tokens(query))


def find_tier(query: str, prices: list[GpuPrice]) -> GpuPrice:
    """The tier named by ``query``: its name, one of its GPU ids, or an unambiguous part of either.

    Raises ``ValueError`` naming the known tiers when nothing or more than one tier matches.
    """
    exact = [p for p in prices if query.lower() in (p.name.lower(), *(i.lower() for i in p.gpu_ids))]
    found = exact or [p for p in prices if _tokens(query) and any(_matches(query, n) for n in (p.name, *p.gpu_ids))]
    if len(found) == 1:
        return found[0]
    known = ", ".join(p.name for p in prices)
    if not found:
        raise ValueError(f"unknown GPU {query!r}; known: {known}")
    raise ValueError(f"GPU {query!r} is ambiguous: {', '.join(p.name for p in found)}; be more specific")


def find_gpu_ids(query: str, prices: list[GpuPrice]) -> list[str]:
    """The RunPod GPU type ids named by ``query``: an id (as is), every id an unambiguous part names ("4090",
    "A100": both of its ids), or a tier's name (all of its ids).

    Raises ``ValueError`` when nothing matches, or the matches span several price tiers ("RTX").
    """
    ids = [gpu_id for p in prices for gpu_id in p.gpu_ids]
    if exact := [gpu_id for gpu_id in ids if gpu_id.lower() == query.lower()]:
        return exact[:1]
    tiers = [p for p in prices if _tokens(query) and any(_matches(query, gpu_id) for gpu_id in p.gpu_ids)]
    if len(tiers) > 1:
        raise ValueError(f"GPU {query!r} is ambiguous: {', '.join(p.name for p in tiers)}; be more specific")
    if tiers:
        return [gpu_id for gpu_id in tiers[0].gpu_ids if _matches(query, gpu_id)]
    return list(find_tier(query, prices).gpu_ids)  # a tier's name, or an error naming the known ones
