"""Simulated phone traffic over ``voicepod phone``: callers who ask spoken questions, pause mid-question, barge in
and hang up or drop, and the check that every question was answered, to its own call.

Used by the phone soak (``benchmarks/soak.py --phone``), the phone capacity benchmark
(``benchmarks/phone_capacity.py``) and the phone reliability tests. A caller is the project's
:class:`~voicepod.phone.caller.SimulatedCaller` (real-time 20 ms mu-law frames, marks echoed as the audio plays);
a question is espeak-ng speech cut at its last voiced sample, so that mouth-to-ear starts where the caller stopped.

What a caller heard is checked byte for byte: the server sends each TTS job's mu-law audio as it came, a sentence's
audio then its mark (``"<turn>:<sentence>"``), so the bytes between two marks (or before a clear, or the hang-up)
must be the audio of one of the TTS jobs that the call's own record lists for that turn (a prefix, where a clear or
the hang-up cut it). Audio from another call's jobs, or from nowhere, is a crossed line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Questions Whisper tiny.en hears well over 8 kHz mu-law (tests/test_phone.py uses them for that reason).
QUESTIONS = ("How do I make a cup of tea?", "Where is the nearest train station?", "What is the capital of France?",
             "What can you tell me about dogs?")
# A question with a pause inside it (past the speculation's 0.2 s, short of the 0.55 s end of turn): the turn
# started at the pause is cancelled when the caller goes on (benchmarks/phone.py measures what that costs).
PAUSED = ("What is the capital of France?", "And what about Germany?")
PAUSE_INSIDE_S = 0.35
# What a step of a call does: ask and wait for the reply to end, ask with a pause inside, or ask and cut in over
# the reply with the next question.
PLAIN, PAUSED_STEP, BARGE_IN = "plain", "paused", "barge_in"
# The phone server's settings for simulated traffic: replies of two or three sentences, so that a barge-in has
# something to cut and a reply streams while the LLM writes.
PHONE_ARGS = ["--system-prompt", "Answer in two or three short sentences.", "--max-tokens", "48",
              "--temperature", "0"]
SENTENCE_TIMEOUT_S = 300.0  # the most a reply's first audio may take (a loaded 2-core machine is slow, not stuck)


@dataclass
class Clips:
    """Each question's text (what the turn's transcript is checked against) and its mu-law audio."""

    audio: dict[str, bytes]

    @classmethod
    def spoken(cls) -> Clips:
        from voicepod.audio import MULAW_RATE

        from tests.phone_util import spoken_mulaw, voiced

        audio = {q: voiced(spoken_mulaw(q)) for q in QUESTIONS}
        audio[" ".join(PAUSED)] = (voiced(spoken_mulaw(PAUSED[0])) + b"\xff" * int(MULAW_RATE * PAUSE_INSIDE_S)
                                   + voiced(spoken_mulaw(PAUSED[1])))
        return cls(audio)

    def plain(self, rng: random.Random) -> str:
        return rng.choice(QUESTIONS)

    @property
    def paused(self) -> str:
        return " ".join(PAUSED)


@dataclass
class Asked:
    """One question of a call: its text, how it was asked (``plain``, ``paused``, ``barge_in``: the next question
    cut in over its reply), and seconds from its last voiced frame to the first reply audio (None: none came)."""

    text: str
    step: str
    mouth_to_ear_s: float | None = None


@dataclass
class CallOutcome:
    """What one caller did and got. ``arrivals``: the caller's marks and clears with the audio bytes before each."""

    call_sid: str
    asked: list[Asked] = field(default_factory=list)
    received: bytes = b""
    arrivals: list[tuple[str | None, int]] = field(default_factory=list)
    hang_up: str = "stop"
    error: str | None = None


def plan(rng: random.Random, questions: int) -> list[str]:
    """``questions`` steps of a call: mostly plain questions, some with a pause inside, some cut in on (never the
    last: a barge-in needs a next question)."""
    steps = []
    for i in range(questions):
        last = i == questions - 1
        steps.append(rng.choices([PLAIN, PAUSED_STEP, BARGE_IN], weights=[3, 1, 0 if last else 1])[0])
    return steps


async def place_call(media_url: str, clips: Clips, steps: Sequence[str], rng: random.Random, *,
                     greeting: bool = True, hang_up: str = "stop", quiet_s: float = 2.0,
                     think_s: tuple[float, float] = (0.3, 1.5)) -> CallOutcome:
    """One call: wait for the greeting (when there is one), then each of ``steps``, then hang up (``stop``, as
    Twilio does) or ``drop`` the connection. ``quiet_s``: silence that tells the caller a reply is over;
    ``think_s``: the range of the caller's pause before each question. Never raises: a call that broke says so in
    its outcome's ``error``."""
    from voicepod.phone.caller import SimulatedCaller

    caller = SimulatedCaller(media_url)
    outcome = CallOutcome(caller.call_sid, hang_up=hang_up)
    try:
        await caller.connect()
        if greeting:
            await caller.wait_for_audio(0, SENTENCE_TIMEOUT_S)
            await caller.wait_until_quiet(quiet_s, SENTENCE_TIMEOUT_S)
        for step in steps:
            await asyncio.sleep(rng.uniform(*think_s))
            await _ask(caller, clips, step, rng, outcome, quiet_s)
    except Exception as exc:  # noqa: BLE001 - the soak counts a broken call; it goes on with the others
        outcome.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        with contextlib.suppress(Exception):
            await (caller.drop() if hang_up == "drop" else caller.hang_up())
        outcome.received, outcome.arrivals = bytes(caller.received), list(caller.arrivals)
    return outcome


async def _ask(caller: Any, clips: Clips, step: str, rng: random.Random, outcome: CallOutcome,
               quiet_s: float) -> None:
    text = clips.paused if step == PAUSED_STEP else clips.plain(rng)
    asked = Asked(text, step)
    outcome.asked.append(asked)
    await caller.say(clips.audio[text])
    asked.mouth_to_ear_s = await caller.wait_for_audio(caller.speech_ended_at, SENTENCE_TIMEOUT_S)
    if step == BARGE_IN:
        await asyncio.sleep(rng.uniform(0.3, 1.0))  # into the reply; the next question cuts in
    else:
        await caller.wait_until_quiet(quiet_s, SENTENCE_TIMEOUT_S)


# --- the check ----------------------------------------------------------------------------------------------------


@dataclass
class CallCheck:
    """A call's outcome against its record: questions ``asked``, ``answered`` (a turn whose transcript is the
    question, with reply audio that came from the turn's own TTS jobs), ``lost`` (the others, with why), the bytes
    that matched no TTS job of their turn (``crossed_bytes``), and what else the call did: ``interrupted_turns``
    (the caller spoke over the reply or hung up during it), ``clears`` (barge-ins the server acted on: it cleared
    the line), speculations cancelled because the caller went on."""

    asked: int = 0
    answered: int = 0
    lost: list[str] = field(default_factory=list)
    crossed_bytes: int = 0
    verified_bytes: int = 0
    turns: int = 0
    interrupted_turns: int = 0
    clears: int = 0
    cancelled_speculations: int = 0
    mouth_to_ear_s: list[float] = field(default_factory=list)


async def tts_audio(endpoint: Any, job_ids: Sequence[str]) -> list[bytes]:
    """Each TTS job's audio, as the endpoint kept its output (the chunks in ``seq`` order)."""
    audio = []
    for job_id in job_ids:
        output = (await endpoint.job(job_id).status()).get("output") or []
        audio.append(b"".join(base64.b64decode(c["audio"]) for c in sorted(output, key=lambda c: c["seq"])
                              if c.get("type") == "audio"))
    return audio


def segments(outcome: CallOutcome) -> list[tuple[int, int | None, bytes, bool]]:
    """The received audio cut at marks and clears: ``(turn, sentence, bytes, whole)`` in order. ``sentence`` is
    None for audio a clear or the hang-up cut short (the sentence after the last mark, of that turn or the next);
    ``whole`` is False there."""
    cut: list[tuple[int, int | None, bytes, bool]] = []
    start, turn = 0, 0
    for name, offset in outcome.arrivals:
        piece = outcome.received[start:offset]
        if name is None:
            if piece:
                cut.append((turn, None, piece, False))
        else:
            number, _, sentence = name.partition(":")
            turn = int(number)
            cut.append((turn, int(sentence), piece, True))
        start = offset
    if tail := outcome.received[start:]:
        cut.append((turn, None, tail, False))
    return cut


async def check_call(endpoints: dict[str, Any], record: dict[str, Any], outcome: CallOutcome,
                     match: Any) -> CallCheck:
    """Check ``outcome`` against the call's ``record``; ``endpoints``: the stages' endpoints (their job outputs);
    ``match(question, transcript)``: whether a transcript is the question (Whisper may miss a word)."""
    turns = record["turns"]
    check = CallCheck(asked=len(outcome.asked), turns=len(turns),
                      interrupted_turns=sum(t["interrupted"] for t in turns),
                      clears=sum(name is None for name, _ in outcome.arrivals),
                      cancelled_speculations=len(record["cancelled_speculations"]))
    audio = {n: await tts_audio(endpoints["tts"], t["jobs"].get("tts", [])) for n, t in enumerate(turns, 1)}
    verified: set[int] = set()  # turns with reply audio from their own jobs
    for turn, _sentence, piece, whole in segments(outcome):
        # A whole sentence is one of its turn's jobs; a cut one begins one of its turn's or the next turn's.
        owners = [turn] if whole else [turn, turn + 1]
        owner = next((t for t in owners if any(a == piece if whole else a.startswith(piece)
                                               for a in audio.get(t, []))), None)
        if owner is not None:
            verified.add(owner)
            check.verified_bytes += len(piece)
        elif not any(t == 0 or (t <= len(turns) and turns[t - 1]["error"]) for t in owners):
            # Neither the greeting (its job is not in the record) nor a failed turn's apology (said outside the
            # turn's jobs): audio this call's jobs did not make.
            check.crossed_bytes += len(piece)
    _match_questions(check, outcome, turns, verified, match)
    return check


def _match_questions(check: CallCheck, outcome: CallOutcome, turns: list[dict[str, Any]], verified: set[int],
                     match: Any) -> None:
    """Each question against the next turn whose transcript is it, in order."""
    next_turn = 0
    for asked in outcome.asked:
        found = next((n for n in range(next_turn, len(turns)) if match(asked.text, turns[n]["user"])), None)
        if asked.mouth_to_ear_s is None:
            check.lost.append(f"{outcome.call_sid}: no reply to {asked.text!r} ({outcome.error})")
        elif found is None:
            heard = [t["user"] for t in turns[next_turn:]]
            check.lost.append(f"{outcome.call_sid}: no turn heard {asked.text!r} (transcripts {heard})")
        elif found + 1 not in verified:
            check.lost.append(f"{outcome.call_sid}: turn {found + 1} ({asked.text!r}) played no audio of its own "
                              f"jobs (error {turns[found]['error']})")
        else:
            check.answered += 1
            check.mouth_to_ear_s.append(asked.mouth_to_ear_s)
        if found is not None:
            next_turn = found + 1
    if check.crossed_bytes:
        check.lost.append(f"{outcome.call_sid}: {check.crossed_bytes} bytes heard that no TTS job of the call made")


async def call_and_check(phone: Any, endpoints: dict[str, Any], clips: Clips, steps: Sequence[str],
                         rng: random.Random, **options: Any) -> tuple[CallOutcome, CallCheck]:
    """:func:`place_call` on ``phone`` (a ``tests.phone_util.PhoneServer``), then :func:`check_call` against its
    record; ``options`` go to :func:`place_call`. A call without a record, or whose jobs cannot be read, has lost
    all its questions."""
    outcome = await place_call(phone.media_url, clips, steps, rng, **options)
    try:
        record = await asyncio.to_thread(phone.record, outcome.call_sid, 60)
        return outcome, await check_call(endpoints, record, outcome, transcript_matches)
    except Exception as exc:  # noqa: BLE001 - counted, and the traffic goes on
        return outcome, CallCheck(asked=len(outcome.asked), lost=[f"{outcome.call_sid}: not checked: {exc!r}"[:300]])


def transcript_matches(question: str, transcript: str) -> bool:
    """Whether Whisper's ``transcript`` of the caller's turn is ``question``: closer to it than to any other
    question the traffic asks, and within a word error rate of 0.75. Telephone audio of synthetic speech loses words
    (Whisper tiny.en heard the paused question as "What is the capital and friends and what I'm out here many?",
    0.6, in every one of 4 soak calls that asked it); a transcript of another call's question is closer to that one."""
    from tests.speech import wer

    if not transcript.strip():
        return False
    own = wer(question, transcript)
    others = [wer(q, transcript) for q in (*QUESTIONS, " ".join(PAUSED)) if q != question]
    return own <= 0.75 and own < min(others)


def now() -> float:
    return time.monotonic()
