"""The warm-up job a worker runs through its handler before it asks for jobs: beside the rest of the start,
finished before the first job, not billed the model load, optional."""

from __future__ import annotations

import asyncio
import logging
import threading

from voicepod.protocol import TranscriptDone, TranscriptMetrics

from workers.common.stream import report_load, serve_job
from workers.common.validation import StrictInput
from workers.common.warm_up import start_warm_up, wait_for_warm_up


class Words(StrictInput):
    words: list[str]


def handler_recording(seen: list, release: threading.Event | None = None):
    async def work(request: Words):
        if release is not None:
            release.wait(5)
        seen.append((request.words, threading.current_thread().name))
        yield TranscriptDone(text=" ".join(request.words), language="en", language_probability=1.0, duration=1.0,
                             metrics=TranscriptMetrics())

    async def handler(job):
        async for chunk in serve_job(job, Words, work):
            yield chunk

    return handler


def test_the_warm_up_job_runs_through_the_handler_in_another_thread_and_is_waited_for():
    release = threading.Event()
    seen: list = []
    start_warm_up(handler_recording(seen, release), {"words": ["hello"]})
    assert seen == []  # start_warm_up returned while the job still runs
    release.set()
    wait_for_warm_up()
    assert seen == [(["hello"], "voicepod-warm-up")]


def test_the_model_load_stays_billed_to_the_first_real_job():
    seen: list = []
    handler = handler_recording(seen)
    report_load(1.5)
    start_warm_up(handler, {"words": ["warm"]})
    wait_for_warm_up()

    async def first_job():
        return [chunk async for chunk in handler({"id": "job-1", "input": {"words": ["real"]}})]

    assert asyncio.run(first_job())[-1]["metrics"]["load_s"] == 1.5


def test_warm_up_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("WARM_UP", "0")
    seen: list = []
    start_warm_up(handler_recording(seen), {"words": ["hello"]})
    wait_for_warm_up()
    assert seen == []


def test_a_failing_warm_up_is_logged_and_the_worker_goes_on(caplog):
    seen: list = []
    with caplog.at_level(logging.INFO, logger="voicepod.worker"):
        start_warm_up(handler_recording(seen), {"words": "not a list"})
        wait_for_warm_up()
    assert "warm-up job failed" in caplog.text and "words" in caplog.text
    assert seen == []
