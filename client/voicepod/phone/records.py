"""Call records: what was said on a call, turn by turn, with each turn's latency, written as
``DIR/<callSid>.json`` when the call ends."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..events import TurnMetrics

# Twilio's call SIDs are "CA" and 32 hex digits; anything else is kept out of file names (no path tricks).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class EndOfTurn:
    """What ended a caller's turn. ``by``: ``smart`` (the turn model and the transcript said done), ``silence``
    (the silence detector's ``--end-silence``), ``max_silence`` (the smart detector waited its longest), or
    ``max_utterance`` (the turn reached its longest). ``silence_s``: the silence the caller had left when the
    turn ended (what they waited for it to end, before the reply). ``probability``: the turn model's that they were
    done, at the turn's last pause (None: not asked). ``text``: the transcript's verdict there (the text rule's
    reason; None: not read, the model had said not done). ``continued``: how many times the smart detector ended
    this turn early and the caller went on before its reply was heard (those ends were taken back)."""

    by: str
    silence_s: float
    probability: float | None = None
    text: str | None = None
    continued: int = 0


@dataclass
class TurnRecord:
    """One turn of a call.

    ``user``: the caller's words (the transcript). ``assistant``: what the caller heard of the reply (the
    sentences whose marks came back played). ``reply``: everything the LLM wrote for it. ``interrupted``: the
    caller spoke over the reply (or hung up during it). ``cut``: the caller's turn reached the maximum length.
    ``error``: the error code when a stage failed (the caller heard an apology). ``latency``: seconds from
    the detection of the turn's end (negative: before it), unless said otherwise: ``started_s`` (the turn's
    jobs began), ``stt_started_s``, ``transcript_s``, ``llm_started_s``, ``llm_first_token_s``,
    ``first_sentence_s`` (its TTS job submitted), ``tts_first_chunk_s``, ``first_audio_s`` (sent to the caller),
    ``llm_done_s``, ``tts_done_s``, ``total_s``; ``stt_s`` (the STT job's time), ``end_silence_s`` (the silence
    that ended the turn), ``voice_to_voice_s`` (from the end of the caller's speech to the first reply audio sent).
    ``jobs``: the endpoint job ids by stage. ``speculated``: the turn was started at the caller's pause, before
    its end (see :mod:`voicepod.phone.turn_taking`). ``end_of_turn``: what ended it (:class:`EndOfTurn`).
    """

    started_at: str = field(default_factory=now_iso)
    user: str = ""
    assistant: str = ""
    reply: str = ""
    interrupted: bool = False
    cut: bool = False
    error: str | None = None
    latency: dict[str, float | None] = field(default_factory=dict)
    jobs: dict[str, list[str]] = field(default_factory=dict)
    speculated: bool = False
    end_of_turn: EndOfTurn | None = None


def turn_latency(detected: float, began: float, times: dict[str, float], metrics: TurnMetrics | None,
                 end_silence_s: float) -> dict[str, Any]:
    """A turn's ``latency`` entry: its moments in seconds from ``detected`` (the monotonic time the end of the
    turn was detected; negative: before it, in a speculative turn), and the STT job's time.

    ``began``: when the turn's jobs began; ``times``: other monotonic moments by name (``transcript_s``...);
    ``metrics``: the agent's timings of the turn (seconds from ``began``); ``end_silence_s``: the silence that
    ended the turn, where the caller stopped speaking.
    """
    latency: dict[str, Any] = {"end_silence_s": end_silence_s, "started_s": round(began - detected, 3)}
    if metrics is not None:
        moments = {"stt_started_s": metrics.stt.started, "llm_started_s": metrics.llm.started,
                   "llm_done_s": metrics.llm.finished, "first_sentence_s": metrics.tts.started,
                   "tts_first_chunk_s": metrics.tts.first_chunk, "tts_done_s": metrics.tts.finished,
                   "total_s": metrics.total_s}
        for name, t in moments.items():
            latency[name] = round(began + t - detected, 3) if t is not None else None
        if metrics.stt.started is not None and metrics.stt.finished is not None:
            latency["stt_s"] = round(metrics.stt.finished - metrics.stt.started, 3)
    for name, t in times.items():
        latency[name] = round(t - detected, 3)
    if "first_audio_s" in latency:
        latency["voice_to_voice_s"] = round(latency["first_audio_s"] + end_silence_s, 3)
    return latency


@dataclass
class CallRecord:
    """One call. ``end_reason``: ``stop`` (Twilio ended it), ``disconnected``, or the protocol error that
    closed it. ``greeting``: the greeting's text and whether it played to the end. ``ignored_frames``: frames
    skipped as unusable (unknown events, bad base64). ``cancelled_speculations``: speculative turns cancelled
    because the caller spoke again, each ``{"turn": the number of the turn it guessed at, "jobs": its job ids by
    stage}``: their jobs ran (and are billed) for nothing; a turn the smart detector ended early and the caller
    went on (its answer dropped the same way) is one too, with ``"continued": true`` and ``"held"``: its reply was
    ready and held back while the VAD heard the caller (without the hold it would have gone out).
    ``interjections``: what the caller said over a reply (smart detector), each ``{"turn": the playback it was
    said over (0: the greeting), "speech_s", "text": its transcript, "verdict": "backchannel" or "interruption",
    "reason", "cut": the reply was cut, "resumed": and resumed from its cut sentence, "jobs": its STT job ids}``."""

    call_sid: str | None = None
    stream_sid: str | None = None
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    end_reason: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    greeting: dict[str, Any] | None = None
    dtmf: list[str] = field(default_factory=list)
    ignored_frames: int = 0
    turns: list[TurnRecord] = field(default_factory=list)
    cancelled_speculations: list[dict[str, Any]] = field(default_factory=list)
    interjections: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def file_name(self) -> str:
        name = self.call_sid or ""
        return f"{name}.json" if _SAFE_NAME.fullmatch(name) else f"unnamed-{self.started_at.replace(':', '')}.json"

    def write(self, directory: str | Path) -> Path:
        """Write the record as ``directory/<callSid>.json`` (atomically) and return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.file_name()
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        partial.replace(path)
        return path
