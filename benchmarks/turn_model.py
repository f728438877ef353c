"""The end-of-turn pieces alone, no call: Smart Turn v3.2's probability at a short pause, the text rule on Whisper's
transcript of the same audio, their combined decision, and the backchannel classifier.

``python -m benchmarks.turn_model [--quick] [--runs N]``. The utterances of ``benchmarks.utterances`` (Piper voice)
go through Silero VAD's turn detector (``voicepod.phone.vad``) as a call's audio would, as 8 kHz mu-law (a phone)
and 16 kHz PCM16 (the browser page); at each :class:`~voicepod.phone.vad.Pause` (silence of a budget: 0.1 to 0.5 s)
the model reads the pause's audio and Whisper (tiny.en and base, as the STT worker transcribes a phone turn)
transcribes it. A pause before the utterance's end that is called done is a false cut-off (eot-bench's measure);
the pause after its end called not done is a late end (the call would wait longer and ask again). The unfinished
utterances are spoken both with a clause-final comma before their 0.7 s pause (``hesitation``) and as a sentence
of their own (``trailing off``). Decision time is the model's (features and ONNX, one thread) per call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import md_table, median, run_cli, write_results

BUDGETS = (0.1, 0.2, 0.3, 0.5)
MAIN_BUDGET = 0.2  # Pipecat's VAD stop before it asks the model; our speculation's pause
LINES = {"mulaw": ("8 kHz mu-law", 8000), "pcm16": ("16 kHz", 16000)}
STT = ("tiny.en", "base")
PREFIX_S = 0.5  # how much of an interjection the classifier is measured on besides the whole


def pauses(clip: Any, encoding: str, budget: float) -> list[tuple[float, bytes]]:
    """Each pause of ``budget`` seconds the turn detector reports on ``clip`` (with 1 s of silence after it), as
    (seconds into the clip when reported, the pause's audio in the line's format)."""
    from voicepod.phone.vad import Pause, SileroVad, TurnDetector, TurnSettings

    rate = LINES[encoding][1]
    data = clip.mulaw(1.0) if encoding == "mulaw" else clip.pcm16(rate, 1.0)
    width = 1 if encoding == "mulaw" else 2
    detector = TurnDetector(TurnSettings(pause_s=budget, end_silence_s=30.0), SileroVad(rate), encoding, rate)
    frame = rate * width // 50  # 20 ms, as a line delivers it
    found = []
    for start in range(0, len(data), frame):
        for event in detector.feed(data[start:start + frame]):
            if isinstance(event, Pause):
                found.append(((start + frame) / (rate * width), event.audio))
    return found


def score_pauses(model: Any, whispers: dict[str, Any], clips: list[Any], variant: str,
                 budgets: tuple[float, ...]) -> tuple[list[dict[str, Any]], list[float]]:
    """A row per pause: the model's probability and each Whisper's transcript with the text rule's verdict."""
    from voicepod.phone.turn_model import line_audio_16k
    from voicepod.phone.turn_text import read_transcript

    from benchmarks.phone_stt import transcribe

    rows, decision_s = [], []
    for encoding, (line, rate) in LINES.items():
        for budget in budgets:
            if encoding == "pcm16" and budget != MAIN_BUDGET:
                continue  # the browser's line at the main budget only
            for clip in clips:
                for at, audio in pauses(clip, encoding, budget):
                    started = time.perf_counter()
                    probability = model.probability(line_audio_16k(audio, encoding, rate))
                    decision_s.append(time.perf_counter() - started)
                    u = clip.utterance
                    row = {"variant": variant, "line": line, "budget_s": budget, "kind": u.kind, "text": u.text,
                           "said": f"{u.before} ... {u.after}" if u.before else u.text,
                           "before_is_sentence": u.before_is_sentence, "at_s": at, "final": at > clip.speech_end_s,
                           "probability": probability, "transcripts": {}, "unfinished": {}}
                    for name, whisper in whispers.items():
                        heard = transcribe(whisper, audio, encoding, rate)
                        evidence = read_transcript(heard)
                        row["transcripts"][name] = heard
                        row["unfinished"][name] = [evidence.unfinished, evidence.confidence, evidence.reason]
                    rows.append(row)
    return rows, decision_s


def decisions(rows: list[dict[str, Any]], stt: str | None) -> list[bool]:
    """The combined decision at each row's pause: done or not (``stt`` None: the model alone)."""
    from voicepod.phone.end_of_turn import decide
    from voicepod.phone.turn_text import TextEvidence

    done = []
    for row in rows:
        text = TextEvidence(*row["unfinished"][stt]) if stt else None
        done.append(decide(row["probability"], text).done)
    return done


def outcomes(rows: list[dict[str, Any]], stt: str | None) -> dict[str, Any]:
    """Per utterance kind: the share of utterances cut off (a pause before the end called done), and of those
    not cut off, the share ended on time (the pause after the end called done); the rest end late."""
    verdicts = decisions(rows, stt)
    by_clip: dict[str, list[tuple[bool, bool]]] = {}
    for row, done in zip(rows, verdicts, strict=True):
        by_clip.setdefault(row["said"], []).append((row["final"], done))
    result: dict[str, Any] = {}
    for kind in ("complete", "unfinished"):
        texts = {r["said"] for r in rows if r["kind"] == kind}
        cut = [t for t in texts if any(done and not final for final, done in by_clip.get(t, []))]
        on_time = [t for t in texts if t not in cut and any(done and final for final, done in by_clip.get(t, []))]
        result[kind] = {"utterances": len(texts), "cut_off": len(cut), "on_time": len(on_time),
                        "late": len(texts) - len(cut) - len(on_time), "cut_off_texts": sorted(cut)}
    sentences = {r["said"] for r in rows if r["before_is_sentence"]}
    result["unfinished"]["cut_off_where_words_so_far_are_a_sentence"] = len(sentences & set(
        result["unfinished"]["cut_off_texts"]))
    result["one_turn_share"] = 1 - result["unfinished"]["cut_off"] / max(1, result["unfinished"]["utterances"])
    return result


def interjections(whispers: dict[str, Any], clips: list[Any]) -> list[dict[str, Any]]:
    """The classifier on each backchannel and interruption: on Whisper's transcript of the whole of it and of its
    first :data:`PREFIX_S` of speech (what is heard that soon), both as 8 kHz mu-law."""
    from voicepod.audio import MULAW_RATE
    from voicepod.phone.backchannel import classify_interjection

    from benchmarks.phone_stt import transcribe
    from benchmarks.utterances import LEAD_S

    rows = []
    for clip in clips:
        whole = clip.mulaw(0.3)
        prefix = whole[:int((LEAD_S + PREFIX_S) * MULAW_RATE)] + b"\xff" * int(0.3 * MULAW_RATE)
        for name, whisper in whispers.items():
            for part, audio in (("whole", whole), (f"first {PREFIX_S} s", prefix)):
                heard = transcribe(whisper, audio)
                verdict = classify_interjection(heard)
                rows.append({"kind": clip.utterance.kind, "text": clip.utterance.text, "stt": name, "part": part,
                             "heard": heard, "backchannel": verdict.backchannel, "reason": verdict.reason,
                             "right": verdict.backchannel == (clip.utterance.kind == "backchannel")})
    return rows


def run(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    from voicepod.phone.turn_model import TurnModel

    from benchmarks.phone_stt import load_whisper
    from benchmarks.utterances import BACKCHANNEL, INTERRUPTION, spoken_set

    model = TurnModel.load()
    whispers = {name: load_whisper(name) for name in STT}
    budgets = (MAIN_BUDGET,) if quick else BUDGETS
    rows, decision_s = [], []
    for variant, trailing_off in (("hesitation", False), ("trailing off", True)):
        clips = [c for c in spoken_set(trailing_off=trailing_off) if c.utterance.kind in ("complete", "unfinished")]
        if variant == "trailing off":
            clips = [c for c in clips if c.utterance.kind == "unfinished"]  # the complete ones are the same
        scored, seconds = score_pauses(model, whispers, clips, variant, budgets)
        rows += scored
        decision_s += seconds
    spoken = spoken_set()
    interjection_rows = interjections(whispers, [c for c in spoken if c.utterance.kind in (BACKCHANNEL,
                                                                                             INTERRUPTION)])
    timing = _timing(model, spoken[0], runs)
    return _report(rows, interjection_rows, decision_s, timing, quick, out)


def _timing(model: Any, clip: Any, runs: int) -> dict[str, float]:
    """Median seconds of the model's parts on one 8 s window, over ``runs`` x 20 calls."""
    from voicepod.phone.turn_model import line_audio_16k, model_input
    from voicepod.phone.turn_text import read_transcript

    samples = line_audio_16k(clip.mulaw(0.2), "mulaw", 8000)
    parts: dict[str, list[float]] = {"features": [], "probability": [], "text rule": []}
    for _ in range(runs * 20):
        for name, call in (("features", lambda: model_input(samples)),
                           ("probability", lambda: model.probability(samples)),
                           ("text rule", lambda: read_transcript("I'd like to book a table for"))):
            started = time.perf_counter()
            call()
            parts[name].append(time.perf_counter() - started)
    return {name: median(values) for name, values in parts.items()}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Outcomes per variant, line and budget, for the model alone and combined with each Whisper's transcript."""
    summary: dict[str, Any] = {}
    keys = dict.fromkeys((r["variant"], r["line"], r["budget_s"]) for r in rows)
    for variant, line, budget in keys:
        mine = [r for r in rows if (r["variant"], r["line"], r["budget_s"]) == (variant, line, budget)]
        if variant == "trailing off":  # the complete questions are scored once, under "hesitation"
            mine += [r for r in rows if r["kind"] == "complete" and (r["line"], r["budget_s"]) == (line, budget)]
        summary[f"{variant} | {line} | {budget}"] = {
            "model alone": outcomes(mine, None), **{f"model + text ({s})": outcomes(mine, s) for s in STT}}
    return summary


def _report(rows: list[dict[str, Any]], interjection_rows: list[dict[str, Any]], decision_s: list[float],
            timing: dict[str, float], quick: bool, out: Path) -> dict[str, Any]:
    summary = _summary(rows)
    table = md_table(
        ["unfinished said as", "line", "silence budget s", "decision", "complete: done on time", "complete: cut off",
         "unfinished: one turn", "unfinished: cut off", "of them, words so far a sentence"],
        [[*key.split(" | "), how, f"{o['complete']['on_time']}/{o['complete']['utterances']}",
          f"{o['complete']['cut_off']}/{o['complete']['utterances']}",
          f"{o['unfinished']['utterances'] - o['unfinished']['cut_off']}/{o['unfinished']['utterances']}",
          f"{o['unfinished']['cut_off']}/{o['unfinished']['utterances']}",
          o["unfinished"]["cut_off_where_words_so_far_are_a_sentence"]]
         for key, by_how in summary.items() for how, o in by_how.items()])
    table += "\n\n" + _probability_table(rows)
    table += "\n\n" + _interjection_table(interjection_rows)
    table += (f"\n\nDecision time (features + ONNX, one thread, an 8 s window): median "
              f"{timing['probability'] * 1000:.1f} ms (of which features {timing['features'] * 1000:.1f} ms); over "
              f"all {len(decision_s)} decisions above median {median(decision_s) * 1000:.1f} ms, p90 "
              f"{np.percentile(decision_s, 90) * 1000:.1f} ms; "
              f"the text rule {timing['text rule'] * 1e6:.0f} us. Measured on a machine shared with other work.")
    headline = summary[f"hesitation | 8 kHz mu-law | {MAIN_BUDGET}"]
    payload = {"quick": quick, "budgets_s": list(dict.fromkeys(r["budget_s"] for r in rows)),
               "decision_ms": {"median": median(decision_s) * 1000,
                               "p90": float(np.percentile(decision_s, 90)) * 1000,
                               "features_median": timing["features"] * 1000},
               "text_rule_us": timing["text rule"] * 1e6,
               "one_turn_share": {how: o["one_turn_share"] for how, o in headline.items()},
               "summary": summary, "pauses": rows, "interjections": interjection_rows}
    write_results("turn_model", payload, table, out)
    return payload


def _probability_table(rows: list[dict[str, Any]]) -> str:
    """The model's probability at the main budget: at the end of each complete question, at the pause of each
    unfinished utterance (the highest, where there are several before its end)."""
    cells = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for line in dict.fromkeys(r["line"] for r in rows):
            mine = [r for r in rows if (r["variant"], r["line"], r["budget_s"]) == (variant, line, MAIN_BUDGET)]
            complete = [r["probability"] for r in mine if r["kind"] == "complete" and r["final"]]
            unfinished: dict[str, float] = {}
            for r in mine:
                if r["kind"] == "unfinished" and not r["final"]:
                    unfinished[r["said"]] = max(unfinished.get(r["said"], 0.0), r["probability"])
            if variant == "hesitation" and complete:
                cells.append(["complete questions (end)", line, f"{sum(p > 0.5 for p in complete)}/{len(complete)}",
                              median(complete), min(complete)])
            cells.append([f"unfinished, {variant} (pause)", line,
                          f"{sum(p > 0.5 for p in unfinished.values())}/{len(unfinished)}",
                          median(list(unfinished.values())), max(unfinished.values())])
    return md_table(["utterances", "line", f"p > 0.5 at a {MAIN_BUDGET} s pause", "median p", "min/max p"], cells)


def _interjection_table(rows: list[dict[str, Any]]) -> str:
    cells = []
    for stt in STT:
        for part in dict.fromkeys(r["part"] for r in rows):
            mine = [r for r in rows if (r["stt"], r["part"]) == (stt, part)]
            kept = [r for r in mine if r["kind"] == "backchannel"]
            cut = [r for r in mine if r["kind"] == "interruption"]
            cells.append([stt, part, f"{sum(r['backchannel'] for r in kept)}/{len(kept)}",
                          f"{sum(not r['backchannel'] for r in cut)}/{len(cut)}"])
    return md_table(["Whisper", "audio classified", "backchannels kept", "interruptions cut"], cells)


def main(argv: list[str] | None = None) -> None:
    run_cli(run, __doc__, argv, default_runs=3, quick_help=f"the {MAIN_BUDGET} s budget only")


if __name__ == "__main__":
    main()
