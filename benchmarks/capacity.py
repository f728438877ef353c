"""Capacity: what one worker per stage carries when several calls share it, against one job at a time.

``python -m benchmarks.capacity [--quick] [--runs N] [--out DIR]``.

LLM: three emulated workers (``serve-local``, the
runpod SDK's own loop) serve the embedded LLM: one with ``MAX_CONCURRENCY=8`` (concurrent jobs decoded in one
batch, prefix cache on: the default), one the same with ``PREFIX_CACHE_TOKENS=0``, one with ``MAX_CONCURRENCY=1``
(jobs take turns, the behaviour before batching). 1, 2, 4 and 8 streams start together on each (a burst: the
hardest case for the first token, since all of them prefill at once); every stream runs to ``max_tokens`` (greedy;
checked). Per level: aggregate tokens/s (all streams' tokens over the time from the first request to the last done
chunk) and each stream's time to first token (queue wait included: what a caller waits). Then the same levels as
a steady load on the batched and one-at-a-time workers (``steady``): each caller asks three times in a row, so
requests arrive while others decode, as calls' turns do. Medians over runs; the workers alternate run by run.

Chain: N simulated calls (``VoiceAgent`` sessions, each asking a spoken question, then waiting as long as the
reply and the next question take to say) on one worker per stage, every worker at ``MAX_CONCURRENCY=1`` against
``MAX_CONCURRENCY=8``: p50/p95 voice-to-voice per N, and the most calls whose p95 stays within twice one call's
(calls per worker). The workers' busy wall-clock seconds (the union of their jobs' times), shared by the turns
served, are the per-turn billed seconds ``voicepod cost --results capacity.json --idle-s 0`` prices.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from voicepod.registry import CHAIN

from benchmarks import REPO, md_table, median, run_cli, write_results

HANDLER = REPO / "workers" / "llm" / "handler.py"
LEVELS = (1, 2, 4, 8)
# The worker as deployed (batched, prefix cache on), batched with the prefix cache off, and one job at a time.
MODES = ("batched", "batched_no_prefix_cache", "one_at_a_time")
# A long story goes on past max_tokens, so every stream writes exactly max_tokens (checked: a stream that stops
# early would make tokens/s measure prefill). The count-to-1000 prompt used before did not: SmolLM2 answered
# "1000." to seven of the eight, and the 8-stream figure measured mostly prefill. Each stream has its own topic,
# so the streams are different requests (different prompts and answers), as separate calls' are.
PROMPT = "Write a long story about {topic} in {place}."
TOPICS = ("a lighthouse keeper", "a dragon", "a robot", "a sailor", "a baker", "a detective", "an astronaut",
          "a gardener")
# A new place for every level of every run (and for the warm-up): a stream's prompt is then never cached whole
# from an earlier level, only what calls share (the system prompt, the chat template), as in real traffic.
# Streams arriving while others decode (what calls' turns do): each caller asks STEADY_ROUNDS times in a row, the
# callers' first requests this far apart; the rounds after the first are measured.
STEADY_ROUNDS = 3
STEADY_SPACING_S = 0.1
STEADY_MODES = ("batched", "one_at_a_time")
PLACES = ("Paris", "a small village", "the desert", "Tokyo", "a forest", "the mountains", "an old castle",
          "the sea", "a big city", "the jungle", "a space station", "an island", "London", "a farm", "a school",
          "a river town", "the arctic")


async def _stream(endpoint: Any, topic: str, place: str, max_tokens: int, prompt: str = PROMPT
                  ) -> tuple[float, float, int]:
    """One request: (seconds to its first token, seconds to its done chunk, completion tokens)."""
    from voicepod.protocol import CompletionDone, DeltaChunk

    began = time.perf_counter()
    job = await endpoint.run({"messages": [{"role": "user", "content": prompt.format(topic=topic, place=place)}],
                              "max_tokens": max_tokens, "temperature": 0})
    first = None
    async for chunk in job.chunks():
        if isinstance(chunk, DeltaChunk) and first is None:
            first = time.perf_counter() - began
        elif isinstance(chunk, CompletionDone):
            if chunk.usage.completion_tokens != max_tokens:
                raise RuntimeError(f"the stream about {topic} ended after {chunk.usage.completion_tokens} of "
                                   f"{max_tokens} tokens: pick prompts that write on")
            return first or 0.0, time.perf_counter() - began, chunk.usage.completion_tokens
    raise RuntimeError("the stream ended without a done chunk")


async def _level(endpoint: Any, streams: int, place: str, max_tokens: int) -> dict[str, float]:
    began = time.perf_counter()
    results = await asyncio.gather(*(_stream(endpoint, TOPICS[i], place, max_tokens) for i in range(streams)))
    wall = time.perf_counter() - began
    return {"tokens_per_s": sum(r[2] for r in results) / wall, "ttft_s": median([r[0] for r in results]),
            "ttft_max_s": max(r[0] for r in results), "wall_s": wall}


async def _steady(endpoint: Any, streams: int, run: int, max_tokens: int) -> dict[str, float]:
    """``streams`` callers, each starting ``STEADY_ROUNDS`` requests one after another, the first ones
    ``STEADY_SPACING_S`` apart: after the first round a request joins a batch already decoding, as calls' turns do.
    Tokens/s over all rounds and the whole run (the callers' staggered start and end included); median first
    token over the rounds after the first."""
    samples: list[tuple[float, float, int]] = []

    async def caller(i: int) -> None:
        await asyncio.sleep(i * STEADY_SPACING_S)
        for k in range(STEADY_ROUNDS):
            # A number first: only the system prompt and chat template are shared with another request.
            prompt = f"Story {run}-{k}-{i}: " + PROMPT
            result = await _stream(endpoint, TOPICS[i], PLACES[(run + k) % len(PLACES)], max_tokens, prompt)
            if k:
                samples.append(result)

    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(streams)))
    wall = time.perf_counter() - began
    return {"tokens_per_s": streams * STEADY_ROUNDS * max_tokens / wall, "ttft_s": median([r[0] for r in samples]),
            "ttft_max_s": max(r[0] for r in samples), "wall_s": wall}


async def _measure(quick: bool, runs: int) -> dict[str, Any]:
    from voicepod.local import LocalServer

    max_tokens = 32 if quick else 64
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        mode: {str(n): [] for n in LEVELS} for mode in MODES}
    steady: dict[str, dict[str, list[dict[str, float]]]] = {
        mode: {str(n): [] for n in LEVELS} for mode in STEADY_MODES}
    with LocalServer({"llm": HANDLER}, env={"MAX_CONCURRENCY": "8"}, ready_timeout_s=300) as batched, \
            LocalServer({"llm": HANDLER}, env={"MAX_CONCURRENCY": "8", "PREFIX_CACHE_TOKENS": "0"},
                        ready_timeout_s=300) as uncached, \
            LocalServer({"llm": HANDLER}, env={"MAX_CONCURRENCY": "1"}, ready_timeout_s=300) as serial:
        servers = {"batched": batched, "batched_no_prefix_cache": uncached, "one_at_a_time": serial}
        endpoints = {mode: server.endpoint("llm", timeout=900) for mode, server in servers.items()}
        try:
            for endpoint in endpoints.values():  # the first job of a worker carries its load time
                await _stream(endpoint, TOPICS[0], PLACES[-1], 4)
            for run in range(runs):
                for level, n in enumerate(LEVELS):
                    place = PLACES[(run * len(LEVELS) + level) % (len(PLACES) - 1)]
                    for mode, endpoint in endpoints.items():
                        samples[mode][str(n)].append(await _level(endpoint, n, place, max_tokens))
                    for mode in STEADY_MODES:
                        steady[mode][str(n)].append(await _steady(endpoints[mode], n, run, max_tokens))
        finally:
            for endpoint in endpoints.values():
                await endpoint.aclose()
    return {"max_tokens": max_tokens, "samples": samples, "steady": steady}


# --- the chain: simulated calls -------------------------------------------------------------------------------------

QUESTION = "Tell me about Paris."
SYSTEM_PROMPT = "Answer in one or two short sentences."
LLM_OPTIONS = {"max_tokens": 48, "temperature": 0.0}


async def _call(server: Any, question: bytes, question_s: float, turns: int, delay_s: float) -> list[dict[str, Any]]:
    """One caller: ``turns`` turns, each after the last reply was heard and the next question said."""
    from voicepod.agent import Audio, Done, VoiceAgent

    await asyncio.sleep(delay_s)  # callers do not all speak at the same instant
    endpoints = [server.endpoint(stage, timeout=900) for stage in CHAIN]
    records = []
    try:
        agent = VoiceAgent(*endpoints, system_prompt=SYSTEM_PROMPT, llm_options=LLM_OPTIONS)
        for _ in range(turns):
            began = time.monotonic()
            reply_s = 0.0
            async for event in agent.respond(question):
                if isinstance(event, Audio):
                    reply_s += len(event.data) / 2 / event.sample_rate
                elif isinstance(event, Done):
                    m = event.metrics
                    records.append({
                        "voice_to_voice_s": m.voice_to_voice_s, "reply_s": reply_s,
                        "spans": {s.name: (began + s.started, began + s.finished) for s in (m.stt, m.llm, m.tts)
                                  if s.started is not None and s.finished is not None},
                    })
            # The reply is heard (from its first audio on), then the caller speaks again.
            await asyncio.sleep(max(0.0, reply_s - (time.monotonic() - began)) + question_s)
            agent.history.clear()  # every turn the same question, from a fresh start: turns stay alike
    finally:
        for endpoint in endpoints:
            await endpoint.aclose()
    return records


def _busy_s(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``spans``: the wall-clock time a worker had a job of the stage."""
    total, end = 0.0, float("-inf")
    for start, finish in sorted(spans):
        if finish > end:
            total += finish - max(start, end)
            end = finish
    return total


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def _calls(server: Any, question: bytes, question_s: float, calls: int, turns: int) -> dict[str, Any]:
    cycle = question_s + 4.0  # about one turn: a question, the wait and a short reply
    records = [r for call in await asyncio.gather(*(
        _call(server, question, question_s, turns, i * cycle / calls) for i in range(calls))) for r in call]
    v2v = [r["voice_to_voice_s"] for r in records if r["voice_to_voice_s"] is not None]
    busy = {stage: _busy_s([r["spans"][stage] for r in records if stage in r["spans"]]) for stage in CHAIN}
    return {"p50_s": median(v2v), "p95_s": _percentile(v2v, 0.95), "turns": len(records),
            "reply_s": median([r["reply_s"] for r in records]),
            "busy_s_per_turn": {stage: busy[stage] / len(records) for stage in CHAIN}, "voice_to_voice_s": v2v}


def _chain(quick: bool) -> dict[str, Any]:
    from voicepod import registry
    from voicepod.audio import read_wav
    from voicepod.local import LocalServer

    from tests.speech import espeak_wav

    question = espeak_wav(QUESTION)
    samples, rate = read_wav(question)
    question_s = len(samples) / rate
    levels = (1, 2, 4) if quick else (1, 2, 4, 8)
    turns = 2 if quick else 3
    handlers = registry.handlers(REPO)
    results: dict[str, dict[str, Any]] = {}
    for mode, concurrency in (("one_at_a_time", "1"), ("concurrent", "8")):
        with LocalServer(handlers, env={"MAX_CONCURRENCY": concurrency}, ready_timeout_s=600) as server:
            asyncio.run(_calls(server, question, question_s, 1, 1))  # the first jobs carry the model loads
            results[mode] = {str(n): asyncio.run(_calls(server, question, question_s, n, turns)) for n in levels}
    return {"question_s": question_s, "turns_per_call": turns, "levels": results}


def _calls_per_worker(levels: dict[str, dict[str, Any]]) -> int:
    """The most calls whose p95 voice-to-voice stays within twice one call's."""
    limit = 2 * levels["1"]["p95_s"]
    return max(int(n) for n, level in levels.items() if level["p95_s"] <= limit)


def _medians(samples: dict[str, list[dict[str, float]]], key: str) -> dict[str, float]:
    return {n: round(median([s[key] for s in values]), 3) for n, values in samples.items()}


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    chain = _chain(quick)
    measured = asyncio.run(_measure(quick, runs))
    samples = measured["samples"]
    batched_rate, serial_rate = _medians(samples["batched"], "tokens_per_s"), _medians(
        samples["one_at_a_time"], "tokens_per_s")
    batched_ttft, serial_ttft = _medians(samples["batched"], "ttft_s"), _medians(samples["one_at_a_time"], "ttft_s")
    uncached_rate = _medians(samples["batched_no_prefix_cache"], "tokens_per_s")
    uncached_ttft = _medians(samples["batched_no_prefix_cache"], "ttft_s")
    rows = [[n, batched_rate[n], uncached_rate[n], serial_rate[n], batched_ttft[n], uncached_ttft[n], serial_ttft[n]]
            for n in batched_rate]
    table = md_table(["streams", "batched tokens/s", "batched, no prefix cache", "one at a time",
                      "batched first token s", "batched, no prefix cache", "one at a time"], rows)
    speedup = batched_rate["8"] / batched_rate["1"]
    ttft_ratio = batched_ttft["8"] / batched_ttft["1"]
    steady = {mode: {"llm_tokens_per_s": _medians(by_n, "tokens_per_s"), "llm_ttft_s": _medians(by_n, "ttft_s")}
              for mode, by_n in measured["steady"].items()}
    steady_ttft = steady["batched"]["llm_ttft_s"]
    steady_ratio = steady_ttft["8"] / steady_ttft["1"]
    table += (f"\n\nAt 8 streams one batched worker writes {speedup:.1f}x a lone stream's tokens/s, with a median "
              f"first token {ttft_ratio:.1f}x a lone stream's (goal: at least 3x, at most 2x). Embedded SmolLM2-135M "
              f"(bf16), greedy, {measured['max_tokens']} tokens per stream; medians of {runs} runs. First token "
              f"includes the queue wait. The machine may be shared: rerun on a quiet one before quoting.")
    table += "\n\n" + md_table(
        ["streams in flight", "batched tokens/s", "one at a time", "batched first token s", "one at a time"],
        [[n, steady["batched"]["llm_tokens_per_s"][n], steady["one_at_a_time"]["llm_tokens_per_s"][n],
          steady_ttft[n], steady["one_at_a_time"]["llm_ttft_s"][n]] for n in steady_ttft])
    table += (f"\n\nStreams that arrive while others decode ({STEADY_ROUNDS} requests in a row per caller, callers "
              f"started {STEADY_SPACING_S:g} s apart, the first round not counted): at 8 in flight the median first "
              f"token is {steady_ratio:.1f}x a lone caller's.")
    levels = chain["levels"]
    carried = {mode: _calls_per_worker(by_n) for mode, by_n in levels.items()}
    table += "\n\n" + md_table(
        ["calls", "p50 voice-to-voice s (concurrency 1)", "p95 (concurrency 1)", "p50 (concurrency 8)",
         "p95 (concurrency 8)"],
        [[n, levels["one_at_a_time"][n]["p50_s"], levels["one_at_a_time"][n]["p95_s"], levels["concurrent"][n]["p50_s"],
          levels["concurrent"][n]["p95_s"]] for n in levels["concurrent"]])
    # Billed seconds per turn where one worker per stage carries the most calls it takes before p95 doubles.
    at = str(carried["concurrent"])
    shared = levels["concurrent"][at]["busy_s_per_turn"]
    lone = levels["concurrent"]["1"]
    cycle = chain["question_s"] + lone["p50_s"] + lone["reply_s"]  # a turn: question, wait, reply
    tried = ", ".join(levels["concurrent"])
    table += (f"\n\nCalls one worker per stage carries before p95 voice-to-voice doubles: {carried['one_at_a_time']} "
              f"at concurrency 1, {carried['concurrent']} at concurrency 8 (levels tried: {tried}; "
              f"{chain['turns_per_call']} turns per call). Worker busy seconds per turn at {at} calls, shared: "
              + ", ".join(f"{stage} {shared[stage]:.2f} s" for stage in CHAIN)
              + ". Price them with `voicepod cost --results capacity.json --idle-s 0`.")
    payload = {
        "max_tokens": measured["max_tokens"], "runs": runs,
        "llm_tokens_per_s": batched_rate, "llm_ttft_s": batched_ttft,
        "one_at_a_time": {"llm_tokens_per_s": serial_rate, "llm_ttft_s": serial_ttft},
        "batched_no_prefix_cache": {"llm_tokens_per_s": uncached_rate, "llm_ttft_s": uncached_ttft},
        "speedup_at_8": speedup, "ttft_ratio_at_8": ttft_ratio, "samples": samples,
        # The same levels as streams that keep arriving while others decode (not all at one instant).
        "steady": steady, "steady_ttft_ratio_at_8": steady_ratio, "steady_samples": measured["steady"],
        "chain": chain, "calls_per_worker": carried,
        # What `voicepod cost --results` reads: per-turn billed seconds, here a worker's busy seconds shared by
        # the calls it carried at once.
        "cost_inputs": {"billed_s": shared, "turns_per_minute": 60.0 / cycle, "calls": int(at)},
    }
    write_results("capacity", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=3, quick_help="shorter streams, fewer runs")


if __name__ == "__main__":
    main()
