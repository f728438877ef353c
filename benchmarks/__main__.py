"""``python -m benchmarks [--quick] [--only stt,llm,...] [--out DIR]``: run the benchmarks one after another,
each in its own process (every one loads its own models), then the cost arithmetic on the chain's results.
``make bench`` calls this. ``cold_start`` (issue 7) runs as a separate step when present."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import REPO, RESULTS

ORDER = ["stt", "llm", "assistant", "reply_cap", "tts", "speech_text", "tts_memory", "chain", "cost", "pickup",
         "direct_hop", "capacity", "scheduler", "batch_exactness", "phone_stt", "turn_model", "phone",
         "phone_capacity", "cold_start"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and shorter clips (a few minutes)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ORDER)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else ORDER
    unknown = set(chosen) - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {ORDER}")
    failed = []
    for name in [n for n in ORDER if n in chosen]:
        if not (REPO / "benchmarks" / f"{name}.py").exists():
            print(f"skipping {name}: benchmarks/{name}.py is not there", file=sys.stderr)
            continue
        command = [sys.executable, "-m", f"benchmarks.{name}", "--out", str(args.out)]
        if args.quick:
            command.append("--quick" if name != "cold_start" else "--runs=1")
        started = time.monotonic()
        print(f"== {name}", file=sys.stderr, flush=True)
        if subprocess.run(command, cwd=REPO).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
