"""The LLM worker end to end with the real SmolLM2-135M-Instruct weights (the embedded default, a chat model),
through the local endpoint emulator (the runpod SDK's own worker loop) and the voicepod client."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError
from transformers import AutoTokenizer
from voicepod import Endpoint, JobFailed
from voicepod.agent import DEFAULT_SYSTEM_PROMPT
from voicepod.local import LocalServer
from voicepod.protocol import CompletionDone, DeltaChunk
from voicepod.sentences import ends_sentence

from tests.sse import parse_events
from workers.llm.bake import default_model_dir

pytestmark = pytest.mark.slow

HANDLER = Path(__file__).resolve().parents[1] / "workers" / "llm" / "handler.py"
# Room for a generation that, run on to the cap, keeps the single worker busy for ~11 s (bfloat16, 2 cores).
CAP = 400
MODEL = "smollm2-135m-instruct"  # the name the embedded default is served under
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
# The jobs that must still be writing when left: greedy, SmolLM2 writes this story on to the cap (400 tokens,
# 11 s in bfloat16 and 17 s in float32 here). Asked to count from 1 to 1000 it stops by itself after 52-122 tokens,
# which let the cancel tests pass whether or not a cancel stopped anything.
LONG = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
VOICE_MAX_TOKENS = 60  # the voice chain's reply cap (VoiceAgent's default max_tokens)
# Everyday questions a caller asks (not the held-out set of benchmarks/assistant.py).
EVERYDAY = ["What is the capital of Spain?", "How do I make tea?", "How do plants grow?",
            "How do I clean my laptop screen?"]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    # No MODEL_DIR: the worker's embedded default, baked on first use into the voicepod cache. One job at a time,
    # so that a job that is not stopped holds up the next (the cancel tests); many at once: tests/test_concurrency.py.
    env = {"MAX_TOKENS_CAP": str(CAP), "MAX_CONCURRENCY": "1"}
    with LocalServer(endpoints={"llm": HANDLER}, env=env, ready_timeout_s=300) as running:
        yield running


@pytest.fixture(scope="module")
def tokenizer(server: LocalServer) -> Any:
    # The same baked folder the worker loaded (the server fixture has baked it by now).
    return AutoTokenizer.from_pretrained(default_model_dir())


@pytest.fixture
async def llm(server: LocalServer) -> Any:
    async with server.endpoint("llm") as endpoint:
        yield endpoint


async def complete(endpoint: Endpoint, job_input: dict[str, Any]) -> tuple[list[tuple[float, DeltaChunk]],
                                                                              CompletionDone, float]:
    """Run a job; return its deltas with their arrival times, the done chunk and its arrival time."""
    started = time.perf_counter()
    job = await endpoint.run(job_input)
    deltas: list[tuple[float, DeltaChunk]] = []
    async for chunk in job.chunks():
        now = time.perf_counter() - started
        if isinstance(chunk, DeltaChunk):
            deltas.append((now, chunk))
        elif isinstance(chunk, CompletionDone):
            return deltas, chunk, now
    raise AssertionError("the stream ended without a done chunk")


def joined(deltas: list[tuple[float, DeltaChunk]]) -> str:
    return "".join(chunk.text for _, chunk in deltas)


async def test_answers_the_capital_of_france(llm: Endpoint, tokenizer: Any) -> None:
    deltas, done, _ = await complete(llm, {"messages": FRANCE, "max_tokens": 24, "temperature": 0})
    assert "Paris" in done.text
    assert joined(deltas) == done.text
    assert "User:" not in done.text and not done.text.startswith(" ")
    assert done.finish_reason == "stop"
    assert deltas[0][1].chunk["object"] == "chat.completion.chunk"
    assert deltas[0][1].chunk["choices"][0]["delta"]["role"] == "assistant"
    # The model's own chat template, counted by its own tokenizer.
    template = tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert done.usage.prompt_tokens == len(template)
    assert 0 < done.usage.completion_tokens <= 24
    assert done.metrics.ttft > 0 and done.metrics.tokens_per_s > 0


@pytest.mark.parametrize("question", EVERYDAY)
async def test_everyday_questions_get_whole_sentences_under_the_voice_cap(llm: Endpoint, question: str) -> None:
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
    _, done, _ = await complete(llm, {"messages": messages, "max_tokens": VOICE_MAX_TOKENS, "temperature": 0})
    # Ended by the model (its end-of-turn token), not by the cap, on a sentence's end.
    assert (done.finish_reason, done.usage.completion_tokens < VOICE_MAX_TOKENS) == ("stop", True), done.text
    assert re.search(r"[.!?][\"')]*$", done.text.strip()), done.text
    assert len(done.text.split()) >= 3, done.text
    if "Spain" in question:
        assert "Madrid" in done.text


LISTS = ["Recommend three books to read.", "What are the steps to make pancakes?"]


@pytest.mark.parametrize("question", LISTS)
async def test_a_capped_reply_may_finish_its_sentence_within_the_allowance(llm: Endpoint, question: str) -> None:
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
    job = {"messages": messages, "max_tokens": VOICE_MAX_TOKENS, "temperature": 0, "finish_sentence_within": 20}
    deltas, done, _ = await complete(llm, job)
    assert joined(deltas) == done.text
    tokens = done.usage.completion_tokens
    # Never past cap + allowance; past the cap only to end a sentence or item, and stopped at its end.
    assert tokens <= VOICE_MAX_TOKENS + 20, done.text
    if tokens > VOICE_MAX_TOKENS:
        assert done.finish_reason == "length"
        assert ends_sentence(done.text) or tokens == VOICE_MAX_TOKENS + 20, done.text


async def test_tokens_stream_before_the_job_is_done(llm: Endpoint) -> None:
    deltas, done, done_at = await complete(
        llm, {"prompt": "Once upon a time, in a small village", "max_tokens": 40, "temperature": 0}
    )
    assert len(deltas) >= 5
    first_at = deltas[0][0]
    assert done_at - first_at > 0.4 * done_at, (first_at, done_at)
    assert joined(deltas) == done.text


async def test_max_tokens_and_usage_are_exact(llm: Endpoint, tokenizer: Any) -> None:
    prompt = "The three primary colours are"
    _, done, _ = await complete(llm, {"prompt": prompt, "max_tokens": 6, "temperature": 0})
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 6
    assert done.usage.prompt_tokens == len(tokenizer(prompt).input_ids)
    # Re-tokenizing the text gives back the number of tokens generated.
    assert len(tokenizer(done.text, add_special_tokens=False).input_ids) == 6


async def test_stop_strings_split_across_tokens_never_leak(llm: Endpoint, tokenizer: Any) -> None:
    base = {"messages": FRANCE, "max_tokens": 24, "temperature": 0}
    _, full, _ = await complete(llm, base)
    assert full.text.startswith("The capital of France is Paris")
    # "ital of Fr" starts inside "capital" and ends inside "France": no token boundary matches it.
    stop = "ital of Fr"
    pieces = tokenizer.tokenize(full.text)
    assert not any(stop in piece.replace("\u0120", " ").replace("\u2581", " ") for piece in pieces)
    deltas, done, _ = await complete(llm, {**base, "stop": [stop, "never appears"]})
    assert done.text == "The cap"
    assert joined(deltas) == "The cap"
    assert done.finish_reason == "stop"
    assert done.usage.completion_tokens < full.usage.completion_tokens


async def test_seed_makes_sampling_reproducible(llm: Endpoint) -> None:
    job = {"prompt": "My favourite food is", "max_tokens": 12, "temperature": 1.0, "top_p": 1.0}
    first = (await complete(llm, {**job, "seed": 1234}))[1].text
    again = (await complete(llm, {**job, "seed": 1234}))[1].text
    others = {(await complete(llm, {**job, "seed": seed}))[1].text for seed in (1, 2)}
    assert first == again
    assert others != {first}, "different seeds should sample differently"


async def test_cancel_stops_generation(llm: Endpoint) -> None:
    job = await llm.run({"messages": LONG, "max_tokens": CAP, "temperature": 0})
    async for output in job.stream():
        if output.get("type") == "delta":
            break
    await job.cancel()
    # Running on to CAP tokens would keep the single worker busy for ~11 s more; a cancelled generation
    # frees it for the next job at once.
    started = time.perf_counter()
    _, done, _ = await complete(llm, {"messages": FRANCE, "max_tokens": 4, "temperature": 0})
    assert time.perf_counter() - started < 5
    assert done.usage.completion_tokens == 4
    assert (await job.status())["status"] == "CANCELLED"


@pytest.mark.parametrize(
    ("job_input", "code", "field"),
    [
        ({"messages": []}, "invalid_input", "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "invalid_input", "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "invalid_input", "messages.0.content"),
        ({}, "invalid_input", "messages"),
        ({"prompt": "hi", "messages": FRANCE}, "invalid_input", "messages"),
        ({"prompt": "hi", "max_tokens": 0}, "invalid_input", "max_tokens"),
        ({"prompt": "hi", "max_tokens": CAP + 1}, "invalid_input", "max_tokens"),
        ({"prompt": "hi", "stop": [""]}, "invalid_input", "stop"),
        ({"prompt": "hi", "temperature": 3}, "invalid_input", "temperature"),
        ({"prompt": "hi", "max_token": 5}, "invalid_input", "max_token"),
        ({"prompt": "hello " * 33000}, "input_too_large", "prompt"),
        ({"openai_route": "/v1/chat/completions", "openai_input": {"messages": []}}, "invalid_input",
         "openai_input.messages"),
        ({"openai_route": "/v1/chat/completions", "openai_input": {"messages": FRANCE, "n": 2}},
         "invalid_input", "openai_input.n"),
        ({"openai_route": "/v1/embeddings", "openai_input": {}}, "invalid_input", "openai_route"),
    ],
)
async def test_bad_input_fails_the_job_not_the_worker(
    llm: Endpoint, job_input: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(JobFailed) as failed:
        await complete(llm, job_input)
    assert (failed.value.code, failed.value.field) == (code, field)
    _, done, _ = await complete(llm, {"messages": FRANCE, "max_tokens": 2, "temperature": 0})
    assert done.usage.completion_tokens == 2


# --- RunPod's OpenAI-compatible route, called with the OpenAI SDK -----------------------------------------------


@pytest.fixture
async def openai_client(server: LocalServer) -> Any:
    # No retries: a refused request must fail here, not be sent again.
    async with AsyncOpenAI(base_url=f"{server.base_url}/llm/openai/v1", api_key="unused", max_retries=0) as client:
        yield client


async def test_openai_sdk_streams_what_it_would_get_whole(openai_client: AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model=MODEL, messages=FRANCE, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1
    # Greedy: the same answer whole, with the limit under its newer name.
    whole = await openai_client.chat.completions.create(
        model=MODEL, messages=FRANCE, max_completion_tokens=24, temperature=0
    )
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.content == content
    assert whole.choices[0].finish_reason == "stop"
    usage = whole.usage
    assert usage is not None and usage.completion_tokens == chunks[-1].usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_openai_sdk_sends_the_sentence_allowance_in_extra_body(openai_client: AsyncOpenAI, llm: Endpoint) -> None:
    # How Pipecat's OpenAILLMService sends it (RunPodLLMService): the route answers as the native input does.
    messages = [{"role": "user", "content": LISTS[0]}]
    whole = await openai_client.chat.completions.create(model=MODEL, messages=messages, max_tokens=VOICE_MAX_TOKENS,
                                                        temperature=0, extra_body={"finish_sentence_within": 20})
    _, native, _ = await complete(llm, {"messages": messages, "max_tokens": VOICE_MAX_TOKENS, "temperature": 0,
                                        "finish_sentence_within": 20})
    assert whole.choices[0].message.content == native.text
    assert whole.choices[0].finish_reason == native.finish_reason
    assert whole.usage is not None and whole.usage.completion_tokens == native.usage.completion_tokens


async def test_openai_sdk_lists_the_served_model(openai_client: AsyncOpenAI) -> None:
    models = await openai_client.models.list()
    assert [m.id for m in models.data] == [MODEL]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_sdk_gets_a_bad_request_error_for_bad_input(openai_client: AsyncOpenAI, stream: bool) -> None:
    with pytest.raises(BadRequestError) as refused:
        await openai_client.chat.completions.create(model=MODEL, messages=FRANCE, n=2, stream=stream)
    assert (refused.value.code, refused.value.param) == ("invalid_input", "openai_input.n")
    answer = await openai_client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=2)
    assert answer.usage is not None and answer.usage.completion_tokens == 2


async def test_openai_plain_answers_carry_only_openais_fields(server: LocalServer) -> None:
    url = f"{server.base_url}/llm/openai/v1"
    body = {"model": "any", "messages": FRANCE, "max_tokens": 2}
    async with httpx.AsyncClient(timeout=120) as http:
        completion = (await http.post(f"{url}/chat/completions", json=body)).json()
        models = (await http.get(f"{url}/models")).json()
    assert set(completion) == {"id", "object", "created", "model", "choices", "usage"}, completion
    assert set(models) == {"object", "data"}, models


async def test_a_failed_jobs_error_is_json_in_status(llm: Endpoint) -> None:
    job = await llm.run({"messages": [], "max_tokens": 2})
    with pytest.raises(JobFailed):
        async for _ in job.chunks():
            pass
    status = await job.status()
    assert status["status"] == "FAILED"
    assert json.loads(status["error"]) == {"code": "invalid_input", "message": "messages must not be empty",
                                           "field": "messages"}


async def test_openai_stream_events_are_numbered_and_end_with_done(server: LocalServer) -> None:
    body = {"model": MODEL, "messages": FRANCE, "max_tokens": 8, "temperature": 0, "stream": True}
    url = f"{server.base_url}/llm/openai/v1/chat/completions"
    async with httpx.AsyncClient(timeout=60) as http, http.stream("POST", url, json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join([part async for part in response.aiter_text()])
    events = parse_events(text)
    assert [int(e["id"]) for e in events] == list(range(len(events)))  # the chunks' seq: none lost, none twice
    assert events[-1]["data"] == "[DONE]"
    assert all(json.loads(e["data"])["object"] == "chat.completion.chunk" for e in events[:-1])


async def test_leaving_an_openai_stream_cancels_its_job(server: LocalServer, openai_client: AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        # Greedy, this runs to max_tokens (~11 s here): the job is still writing when the caller leaves.
        model=MODEL, messages=LONG,
        max_tokens=CAP, temperature=0, stream=True,
    )
    async for _ in stream:
        break
    await stream.close()
    deadline = time.monotonic() + 10
    while "the caller left its OpenAI request; cancelling the job" not in server.logs():
        assert time.monotonic() < deadline, server.logs()[-2000:]
        await asyncio.sleep(0.1)
    # Generation stopped, so the single worker is free at once, not after the ~11 s the story had left to run.
    started = time.perf_counter()
    answer = await openai_client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=2)
    assert time.perf_counter() - started < 5
    assert answer.usage is not None and answer.usage.completion_tokens == 2


async def test_two_jobs_sent_together_both_complete(llm: Endpoint) -> None:
    results = await asyncio.gather(
        *(complete(llm, {"messages": FRANCE, "max_tokens": 8, "temperature": 0}) for _ in range(2))
    )
    assert [done.text for _, done, _ in results] == [results[0][1].text] * 2
