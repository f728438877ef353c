"""A waterfall picture of one turn: a bar per stage from its start to its end, a mark at its first chunk, and
the same three jobs run one after another below it for comparison."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: benchmark machines have no display
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"stt": "#4C72B0", "llm": "#DD8452", "tts": "#55A868"}


def draw(streamed: dict[str, Any], sequential: dict[str, Any] | None, path: Path, title: str) -> Path:
    """Write the PNG. ``streamed``: ``{stage: {"started", "first_chunk", "finished"}, "voice_to_voice_s"}``
    (seconds since the end of the user's audio); ``sequential``: ``{stage: {"started", "finished"}}``."""
    rows = [(f"{stage.upper()} (streamed)", stage, streamed[stage]) for stage in COLOURS]
    if sequential:
        rows += [(f"{stage.upper()} (one after another)", stage, sequential[stage]) for stage in COLOURS]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6), dpi=120)
    for y, (label, stage, t) in enumerate(rows):
        if t.get("started") is None or t.get("finished") is None:
            continue
        streamed_row = "streamed" in label
        ax.barh(y, t["finished"] - t["started"], left=t["started"], height=0.6, color=COLOURS[stage],
                alpha=1.0 if streamed_row else 0.45)
        if t.get("first_chunk") is not None:
            ax.plot([t["first_chunk"]] * 2, [y - 0.35, y + 0.35], color="black", linewidth=2)
    ends = [t["finished"] for _, _, t in rows if t.get("finished") is not None]
    v2v = streamed.get("voice_to_voice_s")
    if v2v is not None:
        ax.axvline(v2v, color="crimson", linestyle="--", linewidth=1.2,
                   label=f"first reply audio, streamed: {v2v:.2f} s")
    if sequential and sequential.get("total_s"):
        ax.axvline(sequential["total_s"], color="dimgrey", linestyle=":", linewidth=1.5,
                   label=f"reply audio, one after another: {sequential['total_s']:.2f} s")
        ends.append(sequential["total_s"])
    ax.set_xlim(0, max(ends, default=1.0) * 1.04)
    ax.legend(loc="lower center", fontsize=9, framealpha=0.95)
    return _finish(fig, ax, [label for label, _, _ in rows],
                   "seconds since the end of the user's audio  (black tick: first chunk received)",
                   textwrap.wrap(title, 90), path)


def draw_call(turns: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Write the PNG of call turns, one group of rows per turn. ``turns``: ``{label: turn}``, each turn
    ``{"end_silence_s", "mouth_to_ear_s", stage: {"started", "first_chunk", "finished"}}`` in seconds since the
    caller's last voiced sound; the end-of-turn wait is a grey bar from 0 to ``end_silence_s``."""
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for label, turn in turns.items():
        rows.append((f"end-of-turn wait ({label})", "wait", {"started": 0.0, "finished": turn["end_silence_s"]}))
        rows += [(f"{stage.upper()} ({label})", stage, turn[stage]) for stage in COLOURS]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.8), dpi=120)
    for y, (_, stage, t) in enumerate(rows):
        if t.get("started") is None or t.get("finished") is None:
            continue
        ax.barh(y, t["finished"] - t["started"], left=t["started"], height=0.6, color=COLOURS.get(stage, "#999999"))
        if t.get("first_chunk") is not None:
            ax.plot([t["first_chunk"]] * 2, [y - 0.35, y + 0.35], color="black", linewidth=2)
    styles = iter(["--", ":", "-."])
    for label, turn in turns.items():
        ax.axvline(turn["mouth_to_ear_s"], color="crimson", linestyle=next(styles, "--"), linewidth=1.2,
                   label=f"first reply audio at the caller ({label}): {turn['mouth_to_ear_s']:.2f} s")
    ax.axvline(0, color="black", linewidth=0.8)
    starts = [t["started"] for _, _, t in rows if t.get("started") is not None]
    ends = [t["finished"] for _, _, t in rows if t.get("finished") is not None]
    ends += [turn["mouth_to_ear_s"] for turn in turns.values()]
    ax.set_xlim(min([0.0, *starts]) - 0.05, max(ends, default=1.0) * 1.04)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.95)
    return _finish(fig, ax, [label for label, _, _ in rows],
                   "seconds since the caller's last voiced sound  (black tick: first chunk received)",
                   textwrap.wrap(title, 90), path)


def _finish(fig: Any, ax: Any, labels: list[str], xlabel: str, title: list[str], path: Path) -> Path:
    """Label the rows top to bottom, title the chart and write it to ``path``."""
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.4, -0.6)
    ax.set_xlabel(xlabel)
    ax.set_title("\n".join(title), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
