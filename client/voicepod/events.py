"""What a spoken turn reports as it runs: the events :class:`~voicepod.agent.VoiceAgent` yields (transcript,
reply text, audio in sentence order, each sentence's end, the metrics, the end) and the turn's timings per stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .endpoint import Job

# --- events ----------------------------------------------------------------------------------------------
# ``t`` on every event: seconds since the turn began (the end of the user's audio).


@dataclass
class Transcript:
    """A decoded segment (``final=False``) or the whole transcript (``final=True``)."""

    text: str
    final: bool
    t: float


@dataclass
class ReplyText:
    """A piece of the reply as the LLM writes it."""

    delta: str
    t: float


@dataclass
class Audio:
    """Reply audio for sentence ``sentence`` (0-based), ``data`` encoded as ``format`` at ``sample_rate``."""

    data: bytes
    format: str
    sample_rate: int
    sentence: int
    text: str
    t: float


@dataclass
class SentenceEnd:
    """Every ``Audio`` of sentence ``sentence`` has been yielded: a player can mark where it ends (a phone line's
    mark, whose echo says the sentence played out; see :meth:`VoiceAgent.played`)."""

    sentence: int
    text: str
    t: float


@dataclass
class StageTiming:
    """One stage of a turn. Times are seconds since the turn began; ``billed`` maps each of the stage's jobs
    to its workers' compute (and cold-start load) seconds, what RunPod bills per second."""

    name: str
    started: float | None = None
    first_chunk: float | None = None
    finished: float | None = None
    job_ids: list[str] = field(default_factory=list)
    billed: dict[str, float] = field(default_factory=dict)

    @property
    def billed_s(self) -> float:
        return sum(self.billed.values())

    def mark_first(self, t: float) -> None:
        if self.first_chunk is None:
            self.first_chunk = t

    def bill(self, job: Job, done: Any) -> None:
        """Record what ``job`` billed, from its ``done`` chunk's metrics."""
        self.billed[job.id] = done.metrics.compute_s + done.metrics.load_s


@dataclass
class TurnMetrics:
    """A turn's timings per stage, and what the listener waited (not to be confused with a job's
    :class:`voicepod.protocol.Metrics`, which the workers report)."""

    stt: StageTiming
    llm: StageTiming
    tts: StageTiming
    voice_to_voice_s: float | None = None  # end of user audio to the first reply audio
    total_s: float | None = None

    @property
    def billed_s(self) -> float:
        return self.stt.billed_s + self.llm.billed_s + self.tts.billed_s

    def table(self) -> str:
        """The turn's timings as a fixed-width text table."""

        def cell(value: float | None) -> str:
            return f"{value:8.2f}" if value is not None else "       -"

        lines = ["stage   start  first chunk   end   billed s  jobs"]
        for stage in (self.stt, self.llm, self.tts):
            lines.append(
                f"{stage.name:<5}{cell(stage.started)}{cell(stage.first_chunk)}   {cell(stage.finished)}"
                f"{cell(stage.billed_s)}  {len(stage.job_ids):4d}"
            )
        lines.append(f"voice-to-voice latency: {cell(self.voice_to_voice_s).strip()} s   "
                     f"turn: {cell(self.total_s).strip()} s   billed compute: {self.billed_s:.2f} s")
        return "\n".join(lines)


@dataclass
class Done:
    """The turn ended. ``reply`` is what was spoken (all of it, unless ``interrupted``)."""

    transcript: str
    reply: str
    interrupted: bool
    history: list[dict[str, str]]
    metrics: TurnMetrics


Event = Transcript | ReplyText | Audio | SentenceEnd | TurnMetrics | Done
