"""The chain: voice-to-voice latency of a turn through ``serve-local`` and ``VoiceAgent`` (stages overlapped,
audio streamed) against the same three jobs run one after another with ``run_sync`` (STT on the question, LLM
on the transcript, TTS on the whole reply); the client's and emulator's own time per stage; a waterfall PNG.

``python -m benchmarks.chain [--quick] [--runs N]``. Streamed and sequential turns alternate; medians reported.
The emulator's overhead per stage is the job's time seen by the client minus the worker's own compute seconds
(queueing, polling, HTTP, JSON); the JSON and base64 work on one turn's payloads is timed on its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

from voicepod import registry
from voicepod.agent import DEFAULT_STT_OPTIONS
from voicepod.registry import NAMES

from benchmarks import REPO, md_table, median, run_cli, write_results
from benchmarks.waterfall import draw

# A reply of several sentences: with one sentence the speech can only start when the LLM job ends, and the
# streamed turn is no faster than the sequential one (measured: both ~7 s for "What is the capital of France?").
# The embedded LLM is a chat model: the system prompt asks for several sentences (the voice default asks for one).
QUESTION = "Tell me about Paris."
SYSTEM_PROMPT = "Answer in three short sentences."
LLM_OPTIONS = {"max_tokens": 64, "temperature": 0.0}
STAGES = NAMES
# In a call, a turn's jobs come seconds after the last turn's (its reply is heard, then the caller speaks).
# Back to back, they measured the stock runpod SDK loop's habit of asking for a worker's next job up to 1 s after
# its last one ended (at concurrency 1), which delayed the LLM job of turns run without a gap; the workers' loop
# no longer waits (workers/common/job_take.py), and the gap keeps turns as a call spaces them.
TURN_GAP_S = 1.5


async def _streamed(server: Any, question: bytes) -> dict[str, Any]:
    from voicepod.agent import Audio, Done, VoiceAgent

    endpoints = [server.endpoint(stage, timeout=600) for stage in STAGES]
    try:
        agent = VoiceAgent(*endpoints, system_prompt=SYSTEM_PROMPT, llm_options=LLM_OPTIONS)
        audio_s = 0.0
        async for event in agent.respond(question):
            if isinstance(event, Audio):
                audio_s += len(event.data) / 2 / event.sample_rate
            if isinstance(event, Done):
                m = event.metrics
                stages = {s.name: {"started": s.started, "first_chunk": s.first_chunk, "finished": s.finished,
                                   "billed_s": s.billed_s, "jobs": len(s.job_ids)} for s in (m.stt, m.llm, m.tts)}
                return {"voice_to_voice_s": m.voice_to_voice_s, "total_s": m.total_s, "reply": event.reply,
                        "reply_audio_s": audio_s, **stages}
    finally:
        for endpoint in endpoints:
            await endpoint.aclose()
    raise RuntimeError("the turn ended without Done")


def _done(reply: dict[str, Any]) -> dict[str, Any]:
    return next(chunk for chunk in reply["output"] if chunk.get("type") == "done")


async def _sequential(server: Any, question: bytes) -> dict[str, Any]:
    result: dict[str, Any] = {}
    started = time.perf_counter()
    payloads: list[Any] = []

    async def stage(name: str, job_input: dict[str, Any]) -> dict[str, Any]:
        async with server.endpoint(name, timeout=600) as endpoint:
            begun = time.perf_counter() - started
            reply = await endpoint.run_sync(job_input)
            finished = time.perf_counter() - started
        done = _done(reply)
        payloads.append(reply)
        # delayTime: queued until a worker took the job (with the stock SDK loop, up to 1 s for a worker that has
        # just finished one; see benchmarks/pickup.py).
        result[name] = {"started": begun, "finished": finished, "compute_s": done["metrics"]["compute_s"],
                        "overhead_s": (finished - begun) - done["metrics"]["compute_s"],
                        "queue_s": reply.get("delayTime", 0) / 1000}
        return done

    stt_input = {"audio_base64": base64.b64encode(question).decode(), **DEFAULT_STT_OPTIONS}  # as VoiceAgent's
    transcript = (await stage("stt", stt_input))["text"]
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": transcript}]
    reply = (await stage("llm", {"messages": messages, **LLM_OPTIONS}))["text"]
    await stage("tts", {"text": reply, "format": "pcm16"})
    result["total_s"] = time.perf_counter() - started
    result["codec_s"] = _codec_seconds(question, payloads)
    return result


def _codec_seconds(question: bytes, replies: list[dict[str, Any]]) -> float:
    """JSON encode + decode of every payload of the turn, base64 both ways of its audio: the client's share."""
    started = time.perf_counter()
    json.loads(json.dumps({"input": {"audio_base64": base64.b64encode(question).decode()}}))
    for reply in replies:
        for chunk in json.loads(json.dumps(reply))["output"]:
            if "audio" in chunk:
                base64.b64decode(chunk["audio"])
    return time.perf_counter() - started


def _budget(turn: dict[str, Any]) -> dict[str, float]:
    """Where a streamed turn's voice-to-voice time went: the three waits one after another on its critical
    path (job submission, queueing and polling included in each)."""
    return {
        "stt: audio to transcript": turn["stt"]["finished"] - turn["stt"]["started"],
        "llm: transcript to first sentence": turn["tts"]["started"] - turn["llm"]["started"],
        "tts: first sentence to first audio": turn["tts"]["first_chunk"] - turn["tts"]["started"],
    }


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from voicepod.audio import read_wav
    from voicepod.local import LocalServer

    from tests.speech import espeak_wav

    question = espeak_wav(QUESTION)
    samples, rate = read_wav(question)
    question_s = len(samples) / rate
    handlers = registry.handlers(REPO)
    streamed, sequential = [], []
    with LocalServer(handlers, ready_timeout_s=600) as server:
        asyncio.run(_streamed(server, question))  # the first jobs carry the model loads (cold start: issue 7)
        for _ in range(runs):
            time.sleep(TURN_GAP_S)
            streamed.append(asyncio.run(_streamed(server, question)))
            time.sleep(TURN_GAP_S)
            sequential.append(asyncio.run(_sequential(server, question)))
    v2v = median([t["voice_to_voice_s"] for t in streamed])
    seq_total = median([t["total_s"] for t in sequential])
    ratio = v2v / seq_total
    overhead = {s: median([t[s]["overhead_s"] for t in sequential]) for s in STAGES}
    queue = {s: median([t[s]["queue_s"] for t in sequential]) for s in STAGES}
    compute = {s: median([t[s]["compute_s"] for t in sequential]) for s in STAGES}
    codec = median([t["codec_s"] for t in sequential])
    billed = {s: median([t[s]["billed_s"] for t in streamed]) for s in STAGES}
    reply_s = median([t["reply_audio_s"] for t in streamed])
    budgets = [_budget(t) for t in streamed]
    budget = {part: median([b[part] for b in budgets]) for part in budgets[0]}
    # A turn lasts the question, the wait for the answer and the answer; the next question comes after it.
    turns_per_minute = 60.0 / (question_s + v2v + reply_s)
    # The waterfall shows the streamed turn closest to the median, beside the sequential one of the same pair.
    pick = min(range(runs), key=lambda i: abs(streamed[i]["voice_to_voice_s"] - v2v))
    png = draw(streamed[pick], sequential[pick], out / "waterfall.png",
               f"One turn: '{QUESTION}' ({question_s:.1f} s) -> {streamed[pick]['reply']!r}")
    table = md_table(
        ["", "streamed (VoiceAgent)", "one after another (run_sync)", "streamed / sequential"],
        [["voice-to-voice s", v2v, seq_total, f"{ratio:.0%}"]],
    )
    table += "\n\n" + md_table(
        ["stage", "worker compute s", "emulator + client overhead s", "of which queued s", "overhead share"],
        [[s, compute[s], overhead[s], queue[s], f"{overhead[s] / (compute[s] + overhead[s]):.0%}"] for s in STAGES],
    )
    table += "\n\n" + md_table(
        ["voice-to-voice, part by part", "s", "share of voice-to-voice", "share of sequential"],
        [[part, seconds, f"{seconds / v2v:.0%}", f"{seconds / seq_total:.0%}"] for part, seconds in budget.items()],
    )
    table += (f"\n\nJSON + base64 of one turn's payloads in the client: {codec * 1000:.1f} ms. Medians of {runs} "
              f"alternating turns; LLM {LLM_OPTIONS}. Waterfall: `{png.name}`.")
    payload = {
        "runs": runs, "question": QUESTION, "question_s": question_s, "voice_to_voice_s": v2v,
        "sequential_s": seq_total, "streamed_over_sequential": ratio, "overhead_s": overhead,
        "queue_s": queue, "compute_s": compute, "codec_s": codec, "voice_to_voice_parts_s": budget,
        "cost_inputs": {"billed_s": billed, "turns_per_minute": turns_per_minute, "question_s": question_s,
                        "reply_audio_s": reply_s},
        "streamed": streamed, "sequential": sequential, "waterfall": png.name,
    }
    write_results("chain", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=5, quick_help="fewer runs")


if __name__ == "__main__":
    main()
