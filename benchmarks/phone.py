"""Mouth-to-ear on a phone call: the caller's last voiced sound to the first reply audio they receive, through
``voicepod phone`` over ``serve-local``, with speculative turns off, on, and on with a shorter end-of-turn silence;
and, speculation on, over a queue with RunPod's delay modelled and over the workers' own servers (direct, issue 29).

``python -m benchmarks.phone [--quick] [--runs N] [--out DIR]``. A simulated Twilio caller (real-time 20 ms
frames) asks each question once per run on each of three ``voicepod phone`` processes sharing one serve-local,
the three interleaved; every call is new (no history), at temperature 0. Mouth-to-ear is measured at the caller;
its parts come from the call record (the server's clock): the end-of-turn wait (the detector's silence), STT,
LLM to the first sentence, TTS to the first audio, each counted only where it lies after the end of the turn was
detected (a speculative turn did some of it earlier); the server's overhead is the rest (VAD lag, hand-offs,
polling, sending). Cancelled speculative jobs are billed for nothing: their execution time, from their
endpoints, is the extra billed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from pathlib import Path
from typing import Any

from voicepod import registry
from voicepod.phone.vad import DEFAULT_PAUSE_S

from benchmarks import REPO, md_table, median, phone_turns, run_cli, write_results
from benchmarks.waterfall import draw_call

QUESTIONS = ["How do I make a cup of tea?", "What is the capital of France?", "Where is the nearest train station?"]
# A caller who pauses mid-question (0.35 s: past the speculation's pause, short of the end of turn): the
# speculation at the pause is cancelled, what guessing costs.
PAUSED = ("What is the capital of France?", "And what about Germany?")
PAUSE_INSIDE_S = 0.35
SHORT_END_SILENCE_S = 0.3
SHORT_PAUSE_S = 0.1
MODES = {
    "off": ["--no-speculate"],
    "on": ["--speculate"],
    f"on, end of turn {SHORT_END_SILENCE_S} s": ["--speculate", "--end-silence", str(SHORT_END_SILENCE_S)],
    # A head start (end of turn minus pause) longer than an STT job here (about 0.4 s).
    f"on, pause {SHORT_PAUSE_S} s": ["--speculate", "--pause", str(SHORT_PAUSE_S)],
}
# Kinds of endpoint (issue 29), each with speculation on, as "on" runs. "on" is the queue reference: serve-local's
# queue emulator, which adds no delay of its own. "queue_modelled": a second serve-local that holds each job
# QUEUE_DELAY_S in its queue before a worker may take it, the middle of the 0.10-0.16 s RunPod's queue was measured to
# add on a warm worker (runpod-workers/worker-infinity-embedding issue 5): a model, not a measurement on RunPod (and
# it leaves out RunPod's /stream polling). "direct": the workers in load-balancing mode (serve-local --direct), the
# phone server calling their own servers, no queue at all.
QUEUE_DELAY_S = 0.13
ENDPOINT_MODES = ("queue_modelled", "direct")
# Goals: direct at least this much shorter than the modelled queue at the median, and within this of the queue with
# no delay (the direct route's own overhead is small).
DIRECT_GAIN_GOAL_S = 0.2
DIRECT_OVERHEAD_GOAL_S = 0.03
# These modes measure the silence detector (the default before issue 28), as they did; the turn-taking section
# (benchmarks.phone_turns) sets its own.
ARGS = ["--greeting", "", "--temperature", "0", "--turn-detector", "silence"]
PARTS = ["end-of-turn wait", "STT", "LLM to first sentence", "TTS to first audio", "server overhead"]


def p90(values: list[float]) -> float:
    return float(statistics.quantiles(values, n=10, method="inclusive")[-1]) if len(values) > 1 else values[0]


def _after(start: float | None, end: float | None) -> float:
    """The part of [start, end] (seconds from the end-of-turn detection) that lies after the detection."""
    if start is None or end is None:
        return 0.0
    return max(0.0, end) - max(0.0, start)


def parts(mouth_to_ear: float, latency: dict[str, Any]) -> dict[str, float]:
    """Mouth-to-ear split along the turn's critical path, from the call record's latency entries."""
    split = {
        "end-of-turn wait": latency["end_silence_s"],
        "STT": _after(latency.get("stt_started_s"), latency.get("transcript_s")),
        "LLM to first sentence": _after(latency.get("llm_started_s"), latency.get("first_sentence_s")),
        "TTS to first audio": _after(latency.get("first_sentence_s"), latency.get("tts_first_chunk_s")),
    }
    split["server overhead"] = mouth_to_ear - sum(split.values())
    return split


async def _call(phone: Any, audio: bytes) -> tuple[float, dict[str, Any]]:
    from voicepod.phone.caller import SimulatedCaller

    async with SimulatedCaller(phone.media_url) as caller:
        await caller.say(audio)  # its last byte is the last voiced sample: say() returns once it is sent
        mouth_to_ear = await caller.wait_for_audio(caller.speech_ended_at, 300)
        await phone.reply_over(300)
    return mouth_to_ear, phone.record(caller.call_sid)


async def _extra_billed(server: Any, record: dict[str, Any]) -> tuple[float, list[str]]:
    """Execution seconds of the cancelled speculations' jobs (what RunPod bills), and their statuses (none for a
    direct endpoint, which keeps no job records to ask)."""
    seconds, statuses = 0.0, []
    if server.direct:
        return seconds, statuses
    for cancelled in record["cancelled_speculations"]:
        for stage, ids in cancelled["jobs"].items():
            async with server.endpoint(stage) as endpoint:
                for job_id in ids:
                    status = await endpoint.job(job_id).status()
                    statuses.append(status["status"])
                    seconds += status.get("executionTime", 0) / 1000
    return seconds, statuses


def _turn(mode: str, question: str, run: int, mouth_to_ear: float, record: dict[str, Any],
          billed: float, cancelled_statuses: list[str]) -> dict[str, Any]:
    [turn] = record["turns"]
    latency = turn["latency"]
    return {"mode": mode, "question": question, "run": run, "mouth_to_ear_s": mouth_to_ear,
            "parts_s": parts(mouth_to_ear, latency), "stt_s": latency.get("stt_s"),
            "speculated": turn["speculated"], "cancelled_speculations": len(record["cancelled_speculations"]),
            "cancelled_statuses": cancelled_statuses, "extra_billed_s": billed, "user": turn["user"],
            "reply": turn["reply"], "latency": latency}


def _waterfall_turn(turn: dict[str, Any]) -> dict[str, Any]:
    """A recorded turn on the caller's timeline: the detection is end_silence_s after the last voiced sound."""
    lat = turn["latency"]
    shift = lat["end_silence_s"]

    def at(name: str) -> float | None:
        return lat[name] + shift if lat.get(name) is not None else None

    return {"end_silence_s": shift, "mouth_to_ear_s": turn["mouth_to_ear_s"],
            "stt": {"started": at("stt_started_s"), "finished": at("transcript_s")},
            "llm": {"started": at("llm_started_s"), "first_chunk": at("llm_first_token_s"),
                    "finished": at("llm_done_s")},
            "tts": {"started": at("first_sentence_s"), "first_chunk": at("tts_first_chunk_s"),
                    "finished": at("tts_done_s")}}


def run(quick: bool, runs: int, out: Path, turns_only: bool = False) -> dict[str, Any]:
    from voicepod.audio import MULAW_RATE
    from voicepod.local import LocalServer

    from tests.phone_util import PhoneServer, spoken_mulaw, voiced

    if turns_only:
        with LocalServer(registry.handlers(REPO), ready_timeout_s=600) as server:
            result = phone_turns.measure(server.base_url, quick, 1 if quick else runs)
        return _merge_turns(result, out)

    clips = {q: voiced(spoken_mulaw(q)) for q in QUESTIONS}
    paused = " ".join(PAUSED)
    clips[paused] = (voiced(spoken_mulaw(PAUSED[0])) + b"\xff" * int(MULAW_RATE * PAUSE_INSIDE_S)
                     + voiced(spoken_mulaw(PAUSED[1])))
    turns: list[dict[str, Any]] = []
    handlers = registry.handlers(REPO)
    with LocalServer(handlers, ready_timeout_s=600) as server, contextlib.ExitStack() as stack:
        phones = {mode: stack.enter_context(PhoneServer(server.base_url, [*ARGS, *args]))
                  for mode, args in MODES.items()}
        servers = {mode: server for mode in phones}
        for mode, (other, phone) in _endpoint_modes(stack, handlers, server.base_url).items():
            servers[mode], phones[mode] = other, phone
        for phone in phones.values():  # the first jobs carry the model loads (cold start: issue 7)
            asyncio.run(_call(phone, clips[QUESTIONS[0]]))
        for i in range(runs):
            for k, question in enumerate(clips):
                modes = list(phones)
                shift = (i + k) % len(modes)  # each mode goes first in turn
                for mode in modes[shift:] + modes[:shift]:
                    mouth_to_ear, record = asyncio.run(_call(phones[mode], clips[question]))
                    billed, statuses = asyncio.run(_extra_billed(servers[mode], record))
                    turns.append(_turn(mode, question, i, mouth_to_ear, record, billed, statuses))
                    print(f"{mode:>22}  {mouth_to_ear:5.2f} s  {question}", flush=True)
        turn_taking = phone_turns.measure(server.base_url, quick, 1 if quick else runs)
    return _report(turns, runs, out, quick, turn_taking)


def _endpoint_modes(stack: contextlib.ExitStack, handlers: dict[str, Path], base_url: str
                    ) -> dict[str, tuple[Any, Any]]:
    """The serve-local and the phone server (speculation on) of each of :data:`ENDPOINT_MODES`."""
    from voicepod.local import LocalServer

    from tests.phone_util import PhoneServer

    modelled = stack.enter_context(LocalServer(handlers, ready_timeout_s=600,
                                               extra_args=["--queue-delay", str(QUEUE_DELAY_S)]))
    direct = stack.enter_context(LocalServer(handlers, direct=True, ready_timeout_s=600))
    urls = [arg for stage in handlers for arg in (f"--{stage}", direct.url(stage))]  # URLs: the direct route
    return {"queue_modelled": (modelled, stack.enter_context(PhoneServer(modelled.base_url, [*ARGS, "--speculate"]))),
            "direct": (direct, stack.enter_context(PhoneServer(base_url, [*ARGS, "--speculate", *urls])))}


def _endpoints_report(turns: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Mouth-to-ear by kind of endpoint ("queue" is the "on" mode), and the direct route's goals."""
    kinds = {"queue": "on", **{mode: mode for mode in ENDPOINT_MODES}}
    by_kind = {kind: [t for t in turns if t["mode"] == mode] for kind, mode in kinds.items()}
    m2e = {kind: median([t["mouth_to_ear_s"] for t in ts]) for kind, ts in by_kind.items()}
    parts_s = {kind: {p: median([t["parts_s"][p] for t in ts]) for p in PARTS} for kind, ts in by_kind.items()}
    gain = m2e["queue_modelled"] - m2e["direct"]
    overhead = m2e["direct"] - m2e["queue"]
    table = md_table(
        ["endpoints", "mouth-to-ear median s", "p90 s", *[f"{p} s" for p in PARTS]],
        [[kind, m2e[kind], p90([t["mouth_to_ear_s"] for t in ts]), *[parts_s[kind][p] for p in PARTS]]
         for kind, ts in by_kind.items()],
    )
    table += (f"\n\nEndpoints, speculation on in each: queue = serve-local's queue (no delay: the 'on' mode above); "
              f"queue_modelled = the same holding each job {QUEUE_DELAY_S} s in its queue, modelled on the 0.10-0.16 s "
              f"RunPod's queue was measured to add (not measured on RunPod); direct = the workers' own servers "
              f"(serve-local --direct). Direct is {gain:.3f} s shorter than the modelled queue (goal: at least "
              f"{DIRECT_GAIN_GOAL_S} s) and {overhead:+.3f} s from the queue with no delay (goal: within "
              f"{DIRECT_OVERHEAD_GOAL_S} s).")
    payload = {"mouth_to_ear_s": m2e, "parts_s": parts_s, "queue_delay_s": QUEUE_DELAY_S,
               "direct_gain_over_queue_modelled_s": gain, "direct_minus_queue_s": overhead,
               "gain_goal_met": gain >= DIRECT_GAIN_GOAL_S,
               "overhead_goal_met": abs(overhead) <= DIRECT_OVERHEAD_GOAL_S, "modelled": ["queue_modelled"]}
    return table, payload


def _report(turns: list[dict[str, Any]], runs: int, out: Path, quick: bool,
            turn_taking: dict[str, Any]) -> dict[str, Any]:
    by_mode = {mode: [t for t in turns if t["mode"] == mode] for mode in MODES}
    short = list(MODES)[2]
    m2e = {mode: median([t["mouth_to_ear_s"] for t in ts]) for mode, ts in by_mode.items()}
    m2e_p90 = {mode: p90([t["mouth_to_ear_s"] for t in ts]) for mode, ts in by_mode.items()}
    part_medians = {mode: {p: median([t["parts_s"][p] for t in ts]) for p in PARTS} for mode, ts in by_mode.items()}
    stt_s = median([t["stt_s"] for t in turns if t["stt_s"] is not None])
    extra = {mode: sum(t["extra_billed_s"] for t in ts) for mode, ts in by_mode.items()}
    cancelled = {mode: sum(t["cancelled_speculations"] for t in ts) for mode, ts in by_mode.items()}
    # What is heard: each (question, run) through "on" against the same through "off".
    pairs = [(on, off) for on in by_mode["on"] for off in by_mode["off"]
             if (on["question"], on["run"]) == (off["question"], off["run"])]
    same_transcripts = sum(on["user"] == off["user"] for on, off in pairs)
    same_replies = sum(on["reply"] == off["reply"] for on, off in pairs)
    gain = m2e["off"] - m2e["on"]
    # The LLM's first sentence is the noisiest part on a loaded machine (0.3 s to 18 s in one run) and speculation
    # changes it least: mouth-to-ear without it shows the rest, where speculation acts, with less noise.
    without_llm = {mode: median([t["mouth_to_ear_s"] - t["parts_s"]["LLM to first sentence"] for t in ts])
                   for mode, ts in by_mode.items()}
    head_start = {mode: 0.0 - median([t["latency"]["started_s"] for t in ts]) + 0.0
                  for mode, ts in by_mode.items()}
    # The waterfall: the off and on turns of the first question's run closest to the median.
    first = QUESTIONS[0]
    pick = min((t for t in by_mode["on"] if t["question"] == first),
               key=lambda t: abs(t["mouth_to_ear_s"] - m2e["on"]))
    partner = next(t for t in by_mode["off"] if (t["question"], t["run"]) == (first, pick["run"]))
    png = draw_call({"speculation off": _waterfall_turn(partner), "speculation on": _waterfall_turn(pick)},
                    out / "phone_waterfall.png",
                    f"One call turn: '{first}' -> {pick['reply']!r} (server's stage times, on the caller's clock)")
    def pause(mode: str) -> Any:
        return "-" if mode == "off" else SHORT_PAUSE_S if "pause" in mode else DEFAULT_PAUSE_S

    table = md_table(
        ["speculation", "end-of-turn silence s", "pause s", "mouth-to-ear median s", "p90 s",
         *[f"{p} s" for p in PARTS], "cancelled speculations", "extra billed s"],
        [[mode, ts[0]["latency"]["end_silence_s"], pause(mode), m2e[mode], m2e_p90[mode],
          *[part_medians[mode][p] for p in PARTS], cancelled[mode], extra[mode]] for mode, ts in by_mode.items()],
    )
    table += "\n\n" + md_table(
        ["speculation", "mouth-to-ear without the LLM's first sentence, median s", "turn started before its end s"],
        [[mode, without_llm[mode], head_start[mode]] for mode in MODES],
    )
    table += "\n\n" + md_table(
        ["question", *[f"{mode} s" for mode in MODES]],
        [[q, *[median([t["mouth_to_ear_s"] for t in by_mode[mode] if t["question"] == q]) for mode in MODES]]
         for q in dict.fromkeys(t["question"] for t in turns)],
    )
    endpoints_table, endpoints = _endpoints_report(turns)
    table += "\n\n" + endpoints_table
    table += (f"\n\nMouth-to-ear: caller's last voiced frame sent -> first reply media frame received (medians of "
              f"{len(by_mode['off'])} calls a mode, {runs} run(s) of {len(by_mode['off']) // runs} questions, the "
              f"modes interleaved). Speculation on saves {gain:.2f} s against the off mode; median STT job "
              f"{stt_s:.2f} s. Same transcript on/off in {same_transcripts}/{len(pairs)} pairs, same reply in "
              f"{same_replies}/{len(pairs)}. Parts are medians one by one (they need not add up to the median). "
              f"Timings move with whatever else runs on the machine. Waterfall: `{png.name}`.")
    payload = {
        "quick": quick, "runs": runs, "questions": list(dict.fromkeys(t["question"] for t in turns)),
        "pause_inside_s": PAUSE_INSIDE_S,
        # "queue_modelled" is modelled (a queue delay serve-local adds), not measured on RunPod.
        "mouth_to_ear_s": {"on": m2e["on"], "off": m2e["off"], "direct": endpoints["mouth_to_ear_s"]["direct"],
                           "queue_modelled": endpoints["mouth_to_ear_s"]["queue_modelled"],
                           **turn_taking["mouth_to_ear_s"]},
        "endpoints": endpoints,
        "mouth_to_ear_p90_s": {"on": m2e_p90["on"], "off": m2e_p90["off"]},
        "short_end_silence": {"end_silence_s": SHORT_END_SILENCE_S, "speculation": True,
                              "mouth_to_ear_s": m2e[short], "mouth_to_ear_p90_s": m2e_p90[short]},
        "gain_s": gain, "stt_s": stt_s, "gain_at_least_stt": gain >= stt_s,
        "speculation_extra_billed_s": extra["on"],
        "speculation_extra_billed_short_s": extra[short],
        "short_pause": {"pause_s": SHORT_PAUSE_S, "mouth_to_ear_s": m2e[list(MODES)[3]],
                        "mouth_to_ear_p90_s": m2e_p90[list(MODES)[3]],
                        "extra_billed_s": extra[list(MODES)[3]]},
        "cancelled_speculations": cancelled,
        "parts_s": part_medians,
        "mouth_to_ear_without_llm_s": without_llm, "head_start_s": head_start,
        "same_transcripts": f"{same_transcripts}/{len(pairs)}", "same_replies": f"{same_replies}/{len(pairs)}",
        "turns": turns, "waterfall": png.name,
    }
    payload.update(_turn_keys(turn_taking))
    write_results("phone", payload, f"{table}\n\n{TURNS_HEADING}\n\n{phone_turns.report(turn_taking)}", out)
    return payload


TURNS_HEADING = "## Turn-taking: smart against silence (issue 28)"


def _turn_keys(result: dict[str, Any]) -> dict[str, Any]:
    """phone.json's keys for the turn-taking section: ``mouth_to_ear_s.smart``/``.silence`` go in with the others."""
    summary = {key: value for key, value in result.items() if key != "rows"}
    return {"mouth_to_ear_s_turns": result["mouth_to_ear_s"], "one_turn_share": result["one_turn_share"],
            "backchannel_kept_share": result["backchannel_kept_share"], "turn_taking": summary,
            "turn_taking_rows": result["rows"]}


def _merge_turns(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """``--turns-only``: put the turn-taking section into the phone results already there (or alone)."""
    path = out / "phone.json"
    payload = json.loads(path.read_text()) if path.exists() else {"mouth_to_ear_s": {}}
    # The file's date and device become this run's; the sections kept say where and when they were measured.
    if "date" in payload:
        payload["other_sections_measured"] = f"{payload.pop('device', '?')}, {payload.pop('date')}"
    payload.pop("benchmark", None)
    payload.update(_turn_keys(result))
    payload["mouth_to_ear_s"].update(result["mouth_to_ear_s"])
    previous = (out / "phone.md").read_text() if (out / "phone.md").exists() else ""
    kept = previous.split(TURNS_HEADING)[0].strip()  # with its own "Measured on" line
    table = f"{kept}\n\n{TURNS_HEADING}\n\n{phone_turns.report(result)}".strip()
    write_results("phone", payload, table, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    def options(parser: Any) -> None:
        parser.add_argument("--turns-only", action="store_true",
                            help="only the turn-taking section (smart against silence), merged into phone.json")

    run_cli(run, __doc__, argv, default_runs=5, quick_help="3 runs (the turn-taking section: 1)", options=options)


if __name__ == "__main__":
    main()
