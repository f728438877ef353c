"""The figures the README and docs/ quote from measurements are the kept results' own.

Two forms keep a figure tied to its results file (docs/benchmarks.md, "Reading the figures"):

- in prose, a link to the results file whose title is the figure's place in it, keys joined by ``/``:
  ``[1.00 s](benchmarks/results/phone.json "mouth_to_ear_s/on")``. The first number of the link's text must be
  the value there, rounded as shown (a ``%`` figure is the value times 100; ``x/y`` is a count out of a total);
- a results table copied whole between ``<!-- results: phone.md -->`` and ``<!-- /results -->``, which must be
  the file's text.
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


def value_at(data: object, key: str) -> object:
    for part in key.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]  # type: ignore[index]
    return data


def shown_matches(text: str, value: object) -> bool:
    """Whether ``text`` (a link's text) shows ``value`` as its first figure, rounded as it is written."""
    if isinstance(value, list) and len(value) == 2:  # [count, total], shown "x/y"
        return bool(re.search(rf"\b{value[0]}\s*(?:/|of)\s*{value[1]}\b", text))
    match = NUMBER.search(text)
    if match is None or not isinstance(value, int | float):
        return False
    shown = match.group().replace(",", "")
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    scaled = value * 100 if text[match.end():].lstrip().startswith("%") else value
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
    assert shown_matches(text, value), f"{page.name}: [{text}] quotes {file} {key}, which holds {value!r}"


@pytest.mark.parametrize(("page", "file", "body"), tables(), ids=lambda v: v.name if isinstance(v, Path) else None)
def test_a_copied_results_table_is_the_files_text(page, file, body):
    assert body.strip() == (RESULTS / file).read_text().strip(), f"{page.name}: the copy of {file} is stale"


def test_the_checks_themselves_tell_a_stale_figure():
    assert shown_matches("1.00 s", 1.004) and not shown_matches("1.00 s", 1.01)
    assert shown_matches("5.0x", 4.96) and shown_matches("92%", 0.918) and not shown_matches("92%", 0.9)
    assert shown_matches("6 of 12 kept", [6, 12]) and not shown_matches("7/12", [6, 12])
    assert value_at({"a": {"b, c": [1, {"d": 2}]}}, "a/b, c/1/d") == 2
