"""The figures the README and docs/ quote from measurements are the kept results' own.

Two forms keep a figure tied to its results file (docs/benchmarks.md, "Reading the figures"):

- in prose, a link to the results file whose title is the figure's place in it, keys joined by ``/``:
  ``[1.00 s](benchmarks/results/phone.json "mouth_to_ear_s/on")``. The first number of the link's text must be
  the value there, rounded as shown (a ``%`` figure is the value times 100; ``x/y`` is a count out of a total);
- a results table copied whole between ``<!-- results: phone.md -->`` and ``<!-- /results -->``, which must be
  the file's text.

And no page states a measured-looking figure (a number with a unit of time, a share, a size, a rate or a ratio)
any other way: what is not one of the two forms is a setting or a spec on ``ALLOWED``, or a past run's figure on
docs/history.md, the one page exempt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import REPO

RESULTS = REPO / "benchmarks" / "results"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FIGURE = re.compile(r"\[(?P<text>[^\]]+)\]\((?:\.\./)?benchmarks/results/(?P<file>[\w.-]+\.json) \"(?P<key>[^\"]+)\"\)")
TABLE = re.compile(r"<!-- results: (?P<file>[\w.-]+\.md) -->\n(?P<body>.*?)<!-- /results -->", re.S)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# A measured-looking figure: a number followed by " s", "ms", "%", "MiB", "MB", "GB", " tokens/s" or "x".
MEASURED = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?: s| ?ms| ?MiB| ?MB| ?GB| tokens/s|x)(?![\w/])|"
                      r"(?<![\w.])\d[\d,]*(?:\.\d+)?%")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # a setting written as code (`--queue-delay 0.13`) is no figure
HISTORY = REPO / "docs" / "history.md"  # past runs' figures, kept for the reasoning: exempt from the check
# Settings and specs, not measurements: each a phrase of the page, and why it is no measurement.
ALLOWED: dict[str, tuple[str, ...]] = {
    "benchmarks.md": (
        # the issues' goals
        "within 5%", "within +50 ms", "< +50 ms", "within 20 ms / 50 ms", "under 30%", "< 30%", "3x a lone stream's",
        "goal: 3x", "within 2x", "under 2 ms", "goal (80%", "ready under 1.5 s", "the LLM under 4 s", "within 20%",
        "its 20%", "the 20% goal",
        # the benchmarks' inputs and settings
        "30 s / 2 min clip", "30 s and 2 min clips", "30 s clip", "turns 1.5 s apart", "idle for 1.1-1.5 s",
        "6 jobs of 50 ms", "0.7 s pause", "20 ms frames", "0.2 s into the silence", "requests 0.1 s apart",
        "30 ms apart",
        "real-time 20 ms", "VAD lag to the 32 ms", "[0.35 s pause]", "holds every job 0.13 s",
        "the middle of the 0.10-0.16 s", "(goal: at least 0.2 s", "(goal: within 30 ms", "larger than 30 ms",
        "cannot resolve 30 ms", "Over a reply**: 1 s", "alignments of its 32 ms", "(goal: at least 80%",
        "least 80% with smart; silence 0%", "within 0.5 s", "smart at least 0.25 s", "(a 1.5 s question",
        "goal is at most 10 ms", "at least 0.2 s shorter", "within 30 ms of the queue", "at most 10 ms: met",
        "at least 80%: met", "at least 0.25 s shorter",
        "269 MB baked",  # the model's size on disk
        "take 64 MiB a call",  # the device tool's limit
        # the runpod SDK's own timers, read from its code
        "every 0.1 s", "waits 0-0.1 s", "sleeps 1 s",
    ),
    "architecture.md": ("in 32 ms", "at a 0.2 s", "20 ms",  # the VAD's window, the --pause default, a line's frame
                        "word error rate under 15%"),  # a test's threshold
    "client.md": ("sleeps 1 s",),  # the runpod SDK's poll interval
    "deploy.md": ("adding 0.10-0.16 s", "against 8 ms", "the 0.10-0.16 s",  # RunPod's queue, measured by others (cited)
                  "up to 30 MB", "| 24 GB", "| 16 GB",  # RunPod's body limit, GPUs' memory
                  "running 2 s, plus 5 s idle each, costs 3 × 7 s"),  # a worked example of billing
    # Twilio's frames, the page's playout delay, the options' defaults
    "phone.md": ("real-time 20 ms", "sends 20 ms", "its 50 ms", "in 32 ms", "after 0.25 s", "each 0.2 s", "(1.0 s",
                 "(0.55 s", "0.3 s from", "(default 0.2 s"),
    "reliability.md": ("for 1.5 s", "within 2 s", "`executionTimeout` 1.5 s", "10 MB",  # the tests' settings
                       "the test allows 16 MiB", "grew more than 10%"),
    "turn-taking.md": ("`--end-silence`, 0.55 s", "any 0.25 s", "last 8 s", "(0.2 s", "at 0.5 s", "at 0.2 s",
                       "a 0.2 s", "first 0.5 s", "paused 0.7 s",  # the options' defaults, the model's window, inputs
                       "goal is 80%", "the set's 0.7 s", "within 0.5 s"),  # the utterances' pause, the issue's goal
    "workers.md": ("each 30 s", "many 30 s", "every 30 s",  # Whisper's window
                   "every 0.1 s", "up to 1 s",  # the runpod SDK's timers
                   "8.7 MB"),  # a model's size on disk
}
# Sections the lead rewrites after rerunning their benchmarks (phone, direct, scheduler; the phone server's
# reliability rows): exempt until then, each from its heading to the next heading named. Empty this once rerun.
def value_at(data: object, key: str) -> object:
    for part in key.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]  # type: ignore[index]
    return data


def shown_matches(text: str, value: object, key: str = "") -> bool:
    """Whether ``text`` (a link's text) shows ``value`` as its first figure, rounded as it is written.

    ``key`` is the value's place in its file: a figure shown in ``ms`` is the value times 1000 unless the key
    already names milliseconds (``..._ms``).
    """
    if isinstance(value, str):  # a figure the file keeps as text, "12/12"
        return value in text
    if isinstance(value, list) and len(value) == 2:  # [count, total], shown "x/y"
        return bool(re.search(rf"\b{value[0]}\s*(?:/|of)\s*{value[1]}\b", text))
    match = NUMBER.search(text)
    if match is None or not isinstance(value, int | float):
        return False
    shown = match.group().replace(",", "")
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    unit = text[match.end():].lstrip()
    scaled = value * 100 if unit.startswith("%") else value
    if re.match(r"ms\b", unit) and "_ms" not in key.rsplit("/", 1)[-1] and "ms/" not in key:
        scaled = value * 1000
    return abs(float(shown) - scaled) <= 0.5 * 10 ** -decimals + 1e-9


def figures() -> list[tuple[Path, str, str, str]]:
    return [(page, m["text"], m["file"], m["key"]) for page in PAGES for m in FIGURE.finditer(page.read_text())]


def tables() -> list[tuple[Path, str, str]]:
    return [(page, m["file"], m["body"]) for page in PAGES for m in TABLE.finditer(page.read_text())]


@pytest.mark.parametrize(("page", "text", "file", "key"), figures(),
                         ids=lambda v: v.name if isinstance(v, Path) else str(v)[:40])
def test_a_quoted_figure_is_its_results_file_value(page, text, file, key):
    data = json.loads((RESULTS / file).read_text())
    value = value_at(data, key)
    assert shown_matches(text, value, key), f"{page.name}: [{text}] quotes {file} {key}, which holds {value!r}"


@pytest.mark.parametrize(("page", "file", "body"), tables(), ids=lambda v: v.name if isinstance(v, Path) else None)
def test_a_copied_results_table_is_the_files_text(page, file, body):
    assert body.strip() == (RESULTS / file).read_text().strip(), f"{page.name}: the copy of {file} is stale"


def unlinked_figures(page: Path) -> list[str]:
    """The measured-looking figures of ``page`` outside a linked figure, a checked table, code and ``ALLOWED``."""
    text = page.read_text()
    spans = [m.span() for rx in (TABLE, FIGURE, CODE) for m in rx.finditer(text)]
    for phrase in ALLOWED.get(page.name, ()):
        assert re.search(r"\s+".join(map(re.escape, phrase.split())), text), f"{page.name}: no {phrase!r} any more"
        spans += [m.span() for m in re.finditer(r"\s+".join(map(re.escape, phrase.split())), text)]
    return [f"line {text.count(chr(10), 0, m.start()) + 1}: {text[max(0, m.start() - 30):m.end()]!r}"
            for m in MEASURED.finditer(text) if not any(a <= m.start() < b for a, b in spans)]


@pytest.mark.parametrize("page", [p for p in PAGES if p != HISTORY], ids=lambda p: p.name)
def test_a_page_states_measured_figures_only_from_results(page):
    found = unlinked_figures(page)
    assert not found, (f"{page.name} states figures tied to no results file (link them, copy the results table, "
                       f"or move them to docs/history.md):\n" + "\n".join(found))


def test_the_checks_themselves_tell_a_stale_figure():
    assert shown_matches("1.00 s", 1.004) and not shown_matches("1.00 s", 1.01)
    assert shown_matches("5.0x", 4.96) and shown_matches("92%", 0.918) and not shown_matches("92%", 0.9)
    assert shown_matches("6 of 12 kept", [6, 12]) and not shown_matches("7/12", [6, 12])
    assert shown_matches("3.5 ms", 0.0035, "idle_s") and shown_matches("0.23 ms", 0.23, "median/rewrite_ms_max")
    assert not shown_matches("3.5 ms", 0.0035, "median/idle_ms")
    assert value_at({"a": {"b, c": [1, {"d": 2}]}}, "a/b, c/1/d") == 2


def test_the_check_tells_an_unlinked_figure(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('Mouth-to-ear 1.00 s; [0.92 s](../benchmarks/results/chain.json "voice_to_voice_s");\n'
                    "`--pause 0.2 s`; <!-- results: chain.md -->\n| 35% |\n<!-- /results -->\n"
                    "throughput 5.0x, 47 tokens/s, 12 ms, 91 MiB, 15.6%; 3 sessions, 2 workers.\n")
    found = "\n".join(unlinked_figures(page))
    assert [f in found for f in ("1.00 s", "5.0x", "47 tokens/s", "12 ms", "91 MiB", "15.6%")] == [True] * 6
    assert "0.92" not in found and "0.2 s" not in found and "35%" not in found and "sessions" not in found
