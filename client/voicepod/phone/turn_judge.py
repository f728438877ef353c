"""The smart detector's decision at a pause: Smart Turn's probability that the caller is done (run in a thread: a
decision is 26 ms on a quiet CPU core and several times that on a loaded one, too long for the event loop), then,
when it says done, the speculative turn's transcript, which can only hold the turn open
(:func:`voicepod.phone.end_of_turn.decide`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from .end_of_turn import EndOfTurnSettings, decide
from .turn_model import TurnModel, line_audio_16k
from .turn_text import read_transcript


@dataclass(frozen=True)
class Judgement:
    """``done``: end the turn now. ``probability``: the model's. ``text``: the transcript's verdict (None when it
    was not read: the model said not done, or there was no transcript)."""

    done: bool
    probability: float
    text: str | None = None


class TurnJudge:
    """Decides at the caller's pauses. ``model``: the server's one :class:`TurnModel` (shared by every call: an
    onnxruntime session runs from several threads at once); ``settings``: the thresholds."""

    def __init__(self, model: TurnModel, settings: EndOfTurnSettings | None = None):
        self.model = model
        self.settings = settings or EndOfTurnSettings()

    async def probability(self, audio: bytes, encoding: str, sample_rate: int) -> float:
        """The model's probability that the caller is done, from ``audio`` (the turn so far, in the line's
        ``encoding`` at ``sample_rate``), computed in a worker thread."""
        return await asyncio.to_thread(lambda: self.model.probability(line_audio_16k(audio, encoding, sample_rate)))

    async def steps(self, audio: bytes, encoding: str, sample_rate: int,
                    transcript: Awaitable[str | None]) -> AsyncIterator[Judgement]:
        """The decision at a pause, as it is made: the model's on ``audio`` (as :meth:`probability` takes it),
        then, if that says done, the one once ``transcript`` (the speculative turn's) is known. The last is the
        decision; each is yielded as it comes, for the record (the silence may end the turn first)."""
        probability = await self.probability(audio, encoding, sample_rate)
        judgement = self.heard(probability)
        yield judgement
        if judgement.done:
            yield self.read(probability, await transcript)

    def heard(self, probability: float) -> Judgement:
        """The decision on the model's ``probability`` alone: when it says done, the transcript is read next
        (:meth:`read`); when not, the caller is not done."""
        return Judgement(decide(probability, None, self.settings).done, probability)

    def read(self, probability: float, transcript: str | None) -> Judgement:
        """The decision once the speculative turn's ``transcript`` is known (None: there is none), which can only
        keep the turn open. Waiting for it costs the reply nothing: no reply audio can exist before it."""
        if transcript is None:
            return self.heard(probability)
        evidence = read_transcript(transcript)
        reading = "unfinished" if evidence.unfinished else "finished"
        verdict = f"{reading} ({evidence.confidence:.2f}): {evidence.reason}"
        return Judgement(decide(probability, evidence, self.settings).done, probability, verdict)
