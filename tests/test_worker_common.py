"""The job stream wrapper every worker uses: numbering, metrics, and each way a job can fail."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import weakref

import pytest
import torch
from voicepod.protocol import SegmentChunk, TranscriptDone, TranscriptMetrics, parse_chunk

from workers.common.errors import WorkerError
from workers.common.models import timed_load
from workers.common.stream import serve_job, worker_config
from workers.common.threads import iterate_in_thread
from workers.common.validation import StrictInput


class Echo(StrictInput):
    words: list[str]


def echo_then(failure: BaseException | None):
    async def work(request: Echo):
        for word in request.words:
            yield SegmentChunk(id=0, start=0.0, end=1.0, text=word)
        if failure is not None:
            raise failure
        yield TranscriptDone(text=" ".join(request.words), language="en", language_probability=1.0, duration=1.0,
                             metrics=TranscriptMetrics(extra=7))
    return work


async def run(job_input, failure=None) -> list[dict]:
    return [chunk async for chunk in serve_job({"id": "j", "input": job_input}, Echo, echo_then(failure))]


async def test_chunks_are_numbered_and_done_carries_the_metrics():
    chunks = await run({"words": ["a", "b"]})
    assert [c["seq"] for c in chunks] == [0, 1, 2]
    done = parse_chunk(chunks[-1])
    assert done.type == "done" and done.text == "a b"
    assert done.metrics.compute_s >= done.metrics.first_chunk_s >= 0
    assert chunks[-1]["metrics"]["extra"] == 7


@pytest.mark.parametrize(
    "job_input, code, field",
    [({"words": "a"}, "invalid_input", "words"), ({"words": [], "x": 1}, "invalid_input", "x"),
     ([1, 2], "invalid_input", None)],
)
async def test_invalid_input_is_an_error_chunk_naming_the_field(job_input, code, field):
    chunks = await run(job_input)
    assert len(chunks) == 1 and chunks[0]["seq"] == 0
    error = parse_chunk(chunks[0]).error
    assert (error.code, error.field) == (code, field)


@pytest.mark.parametrize(
    "failure, code",
    [
        (WorkerError("empty_audio", "nothing to hear", "audio_base64"), "empty_audio"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory"),
        (ValueError("boom"), "internal_error"),
    ],
)
async def test_a_failure_mid_stream_ends_it_with_one_error_chunk_and_the_next_job_runs(failure, code):
    chunks = await run({"words": ["a", "b"]}, failure)
    assert [c["seq"] for c in chunks] == [0, 1, 2]
    assert chunks[-1]["type"] == "error" and parse_chunk(chunks[-1]).error.code == code
    assert json.loads(chunks[-1]["error"])["code"] == code  # JSON text, as /status will show it
    assert parse_chunk((await run({"words": ["c"]}))[-1]).type == "done"


async def test_a_chunk_goes_out_as_json_without_empty_fields_and_parses_back_into_its_model():
    chunks = await run({"words": ["a"]})
    assert chunks[0] == {"seq": 0, "type": "segment", "id": 0, "start": 0.0, "end": 1.0, "text": "a"}
    json.dumps(chunks)  # what the SDK posts
    assert isinstance(parse_chunk(chunks[1]).metrics, TranscriptMetrics)


async def test_a_chunk_over_runpods_limit_is_refused():
    chunks = await run({"words": ["x" * 1_100_000]})
    assert parse_chunk(chunks[-1]).error.code == "output_too_large"


def test_worker_config_takes_the_concurrency_it_is_given(monkeypatch):
    async def handler(job):
        yield {}

    # MAX_CONCURRENCY is read once, by workers.common.capacity.max_concurrency, which the workers pass here.
    monkeypatch.setenv("MAX_CONCURRENCY", "2")
    config = worker_config(handler, concurrency=4)
    assert config["concurrency_modifier"](1) == 4 and config["return_aggregate_stream"] is True


class _Node:
    pass


def test_timed_load_collects_the_loads_garbage_then_freezes_what_it_kept():
    dropped: list[weakref.ref[_Node]] = []

    def load() -> _Node:
        cycle = _Node()
        cycle.me = cycle  # unreachable once load returns, but only a collection frees a cycle
        dropped.append(weakref.ref(cycle))
        return _Node()

    gc.unfreeze()
    try:
        model, seconds = timed_load("a test model", load)
        assert isinstance(model, _Node) and seconds >= 0
        assert dropped[0]() is None  # collected before the freeze, or it would have lived forever
        assert gc.get_freeze_count() > 0  # the model and all else alive is out of the collector's walks
    finally:
        gc.unfreeze()


async def test_iterate_in_thread_yields_as_produced_and_stops_the_producer_when_the_consumer_leaves():
    produced, stopped = [], threading.Event()

    def make(stop: threading.Event):
        for i in range(1000):
            if stop.wait(0.01):
                stopped.set()
                return
            produced.append(i)
            yield i

    got = []
    async for item in iterate_in_thread(make):
        got.append(item)
        if len(got) == 3:
            break
    await asyncio.sleep(0.1)
    assert got == [0, 1, 2]
    assert stopped.is_set() and len(produced) < 10


async def test_iterate_in_thread_reraises_the_producers_exception():
    def make(stop):
        yield 1
        raise KeyError("lost")

    with pytest.raises(KeyError):
        async for _ in iterate_in_thread(make):
            pass


def test_max_concurrency_is_the_setting_else_the_devices_default(monkeypatch):
    from workers.common.capacity import max_concurrency

    monkeypatch.delenv("MAX_CONCURRENCY", raising=False)
    assert max_concurrency(cpu=2, gpu=8, on_gpu=False) == 2
    assert max_concurrency(cpu=2, gpu=8, on_gpu=True) == 8
    monkeypatch.setenv("MAX_CONCURRENCY", "3")
    assert max_concurrency(cpu=2, gpu=8, on_gpu=True) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MAX_CONCURRENCY", bad)
        with pytest.raises(ValueError, match="MAX_CONCURRENCY must be a whole number of at least 1"):
            max_concurrency(cpu=2, gpu=8, on_gpu=False)


def test_parallel_computations_share_the_cores_between_one_and_four_threads_each():
    from workers.common.capacity import cpu_threads

    assert cpu_threads(2, cores=2) == 1  # STT's default on this machine: 1 thread each, not CTranslate2's 4
    assert cpu_threads(1, cores=2) == 2
    assert cpu_threads(3, cores=2) == 1
    assert cpu_threads(2, cores=16) == 4
    assert cpu_threads(0, cores=3) == 3
    assert 1 <= cpu_threads(2) <= 4


def test_ctranslate2_reads_omp_num_threads_itself_when_the_user_sets_it(monkeypatch):
    from workers.common.capacity import cpu_threads, ctranslate2_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ctranslate2_threads(2) == cpu_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert ctranslate2_threads(2) == 0


def test_a_containers_cpu_quota_lowers_the_cores_its_threads_share(tmp_path):
    from workers.common.capacity import available_cores

    cpu_max = tmp_path / "cpu.max"
    unlimited = available_cores(tmp_path / "missing")
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == unlimited
    cpu_max.write_text("100000 100000\n")  # docker --cpus 1
    assert available_cores(cpu_max) == 1
    cpu_max.write_text("50000 100000\n")  # half a core still runs one thread
    assert available_cores(cpu_max) == 1
    cpu_max.write_text(f"{unlimited * 300000} 100000\n")  # a quota above the affinity: the affinity stands
    assert available_cores(cpu_max) == unlimited
