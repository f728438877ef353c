"""LLM worker: a transformers causal LM that streams its answer as OpenAI ``chat.completion.chunk`` deltas.

Input (native): ``messages`` (OpenAI chat style) or ``prompt``, with ``max_tokens``, ``temperature``,
``top_p``, ``stop``, ``seed``, ``finish_sentence_within`` (tokens a reply may run past ``max_tokens`` to end its
sentence: :mod:`voicepod.aggregator` says why). Output: ``delta`` chunks, then a ``completion`` done chunk with
the text, finish reason, token usage and metrics. RunPod's OpenAI passthrough (``openai_route`` + ``openai_input``)
is answered with OpenAI's own objects, streamed as server-sent-event text, so OpenAI SDK clients can use the
endpoint's ``/openai/v1`` route.

Settings: ``MODEL_DIR`` (baked folder) or ``MODEL_NAME`` (hub id), ``DTYPE``, ``DEVICE``, ``MAX_TOKENS_CAP``,
``SERVED_MODEL_NAME``, ``MAX_CONCURRENCY`` (jobs decoded together in one batch: default 4 on a CPU, 16 on a GPU;
1 runs one ``generate`` at a time, as before batching); for batched decoding, ``PREFIX_CACHE_TOKENS`` (positions of
recent prompts kept so that a prompt starting the same way prefills only what is new; default 4096, 0 off),
``PREFILL_TOGETHER`` (``0`` prefills each joining job alone) and ``BATCH_INVARIANT`` (a greedy stream bit for bit
what it is alone, whatever runs beside it: default on on a CPU, off on a GPU; :mod:`workers.llm.invariance`). With
none of them and no GPU, the embedded SmolLM2-135M-Instruct chat model (the embedded Gemma 3 270M base model loads
with ``MODEL_DIR=DIR`` after ``python -m workers.common.bake --worker llm --embedded gemma --out DIR``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch
from voicepod.protocol import (
    CompletionDone,
    CompletionMetrics,
    DeltaChunk,
    LLMRequest,
    Message,
    OpenAIChatInput,
    Usage,
)

from workers.common.capacity import max_concurrency
from workers.common.errors import INPUT_TOO_LARGE, INVALID_INPUT, WorkerError
from workers.common.models import configure_logging, model_source, timed_load
from workers.common.sdk import start_worker
from workers.common.stream import report_load, serve_job
from workers.common.threads import iterate_in_thread
from workers.common.validation import parse_input
from workers.llm import openai
from workers.llm.bake import default_model_dir, ensure_embedded
from workers.llm.batching import BatchedGenerator, supports_batching
from workers.llm.generation import (
    GenerationResult,
    LanguageModel,
    SamplingParams,
    load_language_model,
    parse_dtype,
    stream_generate,
)
from workers.llm.invariance import invariance_wanted, make_batch_invariant
from workers.llm.prompt import Prompt, chat_prompt, raw_prompt, token_ids
from workers.llm.stops import StopMatcher

configure_logging()
log = logging.getLogger("voicepod.llm")

GPU_DEFAULT = "Qwen/Qwen2.5-1.5B-Instruct"
EMBEDDED_NAME = "smollm2-135m-instruct"
MAX_TOKENS_CAP = int(os.environ.get("MAX_TOKENS_CAP", "1024"))
DEFAULT_MAX_TOKENS = min(256, MAX_TOKENS_CAP)
MAX_STOPS = 8
# Below this, sampling picks the top token anyway, and dividing logits by a subnormal temperature overflows
# them to inf (a NaN probability tensor): such temperatures are run as greedy.
MIN_SAMPLING_TEMPERATURE = 1e-3


def _load() -> LanguageModel:
    source = model_source(GPU_DEFAULT, lambda: str(ensure_embedded(default_model_dir())))
    device = os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    # bf16 on CPU too: on 2 cores Gemma 270M ran 16 tok/s in bf16 against 4 in fp32, SmolLM2 135M 29 against 8.
    dtype = parse_dtype(os.environ.get("DTYPE", "bfloat16"))
    name = os.environ.get("SERVED_MODEL_NAME") or (EMBEDDED_NAME if source.kind == "embedded" else None)
    return load_language_model(source.location, dtype, device, name)


LM, _load_s = timed_load("llm", _load)
report_load(_load_s)
_LOADED_AT = int(time.time())

# Streams decoded together share each step: on 2 CPU cores 8 batched streams wrote 196 tokens/s against a lone
# stream's 39 (benchmarks/results/capacity.json), and they start in a fraction of the time queued ones wait. A GPU
# step of a small batch costs about what one row does, so it takes many more.
CONCURRENCY = max_concurrency(cpu=4, gpu=16, on_gpu=LM.device.startswith("cuda"))
# Positions of recent prompts kept for reuse by prompts that start the same way (the system prompt, a call's earlier
# turns): about 23 kB each for SmolLM2-135M in bf16, 28 kB for Qwen2.5-1.5B. 0 turns prefix caching off.
PREFIX_CACHE_TOKENS = int(os.environ.get("PREFIX_CACHE_TOKENS", "4096"))
# Jobs that arrive together prefill in one forward: their first tokens come sooner. Padding changes rounding unless
# BATCH_INVARIANT: without it only PREFILL_TOGETHER=0 with DTYPE=float32 keeps every stream what it is alone.
PREFILL_TOGETHER = os.environ.get("PREFILL_TOGETHER", "1") != "0"
BATCHER = (BatchedGenerator(LM, CONCURRENCY, PREFIX_CACHE_TOKENS, PREFILL_TOGETHER)
           if CONCURRENCY > 1 and supports_batching(LM) else None)
# A greedy stream is what the same request writes alone, whatever is decoded beside it: on by default on a CPU
# (benchmarks/batch_exactness.py: every bfloat16 stream the same as alone, against 5-6 of 12 without; it costs 3-8%
# of batched streams' tokens/s through the worker on 2 cores, 12-18% on the scheduler alone), off on a GPU, where it
# is not measured. Only with batched decoding: with one generate at a time no row ever shares a forward.
_INVARIANCE_WANTED = invariance_wanted(os.environ.get("BATCH_INVARIANT"), LM.device,
                                       getattr(LM.model.config, "_attn_implementation", None))
BATCH_INVARIANT = BATCHER is not None and _INVARIANCE_WANTED
if BATCH_INVARIANT:
    make_batch_invariant(LM.model)
    if torch.device(LM.device).type != "cpu":
        log.warning("BATCH_INVARIANT is measured on CPUs only: GPU matrix kernels may still vary with the batch")
if CONCURRENCY > 1 and BATCHER is None:
    log.info("this model's cache is not plain full attention: its %d concurrent jobs take turns on generate",
             CONCURRENCY)


@dataclass
class _Plan:
    prompt: Prompt
    prompt_ids: torch.Tensor
    params: SamplingParams
    stops: tuple[str, ...]


@dataclass
class _Outcome:
    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None
    seconds: float = 0.0
    batch_max: int = 1


def _plan(
    messages: list[Message] | None,
    prompt: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: str | list[str] | None,
    seed: int | None,
    prefix: str = "",
    finish_sentence_within: int = 0,
) -> _Plan:
    """Check the request against the model's limits and build its prompt; ``prefix`` names nested fields.

    ``finish_sentence_within``: tokens the reply may run past ``max_tokens`` to end its sentence (it stops at the
    first end past ``max_tokens``), up to ``MAX_TOKENS_CAP`` and the model's context.
    """
    if messages is not None and prompt is not None:
        raise WorkerError(INVALID_INPUT, "give either messages or prompt, not both", field=f"{prefix}messages")
    if messages is None and prompt is None:
        raise WorkerError(INVALID_INPUT, "messages or prompt is required", field=f"{prefix}messages")
    if messages is not None and not messages:
        raise WorkerError(INVALID_INPUT, "messages must not be empty", field=f"{prefix}messages")
    if prompt is not None and not prompt.strip():
        raise WorkerError(INVALID_INPUT, "prompt must not be empty", field=f"{prefix}prompt")
    if not 1 <= max_tokens <= MAX_TOKENS_CAP:
        raise WorkerError(INVALID_INPUT, f"max_tokens must be between 1 and {MAX_TOKENS_CAP}, got {max_tokens}",
                          field=f"{prefix}max_tokens")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise WorkerError(INVALID_INPUT, f"stop takes 1 to {MAX_STOPS} non-empty strings", field=f"{prefix}stop")
    if messages is not None:
        built = chat_prompt(LM.tokenizer, [{"role": m.role, "content": m.text()} for m in messages])
    else:
        built = raw_prompt(prompt or "")
    ids = token_ids(LM.tokenizer, built)
    if ids.shape[1] + max_tokens > LM.context_length:
        raise WorkerError(
            INPUT_TOO_LARGE,
            f"the prompt is {ids.shape[1]} tokens; with max_tokens {max_tokens} it exceeds the model's context "
            f"of {LM.context_length} tokens",
            field=f"{prefix}{'messages' if messages is not None else 'prompt'}",
        )
    if temperature < MIN_SAMPLING_TEMPERATURE:
        temperature = 0.0
    # The allowance is room to finish, never a reason to refuse: it ends at the cap and the context.
    hard_limit = min(max_tokens + finish_sentence_within, MAX_TOKENS_CAP, LM.context_length - ids.shape[1])
    params = SamplingParams(max_tokens=hard_limit, temperature=temperature, top_p=top_p, seed=seed,
                            sentence_end_after=max_tokens if hard_limit > max_tokens else None)
    return _Plan(prompt=built, prompt_ids=ids, params=params, stops=(*built.stops, *stops))


async def _complete(plan: _Plan, outcome: _Outcome) -> AsyncIterator[str]:
    """Yield the completion's text deltas (stop strings already cut); fill ``outcome`` at the end."""
    started = time.perf_counter()
    matcher = StopMatcher(plan.stops)
    result = GenerationResult()
    at_start = plan.prompt.strip_leading
    parts: list[str] = []
    outcome.prompt_tokens = int(plan.prompt_ids.shape[1])

    def produce(cancel: Any) -> Any:
        if BATCHER is not None:
            return BATCHER.stream(plan.prompt_ids, plan.params, plan.stops, cancel, result)
        return stream_generate(LM, plan.prompt_ids, plan.params, plan.stops, cancel, result)

    async def pieces() -> AsyncIterator[str]:
        async for piece in iterate_in_thread(produce):
            yield matcher.feed(piece)
        yield matcher.flush()

    async for text in pieces():
        if at_start:
            text = text.lstrip()
            at_start = not text
        if text:
            if outcome.ttft is None:
                outcome.ttft = time.perf_counter() - started
            parts.append(text)
            yield text
    outcome.seconds = time.perf_counter() - started
    outcome.text = "".join(parts)
    outcome.completion_tokens = result.completion_tokens
    outcome.batch_max = result.batch_max
    # Cut by the cap ("length"), also where the allowance past it let the sentence finish: the reply is shorter
    # than the model would have written. A client drops its last sentence only if that did not end.
    cap = plan.params.sentence_end_after or plan.params.max_tokens
    hit_length = result.completion_tokens >= cap and not result.ended_on_eos
    outcome.finish_reason = "length" if hit_length and not matcher.stopped else "stop"


def _metrics(outcome: _Outcome) -> CompletionMetrics:
    return CompletionMetrics(
        ttft=round(outcome.ttft, 4) if outcome.ttft is not None else None,
        tokens_per_s=round(outcome.completion_tokens / outcome.seconds, 2) if outcome.seconds else 0.0,
        generate_s=round(outcome.seconds, 4),
        # The most jobs in one forward with this one, a joint prefill or a decode step (1: alone): how much it shared.
        batch_max=outcome.batch_max,
    )


async def _native(request: LLMRequest) -> AsyncIterator[DeltaChunk | CompletionDone]:
    max_tokens = request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
    plan = _plan(request.messages, request.prompt, max_tokens, request.temperature, request.top_p, request.stop,
                 request.seed, finish_sentence_within=request.finish_sentence_within)
    ids = openai.CompletionIds(model=LM.name)
    outcome = _Outcome()
    role: str | None = "assistant"
    async for text in _complete(plan, outcome):
        yield DeltaChunk(chunk=openai.chunk(ids, content=text, role=role))
        role = None
    yield CompletionDone(
        text=outcome.text,
        finish_reason=outcome.finish_reason,
        usage=Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens),
        metrics=_metrics(outcome),
    )


async def _openai(request: LLMRequest) -> AsyncIterator[dict[str, Any]]:
    # These outputs are OpenAI's own objects (serve_job only adds `seq`), not protocol chunks: RunPod's
    # OpenAI-compatible route hands them to OpenAI SDK clients.
    others = request.model_dump(exclude_unset=True).keys() - {"openai_route", "openai_input"}
    if others:
        raise WorkerError(INVALID_INPUT, f"with openai_route, give only openai_input (not {sorted(others)})",
                          field=sorted(others)[0])
    if request.openai_route == "/v1/models":
        yield openai.model_list(LM.name, _LOADED_AT)
        return
    try:
        body = parse_input(OpenAIChatInput, request.openai_input)
    except WorkerError as exc:
        field = f"openai_input.{exc.field}" if exc.field else "openai_input"
        raise WorkerError(exc.code, exc.message, field=field) from None
    max_tokens = next((n for n in (body.max_completion_tokens, body.max_tokens) if n is not None),
                      DEFAULT_MAX_TOKENS)
    plan = _plan(body.messages, None, max_tokens, body.temperature, body.top_p, body.stop, body.seed,
                 prefix="openai_input.", finish_sentence_within=body.finish_sentence_within)
    ids = openai.CompletionIds(model=LM.name)
    outcome = _Outcome()
    if not body.stream:
        async for _ in _complete(plan, outcome):
            pass
        yield openai.completion(ids, outcome.text, outcome.finish_reason, outcome.prompt_tokens,
                                outcome.completion_tokens)
        return
    role: str | None = "assistant"
    async for text in _complete(plan, outcome):
        yield openai.chunk(ids, content=text, role=role)
        role = None
    yield openai.chunk(ids, finish_reason=outcome.finish_reason)
    if body.stream_options and body.stream_options.include_usage:
        yield openai.usage_chunk(ids, outcome.prompt_tokens, outcome.completion_tokens)


async def work(request: LLMRequest) -> AsyncIterator[DeltaChunk | CompletionDone | dict[str, Any]]:
    """Run one job: the native protocol, or the OpenAI passthrough when ``openai_route`` is set."""
    stream = _openai(request) if request.openai_route else _native(request)
    async for body in stream:
        yield body


def _openai_form(raw: Any) -> str | None:
    """``"sse"`` for a streamed OpenAI request, ``"object"`` for another OpenAI one, None for the native protocol.

    Read off the raw input (validation is strict, so only a real `true` passes it): a request that fails
    validation yields just its error chunk, which both wrappers pass through unchanged.
    """
    if not isinstance(raw, dict) or not raw.get("openai_route"):
        return None
    body = raw.get("openai_input")
    streamed = raw.get("openai_route") == "/v1/chat/completions" and isinstance(body, dict) and body.get("stream")
    return "sse" if streamed is True else "object"


async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any] | str]:
    chunks = serve_job(job, LLMRequest, work)
    form = _openai_form(job.get("input"))
    stream = {"sse": openai.server_sent_events, "object": openai.plain_objects}[form](chunks) if form else chunks
    async for chunk in stream:
        yield chunk


if __name__ == "__main__":
    # A first generate imports much of transformers' generation code: seconds on a CPU, paid before ready.
    start_worker(handler, concurrency=CONCURRENCY,
                 warm_up={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0})
