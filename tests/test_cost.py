"""The cost arithmetic of ``voicepod cost`` and its output, on hand-checkable numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from voicepod.cli import main
from voicepod.cost import (
    SECONDS_PER_MONTH,
    GpuPrice,
    Workload,
    break_even_minutes,
    cost_per_minute,
    cost_row,
    default_prices_path,
    load_prices,
)
from voicepod.gpus import find_gpu_ids, find_tier

REPO = Path(__file__).resolve().parents[1]

GPU = GpuPrice("test", flex=0.001, active=0.0005)


def test_flex_cost_is_compute_seconds_times_price_without_idle():
    load = Workload({"stt": 1.0, "llm": 2.0, "tts": 3.0}, turns_per_minute=4)
    assert cost_per_minute(load, GPU) == pytest.approx(4 * 6.0 * 0.001)


def test_idle_timeout_is_billed_but_never_beyond_the_next_turn():
    # A turn every 15 s: 1 s of work + 5 s idle = 6 s billed; 12 s of work + 5 s idle is capped at 15 s.
    load = Workload({"stt": 1.0, "llm": 12.0, "tts": 20.0}, turns_per_minute=4, idle_s=5.0)
    assert load.billed_s_per_minute("stt") == pytest.approx(24.0)
    assert load.billed_s_per_minute("llm") == pytest.approx(60.0)
    # Work longer than the gap between turns is still billed in full.
    assert load.billed_s_per_minute("tts") == pytest.approx(80.0)


def test_break_even_within_the_active_workers_capacity():
    # $1000 a month of always-on workers that can serve 50,000 minutes: even at 10,000 minutes of $0.10.
    assert break_even_minutes(1000.0, 50_000, 0.05, 0.10) == pytest.approx(10_000)


def test_break_even_beyond_capacity_pays_flex_for_the_overflow():
    # Capacity 5,000 min (worth $500 managed); the other $500 is recovered at $0.10 - $0.06 a minute.
    assert break_even_minutes(1000.0, 5_000, 0.06, 0.10) == pytest.approx(5_000 + 500 / 0.04)
    assert break_even_minutes(1000.0, 5_000, 0.12, 0.10) is None


def test_cost_row_sums_three_stages_of_active_workers():
    load = Workload({"stt": 1.0, "llm": 2.0, "tts": 3.0}, turns_per_minute=4)
    row = cost_row(load, GPU, active_workers=2, managed_per_minute=0.10)
    assert row.active_monthly == pytest.approx(2 * 3 * 0.0005 * SECONDS_PER_MONTH)
    # The TTS stage is busiest: 12 s per conversation minute, so one worker serves 1/12 of the month's seconds.
    assert row.active_capacity_minutes == pytest.approx(2 * SECONDS_PER_MONTH / 12)
    assert row.break_even_minutes == pytest.approx(row.active_monthly / 0.10)


def test_no_active_workers_is_cheaper_from_the_first_minute_only_when_flex_is():
    cheap = Workload({"stt": 0.1, "llm": 0.1, "tts": 0.1}, turns_per_minute=4)
    dear = Workload({"stt": 60.0, "llm": 60.0, "tts": 60.0}, turns_per_minute=4)
    assert cost_row(cheap, GPU, active_workers=0).break_even_minutes == 0
    assert cost_row(dear, GPU, active_workers=0).break_even_minutes is None
    assert math.isinf(cost_row(Workload({"stt": 0, "llm": 0, "tts": 0}, 4), GPU).active_capacity_minutes)


def test_price_table_has_the_issue_prices_and_a_date():
    prices, about = load_prices(default_prices_path())
    flex = {p.name.split(" (")[0]: p.flex for p in prices}
    assert flex["RTX 4090"] == 0.00031 and flex["L40S"] == 0.00053 and flex["A100"] == 0.00076
    assert flex["H100"] == 0.00116
    assert all(p.active < p.flex for p in prices)
    assert about["read_on"] and about["source"].startswith("https://")


def test_cli_prints_the_table_for_given_seconds(capsys):
    assert main(["cost", "--stt", "0.5", "--llm", "2", "--tts", "0.5", "--idle-s", "0", "--gpu", "A100 (80 GB)"]) == 0
    out = capsys.readouterr().out
    # 4 turns x 3 s x $0.00076 = $0.00912 a minute, 9.1% of $0.10.
    assert "| A100 (80 GB) | $0.0091 | 9.1% |" in out
    assert "PROJECTION" not in out


def test_cli_labels_cpu_results_as_a_projection(tmp_path, capsys):
    results = tmp_path / "chain.json"
    results.write_text(json.dumps({"device": "cpu, 2 cores",
                                   "cost_inputs": {"billed_s": {"stt": 1, "llm": 2, "tts": 1},
                                                   "turns_per_minute": 6}}))
    assert main(["cost", "--results", str(results), "--gpu", "H100 (80 GB)"]) == 0
    out = capsys.readouterr().out
    assert "PROJECTION: seconds measured on cpu, 2 cores" in out
    assert "6 turns/min" in out and "| H100 (80 GB) |" in out


def test_cli_refuses_missing_seconds_and_unknown_gpus(capsys):
    assert main(["cost", "--stt", "1"]) == 2
    assert capsys.readouterr().err.strip() == "voicepod cost: give --results, or all of --stt, --llm and --tts"
    assert main(["cost", "--stt", "1", "--llm", "1", "--tts", "1", "--gpu", "TPU"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voicepod cost: unknown GPU 'TPU'; known: A4000 (16 GB), L4 (24 GB)") and err.count("\n") == 1
    assert main(["cost", "--stt", "1", "--llm", "1", "--tts", "1", "--gpu", "24 GB"]) == 2
    assert "ambiguous: L4 (24 GB), RTX 4090 (24 GB)" in capsys.readouterr().err


@pytest.mark.parametrize("query", ["4090", "RTX 4090", "rtx 4090 (24 gb)", "NVIDIA GeForce RTX 4090"])
def test_a_gpu_is_named_by_any_unambiguous_part(query, capsys):
    assert main(["cost", "--stt", "1", "--llm", "1", "--tts", "1", "--gpu", query]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "| $" in line]
    assert len(rows) == 1 and rows[0].startswith("| RTX 4090 (24 GB) |")


def test_l4_is_not_taken_for_l40s():
    prices, _ = load_prices()
    assert find_tier("L4", prices).name == "L4 (24 GB)"
    assert find_gpu_ids("L4", prices) == ["NVIDIA L4"]
    assert find_gpu_ids("A100", prices) == ["NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"]


def test_the_documented_cost_figures_come_from_the_command_shown_next_to_them(capsys):
    # docs/deploy.md: "`voicepod cost --results benchmarks/results/chain.json --idle-s 0` prints $0.0040 (RTX 4090)
    # to $0.015 (H100)", with no idle time billed said beside it.
    page = " ".join((REPO / "docs" / "deploy.md").read_text().split())
    command = "voicepod cost --results benchmarks/results/chain.json --idle-s 0"
    assert f"{command}` prints $0.0040 (RTX 4090) to $0.015 (H100)" in page and "no idle time billed" in page
    assert main([*command.split()[1:3], str(REPO / "benchmarks/results/chain.json"), "--idle-s", "0"]) == 0
    out = capsys.readouterr().out
    assert "| RTX 4090 (24 GB) | $0.0040 |" in out and "| H100 (80 GB) | $0.0150 |" in out
    # The flags line reproduces the same table from numbers alone.
    flags = next(line for line in out.splitlines() if line.startswith("flags:")).split()[2:]
    assert main(flags) == 0
    assert "| RTX 4090 (24 GB) | $0.0040 |" in capsys.readouterr().out
