"""The warm-up a worker runs after its model loads: beside the rest of the start, finished before jobs, optional."""

from __future__ import annotations

import logging
import threading

from workers.common.models import timed_load
from workers.common.warm_up import wait_for_warm_up


def test_the_warm_up_runs_on_the_loaded_model_in_another_thread_and_is_waited_for():
    release = threading.Event()
    seen: list[tuple[str, str]] = []

    def warm_up(model: str) -> None:
        release.wait(5)
        seen.append((model, threading.current_thread().name))

    model, seconds = timed_load("test model", lambda: "the model", warm_up)
    assert model == "the model" and seconds >= 0
    assert seen == []  # timed_load returned while the warm-up still runs
    release.set()
    wait_for_warm_up()
    assert seen == [("the model", "voicepod-warm-up")]


def test_warm_up_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("WARM_UP", "0")
    calls: list[str] = []
    timed_load("test model", lambda: "the model", calls.append)
    wait_for_warm_up()
    assert calls == []


def test_a_failing_warm_up_is_logged_and_the_worker_goes_on(caplog):
    def warm_up(model: str) -> None:
        raise RuntimeError("no kernel for this CPU")

    with caplog.at_level(logging.INFO, logger="voicepod.worker"):
        timed_load("test model", lambda: "the model", warm_up)
        wait_for_warm_up()
    assert "warm-up of test model failed" in caplog.text and "no kernel for this CPU" in caplog.text
