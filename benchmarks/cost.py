"""Cost of a minute of conversation per GPU type, from the chain benchmark's measured compute seconds per turn
and ``prices.json``, against a managed platform; the same arithmetic as ``voicepod cost``.

``python -m benchmarks.cost`` (after ``benchmarks.chain``). Seconds measured on a CPU are billed at GPU prices
as a projection: an upper bound, since a GPU runs these models faster.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from voicepod.cost import cost_row, load_prices, workload_from_results

from benchmarks import REPO, RESULTS, write_results

PRICES = REPO / "client" / "voicepod" / "prices.json"


def run(out: Path, idle_values: tuple[float, ...] = (0.0, 5.0), active: int = 1) -> dict[str, Any]:
    prices, about = load_prices(PRICES)
    managed = float(about.get("managed_usd_per_min", 0.10))
    chain = json.loads((out / "chain.json").read_text())
    payload: dict[str, Any] = {"prices": about, "measured_on": chain["device"], "active_per_stage": active,
                               "managed_usd_per_min": managed, "by_idle_s": {}}
    lines = []
    for idle in idle_values:
        workload, device = workload_from_results(out / "chain.json", idle)
        rows = [cost_row(workload, price, active, managed) for price in prices]
        payload["by_idle_s"][str(idle)] = [asdict(row) for row in rows]
        payload["workload"] = asdict(workload)
        lines.append(f"Flex idle timeout {idle:g} s:\n")
        lines.append("| GPU | $/conversation min (flex) | of managed | 1 active/stage $/month | break-even min/month |")
        lines.append("|---|---:|---:|---:|---:|")
        for row in rows:
            even = "never" if row.break_even_minutes is None else f"{row.break_even_minutes:,.0f}"
            lines.append(f"| {row.gpu} | ${row.flex_per_minute:.4f} | {row.flex_per_minute / managed:.0%} "
                         f"| ${row.active_monthly:,.0f} | {even} |")
        lines.append("")
    seconds = ", ".join(f"{k} {v:.2f} s" for k, v in workload.seconds.items())
    lines.append(f"PROJECTION from {device}: per turn {seconds} of compute, {workload.turns_per_minute:.1f} turns a "
                 f"minute (question, wait, reply); prices read {about['read_on']} from {about['source']}; "
                 f"managed platform ${managed:.2f}/min.")
    write_results("cost", payload, "\n".join(lines), out)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="(no effect: arithmetic only)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run(args.out)


if __name__ == "__main__":
    main()
