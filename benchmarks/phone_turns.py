"""Turn-taking on a call (issue 28): ``voicepod phone --turn-detector smart`` against ``silence``, on the caller
utterance set in the Piper voice (``benchmarks.utterances``), each said by a simulated Twilio caller in real time.

Four measurements, run by ``python -m benchmarks.phone`` (or alone: ``python -m benchmarks.phone --turns-only``):

- **Complete questions**: each asked of a smart and a silence (``--end-silence`` 0.55 s, speculation on) server,
  the two interleaved: mouth-to-ear (the caller's last voiced frame sent to the first reply frame received), the
  silence each waited for the end of the turn (the call record's ``end_of_turn.silence_s``), what ended it.
- **Unfinished utterances** (a 0.7 s pause at an unfinished point): one turn or two, on each detector; with smart, at
  each pause budget (``--pause``, the silence after which the turn model is asked: eot-bench's "silence budget"),
  the share cut off (the turn ended at the unfinished point), the share kept one turn (after the continuation takes
  a cut-off back), the share ended late (``--max-silence`` waited in full at the real end); whether the cut-off
  reply was ready before the caller went on (held back: without the hold it would have gone out).
- **Backchannels and interruptions over a reply**: a question with a long reply, and 1 s into its audio the
  interjection: a backchannel is kept when the line got no clear; an interruption is cut when one came, and the
  time to cut is from the start of its speech to the clear's arrival.
- **The cut length alone** (no call): how long each backchannel and interruption is to the call's VAD, fed as a
  line's 20 ms frames at several alignments, and for each cut length the share of backchannels under it and when
  interruptions reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np

from benchmarks import md_table, median

ARGS = ["--greeting", "", "--temperature", "0"]
SILENCE_ARGS = [*ARGS, "--turn-detector", "silence", "--speculate"]  # the old default, speculation on
# A question whose reply lasts long enough to talk over (several sentences), in the Piper voice too.
LONG_REPLY_QUESTION = "How do I make a cup of tea?"
LONG_REPLY_ARGS = ["--system-prompt", "Answer in four or five sentences.", "--max-tokens", "60"]
INTERJECT_AFTER_S = 1.0  # into the reply's audio
CUT_GOAL_S = 0.5
BUDGETS = (0.1, 0.2, 0.3, 0.5)
# The continuation's race, read off the complete questions the smart detector ended: a caller who goes on
# RESUME_S after their last word is heard by the VAD about VAD_ONSET_S later (its first speech window: 0.02-0.16 s,
# median 0.06 s, on the set) and counts as talking (SpeechStarted) SPEECH_STARTED_S after they resume (0.26-0.38 s,
# median 0.28 s). A reply whose first audio comes before the first is heard before they could go on; between the
# two, only the hold keeps it back.
RESUME_S, VAD_ONSET_S, SPEECH_STARTED_S = 0.7, 0.06, 0.28
CUT_LENGTHS = (0.3, 0.35, 0.4, 0.45, 0.5)
ALIGNMENTS = 6  # of the VAD's 32 ms windows against the speech, 40 samples (5 ms) apart


def _onset(caller: Any, clip: bytes) -> float:
    """When the speech of ``clip`` (mu-law, starting with the set's lead silence) began to be sent: the caller
    sends in real time, so its last frame went ``len(clip)`` after its first."""
    from benchmarks.utterances import LEAD_S

    return caller.speech_ended_at - len(clip) / 8000 + LEAD_S


async def _ask(phone: Any, clip: bytes, linger_s: float) -> tuple[float, dict[str, Any]]:
    """Say ``clip``; wait for the reply's first audio, then ``linger_s``; hang up. Returns mouth-to-ear and the
    record."""
    from voicepod.phone.caller import SimulatedCaller

    async with SimulatedCaller(phone.media_url) as caller:
        await caller.say(clip)
        mouth_to_ear = await caller.wait_for_audio(caller.speech_ended_at, 300)
        await asyncio.sleep(linger_s)
    return mouth_to_ear, phone.record(caller.call_sid)


async def _interject(phone: Any, question: bytes, clip: bytes) -> dict[str, Any]:
    """Ask ``question``, say ``clip`` :data:`INTERJECT_AFTER_S` into the reply's audio; what the line did."""
    from voicepod.phone.caller import SimulatedCaller

    async with SimulatedCaller(phone.media_url) as caller:
        await caller.say(question)
        first = caller.speech_ended_at + await caller.wait_for_audio(caller.speech_ended_at, 300)
        await asyncio.sleep(max(0.0, first + INTERJECT_AFTER_S - time.monotonic()))
        playing_at_start = caller.playing  # the reply had audio left to play when the interjection began
        await caller.say(clip)
        onset = _onset(caller, clip)
        playing = caller.playing  # and when it ended (a backchannel over a reply that was over proves nothing)
        await asyncio.sleep(3.0)  # the words, and a resume
        clears = [t - onset for t in caller.clears if t >= onset - 0.5]
    record = phone.record(caller.call_sid)
    [reply, *_] = record["turns"]
    return {"clears_s": clears, "playing_at_start": playing_at_start, "playing_at_end": playing,
            "interjections": record["interjections"],
            "turns": len(record["turns"]), "reply_interrupted": reply["interrupted"]}


def _turn_row(detector: str, clip: Any, mouth_to_ear: float, record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    turns = record["turns"]
    ends = [t["end_of_turn"] or {} for t in turns]
    return {"detector": detector, "text": clip.utterance.text, "kind": clip.utterance.kind,
            "before_is_sentence": clip.utterance.before_is_sentence, "mouth_to_ear_s": mouth_to_ear,
            "turns": len(turns), "users": [t["user"] for t in turns], "ended_by": [e.get("by") for e in ends],
            "silence_s": [e.get("silence_s") for e in ends], "probability": [e.get("probability") for e in ends],
            "text_verdict": [e.get("text") for e in ends], "continued": [e.get("continued", 0) for e in ends],
            "held": [c.get("held") for c in record["cancelled_speculations"] if c.get("continued")],
            "latency": turns[-1]["latency"] if turns else {}, **extra}


def measure(base_url: str, quick: bool, runs: int) -> dict[str, Any]:
    """Run the three call measurements over the serve-local at ``base_url``; the rows and summaries."""
    from benchmarks.utterances import COMPLETE, UNFINISHED, Utterance, of_kind, spoken_set
    from tests.phone_util import PhoneServer

    clips = spoken_set()
    [question] = spoken_set((Utterance(COMPLETE, LONG_REPLY_QUESTION),))
    budgets = (0.2,) if quick else BUDGETS
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        smart = {b: stack.enter_context(PhoneServer(base_url, [*ARGS, "--pause", str(b)])) for b in budgets}
        silence = stack.enter_context(PhoneServer(base_url, SILENCE_ARGS))
        talker = stack.enter_context(PhoneServer(base_url, [*ARGS, *LONG_REPLY_ARGS]))
        for phone in (*smart.values(), silence, talker):  # the first jobs carry the model loads
            asyncio.run(_ask(phone, clips[0].mulaw(), 0.2))
        for run in range(runs):
            for k, clip in enumerate(of_kind(clips, COMPLETE)):
                order = [("smart", smart[0.2]), ("silence", silence)][:: 1 if (run + k) % 2 else -1]
                for name, phone in order:
                    m2e, record = asyncio.run(_ask(phone, clip.mulaw(), 0.2))
                    rows.append(_turn_row(name, clip, m2e, record, run=run, budget=0.2))
                    print(f"{name:>8}  {m2e:5.2f} s  {clip.utterance.text}", flush=True)
        for clip in of_kind(clips, UNFINISHED):
            for name, phone, budget in [*(("smart", p, b) for b, p in smart.items()), ("silence", silence, None)]:
                m2e, record = asyncio.run(_ask(phone, clip.mulaw(), 1.5))
                rows.append(_turn_row(name, clip, m2e, record, budget=budget))
                print(f"{name:>8} {budget}  {len(record['turns'])} turn(s)  {clip.utterance.text}", flush=True)
        for clip in [c for c in clips if c.utterance.kind in ("backchannel", "interruption")]:
            result = asyncio.run(_interject(talker, question.mulaw(), clip.mulaw()))
            rows.append({"detector": "smart", "kind": clip.utterance.kind, "text": clip.utterance.text, **result})
            print(f"   over a reply: {clip.utterance.text!r}: clears {result['clears_s']}", flush=True)
    return {"rows": rows, **summarize(rows), "cut_lengths": cut_lengths(clips)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The shares and medians the issue asks for, from the rows of :func:`measure`."""
    complete = {d: [r for r in rows if r["kind"] == "complete" and r["detector"] == d] for d in ("smart", "silence")}
    m2e = {d: median([r["mouth_to_ear_s"] for r in rs]) for d, rs in complete.items()}
    waited = {d: median([_last(r, "silence_s") for r in rs if r["silence_s"]]) for d, rs in complete.items()}
    unfinished = _unfinished(rows)
    early = [r["mouth_to_ear_s"] for r in complete["smart"] if _last(r, "ended_by") == "smart"]
    backchannels = [r for r in rows if r["kind"] == "backchannel" and r["playing_at_end"]]
    interruptions = [r for r in rows if r["kind"] == "interruption" and r["playing_at_start"]]
    kept = [r for r in backchannels if not r["clears_s"]]
    resumed = [r for r in backchannels if r["clears_s"] and any(i["resumed"] for i in r["interjections"])]
    cut = [r for r in interruptions if r["clears_s"]]
    cut_s = [r["clears_s"][0] for r in cut]
    return {
        "mouth_to_ear_s": m2e, "end_of_turn_wait_s": waited,
        "smart_gain_s": m2e["silence"] - m2e["smart"],
        "complete_ended_by": {d: _count(_last(r, "ended_by") for r in rs) for d, rs in complete.items()},
        "unfinished": unfinished,
        "continuation_race": {
            "smart_ended_questions": len(early),
            "reply_before_the_caller_is_heard": sum(t < RESUME_S + VAD_ONSET_S for t in early),
            "reply_before_speech_started": sum(t < RESUME_S + SPEECH_STARTED_S for t in early)},
        "one_turn_share": unfinished["smart"][0.2]["one_turn_share"] if 0.2 in unfinished["smart"] else None,
        "backchannel_kept_share": len(kept) / len(backchannels) if backchannels else None,
        "backchannels": {"measured": len(backchannels), "kept": len(kept), "cut_and_resumed": len(resumed),
                         "reply_over_before": sum(r["kind"] == "backchannel" and not r["playing_at_end"]
                                                  for r in rows)},
        "interruptions": {"measured": len(interruptions), "cut": len(cut),
                          "cut_within_goal": sum(t <= CUT_GOAL_S for t in cut_s),
                          "time_to_cut_s": {"median": median(cut_s) if cut_s else None,
                                            "max": max(cut_s) if cut_s else None}},
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _last(row: dict[str, Any], key: str, default: Any = None) -> Any:
    """The call's last turn's ``key`` (a row lists one per turn), or ``default`` when it had no turn."""
    return row[key][-1] if row[key] else default


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def _share(rows: list[dict[str, Any]], test: Any) -> float:
    return sum(1 for r in rows if test(r)) / len(rows) if rows else float("nan")


def _cut_off(row: dict[str, Any]) -> bool:
    """The call ended the turn at the unfinished point: two turns, or an end taken back."""
    return row["turns"] > 1 or _last(row, "continued", 0) > 0


def _unfinished(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per detector and budget: one turn, cut off, late (the real end waited the longest silence), on all 12 and on
    the 9 whose words before the pause are no sentence."""
    grouped: dict[str, dict[Any, list[dict[str, Any]]]] = {"smart": {}, "silence": {}}
    for row in (r for r in rows if r["kind"] == "unfinished"):
        grouped[row["detector"]].setdefault(row["budget"], []).append(row)
    out: dict[str, Any] = {"smart": {}, "silence": {}}
    for detector, by_budget in grouped.items():
        for budget, rs in by_budget.items():
            genuine = [r for r in rs if not r["before_is_sentence"]]
            out[detector][budget] = {
                "utterances": len(rs), "one_turn_share": _share(rs, lambda r: r["turns"] == 1),
                "one_turn_share_unfinished_words": _share(genuine, lambda r: r["turns"] == 1),
                "cut_off_share": _share(rs, _cut_off), "cut_off_share_unfinished_words": _share(genuine, _cut_off),
                "late_share": _share(rs, lambda r: _last(r, "ended_by") == "max_silence"),
                "continued": sum(_last(r, "continued", 0) > 0 for r in rs),
                "continuations_held": sum(any(r["held"]) for r in rs),
                "two_turns": [r["text"] for r in rs if r["turns"] > 1],
            }
    return out


def cut_lengths(clips: list[Any]) -> dict[str, Any]:
    """For each cut length: the share of backchannels whose VAD speech stays under it and when (from the start of
    their speech) interruptions reach it, over :data:`ALIGNMENTS` alignments of the VAD's windows."""
    from voicepod.phone.vad import TurnDetector, TurnSettings

    from benchmarks.utterances import LEAD_S

    def trace(clip: Any, shift: int) -> list[tuple[float, float]]:
        data = b"\xff" * shift + clip.mulaw(1.0)
        detector = TurnDetector(TurnSettings(end_silence_s=1.0))
        out = []
        for i in range(0, len(data), 160):  # a line's 20 ms frames
            detector.feed(data[i:i + 160])
            out.append(((i + 160 - shift) / 8000 - LEAD_S, detector.speech_s))
        return out

    traces = {kind: [trace(c, 40 * a) for c in clips if c.utterance.kind == kind for a in range(ALIGNMENTS)]
              for kind in ("backchannel", "interruption")}
    longest = {c.utterance.text: max(s for _, s in trace(c, 0)) for c in clips
               if c.utterance.kind in ("backchannel", "interruption")}
    table = {}
    for length in CUT_LENGTHS:
        reach = [next(t for t, s in tr if s >= length) for tr in traces["interruption"]]
        table[str(length)] = {
            "backchannels_uncut_share": float(np.mean([max(s for _, s in tr) < length
                                                       for tr in traces["backchannel"]])),
            "interruptions_cut_median_s": median(reach), "interruptions_cut_max_s": max(reach),
            "interruptions_within_goal_share": float(np.mean([t <= CUT_GOAL_S for t in reach]))}
    return {"by_length": table, "vad_speech_s": longest}


def report(result: dict[str, Any]) -> str:
    """The markdown tables of :func:`measure`'s result."""
    m2e, waited = result["mouth_to_ear_s"], result["end_of_turn_wait_s"]
    text = md_table(["detector", "mouth-to-ear median s", "end-of-turn wait median s", "turns ended by"],
                    [[d, m2e[d], waited[d], result["complete_ended_by"][d]] for d in ("smart", "silence")])
    rows = [[d, b, u["utterances"], u["one_turn_share"], u["one_turn_share_unfinished_words"], u["cut_off_share"],
             u["cut_off_share_unfinished_words"], u["late_share"], f"{u['continued']} ({u['continuations_held']})"]
            for d in ("smart", "silence") for b, u in result["unfinished"][d].items()]
    text += "\n\n" + md_table(["detector", "pause budget s", "utterances", "one turn", "one turn (9 unfinished words)",
                               "cut off", "cut off (9 unfinished words)", "late end", "taken back (reply held)"],
                              rows)
    race = result["continuation_race"]
    text += (f"\n\nThe continuation's race (the {race['smart_ended_questions']} complete questions smart ended): "
             f"the reply's first audio came before a caller who goes on {RESUME_S} s after their last word is heard "
             f"in {race['reply_before_the_caller_is_heard']} (no continuation possible), before they count as talking "
             f"in {race['reply_before_speech_started']} (the hold keeps those back).")
    b, i = result["backchannels"], result["interruptions"]
    cut = i["time_to_cut_s"]
    text += (f"\n\nOver a reply (smart): backchannels kept uncut {b['kept']}/{b['measured']} "
             f"({b['cut_and_resumed']} cut and resumed; {b['reply_over_before']} not measured: the reply was over); "
             f"interruptions cut {i['cut']}/{i['measured']}, {i['cut_within_goal']} within {CUT_GOAL_S} s "
             f"(time to cut median {_seconds(cut['median'])}, max {_seconds(cut['max'])}).")
    lengths = result["cut_lengths"]["by_length"]
    text += "\n\n" + md_table(
        ["cut length s", "backchannels uncut", "interruptions cut at, median s", "max s", f"within {CUT_GOAL_S} s"],
        [[k, v["backchannels_uncut_share"], v["interruptions_cut_median_s"], v["interruptions_cut_max_s"],
          v["interruptions_within_goal_share"]] for k, v in lengths.items()])
    return text
