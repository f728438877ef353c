"""``voicepod cost``: what a minute of conversation costs on RunPod serverless, per GPU type.

Pure arithmetic on per-turn compute seconds of each stage (given on the command line, or read from the chain
benchmark's results json) and a per-second price table (``prices.json`` beside this module). A flex worker is billed
from its start until it stops, i.e. its compute seconds plus the idle timeout it waits for the next job (capped
by the time until that job); an active worker is billed every second of the month, busy or not.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .cli_errors import UsageError
from .gpus import GpuPrice, default_prices_path, find_tier, load_prices
from .registry import CHAIN

STAGES = CHAIN  # a turn's stages, each billed
SECONDS_PER_MONTH = 30 * 24 * 3600
MANAGED_USD_PER_MIN = 0.10


@dataclass(frozen=True)
class Workload:
    """One conversation's load. ``seconds``: compute seconds per turn for each stage (stt, llm, tts);
    ``turns_per_minute``: turns in a minute of conversation; ``idle_s``: a flex worker's idle timeout,
    billed after each job unless the next turn comes sooner."""

    seconds: dict[str, float]
    turns_per_minute: float
    idle_s: float = 0.0

    def billed_s_per_minute(self, stage: str) -> float:
        """Flex seconds billed for ``stage`` in one minute of conversation."""
        busy = self.seconds[stage]
        gap = 60.0 / self.turns_per_minute
        return self.turns_per_minute * max(busy, min(busy + self.idle_s, gap))

    def busy_s_per_minute(self, stage: str) -> float:
        """Compute seconds ``stage`` spends in one minute of conversation (what an active worker must fit)."""
        return self.turns_per_minute * self.seconds[stage]


@dataclass(frozen=True)
class CostRow:
    """The cost of one GPU type. ``break_even_minutes``: conversation minutes a month above which
    self-hosting with ``active_workers`` per stage costs less than the managed platform (None: never)."""

    gpu: str
    flex_per_minute: float
    active_monthly: float
    active_capacity_minutes: float
    active_workers: int
    break_even_minutes: float | None


def cost_per_minute(workload: Workload, price: GpuPrice) -> float:
    """USD for one minute of conversation on flex workers, all three stages on this GPU type."""
    return sum(workload.billed_s_per_minute(stage) for stage in STAGES) * price.flex


def break_even_minutes(
    fixed_monthly: float, capacity_minutes: float, marginal_per_minute: float, managed_per_minute: float
) -> float | None:
    """Monthly conversation minutes at which self-hosting costs what the managed platform does.

    ``fixed_monthly``: the always-on workers' bill; ``capacity_minutes``: the minutes they can serve; beyond
    them each minute costs ``marginal_per_minute`` (flex). None when self-hosting never catches up.
    """
    if fixed_monthly <= managed_per_minute * capacity_minutes:
        return fixed_monthly / managed_per_minute
    if marginal_per_minute >= managed_per_minute:
        return None
    return capacity_minutes + (fixed_monthly - managed_per_minute * capacity_minutes) / (
        managed_per_minute - marginal_per_minute
    )


def cost_row(
    workload: Workload, price: GpuPrice, active_workers: int = 1, managed_per_minute: float = MANAGED_USD_PER_MIN
) -> CostRow:
    """Flex cost per minute, the monthly bill of ``active_workers`` always-on workers per stage, how many
    conversation minutes they serve, and the break-even volume against the managed platform."""
    flex = cost_per_minute(workload, price)
    fixed = active_workers * len(STAGES) * price.active * SECONDS_PER_MONTH
    busiest = max(workload.busy_s_per_minute(stage) for stage in STAGES)
    capacity = active_workers * SECONDS_PER_MONTH / busiest if busiest > 0 else math.inf
    if active_workers == 0:
        even = 0.0 if flex < managed_per_minute else None
    else:
        even = break_even_minutes(fixed, capacity, flex, managed_per_minute)
    return CostRow(price.name, flex, fixed, capacity, active_workers, even)


def workload_from_results(path: Path, idle_s: float) -> tuple[Workload, str]:
    """Per-turn compute seconds and turns per minute from the chain benchmark's json; also where they were
    measured (``device``)."""
    results = json.loads(Path(path).read_text())
    turn = results["cost_inputs"]
    seconds = {stage: float(turn["billed_s"][stage]) for stage in STAGES}
    return Workload(seconds, float(turn["turns_per_minute"]), idle_s), str(results.get("device", "unknown"))


def _money(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _minutes(value: float | None) -> str:
    if value is None:
        return "never"
    return "any" if value == 0 else f"{value:,.0f}"


def format_table(rows: list[CostRow], managed_per_minute: float) -> str:
    """The rows as a markdown table."""
    active = rows[0].active_workers if rows else 0
    lines = [
        f"| GPU | flex $/conversation min | vs managed ${managed_per_minute:.2f}/min | {active} active/stage $/month "
        "| their capacity, min/month | break-even, min/month |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.gpu} | {_money(row.flex_per_minute)} | {row.flex_per_minute / managed_per_minute:.1%} "
            f"| {_money(row.active_monthly)} | {row.active_capacity_minutes:,.0f} "
            f"| {_minutes(row.break_even_minutes)} |"
        )
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction) -> None:
    cost = commands.add_parser(
        "cost",
        description="From per-turn compute seconds of each stage (--stt/--llm/--tts, or --results from "
        "`python -m benchmarks`) and RunPod's per-second prices, print what a minute of conversation costs on "
        "flex workers and the monthly volume above which always-on (active) workers beat a managed platform.",
    )
    cost.add_argument("--results", type=Path,
                      help="chain benchmark json (benchmarks/results/chain.json: seconds per job), or capacity.json "
                      "(a worker's busy seconds shared by the calls it carries at once; use with --idle-s 0)")
    for stage in STAGES:
        cost.add_argument(f"--{stage}", type=float, metavar="S", help=f"{stage.upper()} compute seconds per turn")
    cost.add_argument("--turns-per-minute", type=float, help="turns in a minute of conversation (default 4)")
    cost.add_argument("--idle-s", type=float, default=5.0,
                      help="flex worker idle timeout billed after each job (RunPod's default: 5)")
    cost.add_argument("--prices", type=Path, default=default_prices_path(), help="price table json")
    cost.add_argument("--gpu", action="append",
                      help="only this GPU type, by any unambiguous part: 4090, 'RTX 4090', H100 (repeatable)")
    cost.add_argument("--active", type=int, default=1, help="always-on workers per stage for the break-even")
    cost.add_argument("--managed-per-min", type=float, default=MANAGED_USD_PER_MIN,
                      help="the managed platform's price per minute")
    cost.set_defaults(func=_cost)


def _cost(args: argparse.Namespace) -> int:
    given = {stage: getattr(args, stage) for stage in STAGES}
    if args.results:
        try:
            workload, device = workload_from_results(args.results, args.idle_s)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{args.results} is not the chain benchmark's results (benchmarks/results/chain.json "
                             f"from `python -m benchmarks.chain`): {type(exc).__name__}: {exc}") from None
        seconds = {stage: given[stage] if given[stage] is not None else workload.seconds[stage] for stage in STAGES}
        workload = Workload(seconds, args.turns_per_minute or workload.turns_per_minute, args.idle_s)
    elif all(value is not None for value in given.values()):
        workload, device = Workload(given, args.turns_per_minute or 4.0, args.idle_s), "given"
    else:
        raise UsageError("give --results, or all of --stt, --llm and --tts")
    if args.active < 0 or workload.turns_per_minute <= 0 or any(s < 0 for s in workload.seconds.values()):
        raise UsageError("seconds, --active and --turns-per-minute must not be negative")
    prices, about = load_prices(args.prices)
    if args.gpu:
        try:
            chosen = {find_tier(query, prices).name for query in args.gpu}
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        prices = [p for p in prices if p.name in chosen]
    rows = [cost_row(workload, price, args.active, args.managed_per_min) for price in prices]
    per_turn = ", ".join(f"{stage} {workload.seconds[stage]:.2f} s" for stage in STAGES)
    print(f"per turn: {per_turn}; {workload.turns_per_minute:g} turns/min; flex idle timeout {workload.idle_s:g} s")
    # The same figures from flags alone, so a table quoted anywhere can be reproduced and varied.
    flags = " ".join(f"--{stage} {workload.seconds[stage]:.4g}" for stage in STAGES)
    print(f"flags:    voicepod cost {flags} --turns-per-minute {workload.turns_per_minute:.3g} "
          f"--idle-s {workload.idle_s:g} --active {args.active}")
    print(f"prices: {about.get('source', args.prices)} (read {about.get('read_on', '?')})")
    if device != "given" and "cuda" not in device.lower():
        print(f"PROJECTION: seconds measured on {device}, billed at GPU prices; a GPU runs these models faster, "
              "so these costs are an upper bound until measured on a GPU.")
    print()
    print(format_table(rows, args.managed_per_min))
    return 0
