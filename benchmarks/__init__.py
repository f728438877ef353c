"""Benchmarks: each module measures one thing against its reference in the same run and writes
``benchmarks/results/<name>.json`` and ``<name>.md``. ``python -m benchmarks`` runs them all.

Shared here: where results go, the machine's description, medians, markdown tables and the spoken clips.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

# Long enough to cut clips of any length used here from it (espeak-ng at 160 wpm: ~45 words a 16 s).
PASSAGE = (
    "The harbour was quiet in the early morning, and the fishing boats rocked gently at their moorings. "
    "A man in a yellow coat walked along the pier, counting the crates that had arrived overnight. "
    "Every crate carried a label with the name of a town, a date, and a number written in blue ink. "
    "He stopped at the last one, frowned, and wrote something in a small notebook. "
    "Further up the hill the bakery had opened, and the smell of fresh bread drifted down to the water. "
    "Children ran past on their way to school, shouting to each other about a football match. "
    "By nine o'clock the sun had burned away the mist, and the first ferry of the day sounded its horn. "
    "Passengers with bicycles and backpacks waited in a line that stretched past the ticket office. "
)


def machine() -> str:
    """What the numbers were measured on, e.g. ``cpu x86_64, 2 cores, no GPU``."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"cpu {platform.machine()}, {os.cpu_count()} cores, no GPU"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` and return its result and the seconds it took."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats are printed with 3 significant decimals."""

    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], table: str, out: Path = RESULTS) -> Path:
    """Write ``<name>.json`` (with the machine and date) and ``<name>.md``, print the table."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "device": machine(), "date": time.strftime("%Y-%m-%d"), **payload}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{name}.md").write_text(f"{table}\n\nMeasured on {payload['device']}, {payload['date']}.\n")
    print(f"\n## {name}\n\n{table}\n", file=sys.stderr)
    return out / f"{name}.json"


def spoken_clip(seconds: float, sample_rate: int = 16000) -> bytes:
    """A WAV file of espeak-ng reading :data:`PASSAGE` (repeated as needed), cut to ``seconds``."""
    import numpy as np
    from voicepod.audio import read_wav, write_wav

    from tests.speech import espeak_wav  # the same synthetic speech the STT tests transcribe

    samples, rate = read_wav(espeak_wav(PASSAGE, sample_rate=sample_rate))
    repeats = int(np.ceil(seconds * rate / len(samples)))
    return write_wav(np.tile(samples, repeats)[: int(seconds * rate)], rate)


def run_cli(
    run: Callable[..., Any],
    doc: str,
    argv: list[str] | None,
    *,
    default_runs: int = 5,
    quick_help: str = "fewer runs",
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The command line every timed benchmark shares: ``--quick``, ``--runs N`` (3 when quick), ``--out DIR``;
    ``options`` adds a benchmark's own, passed to ``run`` as keyword arguments."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS)
    if options is not None:
        options(parser)
    args = vars(parser.parse_args(argv))
    quick, runs, out = args.pop("quick"), args.pop("runs"), args.pop("out")
    out.mkdir(parents=True, exist_ok=True)
    run(quick, runs or (3 if quick else default_runs), out, **args)

