"""The end-of-turn decision at a pause: the turn model's probability, vetoed by the transcript where it reads as
unfinished.

The model (:mod:`voicepod.phone.turn_model`) hears the voice; the text rule (:mod:`voicepod.phone.turn_text`) reads
the words. They fail differently: the model takes "I'd like to book a table for," said with an even voice for a
finished sentence; Whisper rounds some fragments off into sentences ("...my appointment too."), so a transcript
that reads as finished proves little. Hence the text can only hold a turn open, never end one: the turn ends when
the model says done and the text has no confident sign of an unfinished utterance. When it does not end, the call
waits for more silence (or more words) and asks again, up to its maximum silence.

    decision = decide(model.probability(audio), read_transcript(speculative_transcript))
    if decision.done: ...  # end the turn now
"""

from __future__ import annotations

from dataclasses import dataclass

from .turn_text import TextEvidence

DEFAULT_THRESHOLD = 0.5  # Smart Turn's own: its output is the probability that the turn is complete
DEFAULT_TEXT_VETO = 0.7  # TextEvidence.confidence from which "unfinished" holds the turn open


@dataclass(frozen=True)
class EndOfTurnSettings:
    """``threshold``: the model's probability above which the caller is done. ``text_veto``: the confidence from
    which the transcript's "unfinished" overrules the model (above 1: the text is ignored)."""

    threshold: float = DEFAULT_THRESHOLD
    text_veto: float = DEFAULT_TEXT_VETO


@dataclass(frozen=True)
class TurnDecision:
    """``done``: end the turn now. ``probability``: the model's. ``reason``: why, for the call record."""

    done: bool
    probability: float
    reason: str


def decide(probability: float, text: TextEvidence | None = None,
           settings: EndOfTurnSettings | None = None) -> TurnDecision:
    """Decide whether the caller has finished.

    Args:
        probability: The turn model's probability that the caller is done, from their audio up to now.
        text: What their transcript so far says (:func:`voicepod.phone.turn_text.read_transcript`); ``None``
            when there is none yet.
        settings: Thresholds (default :class:`EndOfTurnSettings`).
    """
    s = settings or EndOfTurnSettings()
    if probability <= s.threshold:
        return TurnDecision(False, probability, f"model: not done ({probability:.2f})")
    if text is not None and text.unfinished and text.confidence >= s.text_veto:
        return TurnDecision(False, probability, f"text: {text.reason}")
    return TurnDecision(True, probability, f"model: done ({probability:.2f})")
