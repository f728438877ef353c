"""Backchannel or interruption: does what the caller said over a reply ask the agent to stop?

A caller says "uh-huh", "okay", "right" or coughs while the agent talks to show they are listening; cutting the
reply for that is rude and slow. "Wait, stop, I have another question" must cut it. :func:`classify_interjection`
reads the transcript of what they said: nothing but acknowledgement words, hums or no words at all (a cough, a
breath: Whisper hears nothing, or a non-word) is a backchannel; a word that asks to stop or corrects ("wait",
"no", "sorry", "actually", "but"), or any other word, is an interruption.

Plain word lists: backchannels are a small closed set of English acknowledgements, stated here so a reader can
check them; a classifier model would need training data we do not have. The lists include what Whisper writes
for them on 8 kHz phone audio (measured on the Piper voice: "Uh-huh." came back as "Wow.", "Mm-hmm." as "MMM."
or "MMO."). A transcript is classified as it stands: the call should classify again as more words arrive
("Okay, but what about Sunday?" starts as a backchannel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .turn_text import words

# Acknowledgements and reactions that do not take the floor. Two-word ones are matched as pairs.
BACKCHANNEL_WORDS = frozenset(
    "uh-huh uhhuh uh huh mm-hmm mhm mm-mm hmm mm mmm ok okay right yeah yes yep yup sure alright fine good great "
    "cool nice wow oh ah aha thanks".split())
BACKCHANNEL_PAIRS = frozenset({("i", "see"), ("got", "it"), ("all", "right"), ("thank", "you"), ("makes", "sense"),
                               ("oh", "okay"), ("that's", "right"), ("sounds", "good")})
# Words that ask the agent to stop, or correct it: an interruption even next to acknowledgement words.
INTERRUPTION_WORDS = frozenset(
    "stop wait hold hang no nope sorry excuse pardon actually but what repeat again question".split())
# A hum or a vowel with no letters of a word: Whisper's spelling of "mm", "hmm", "uh", "mm-hmm" varies.
_HUM = re.compile(r"^(?:[hm]+|u+[hm]+|a+h+|o+h+|e+r+m*|m+o+|m+-?h+m+|u+h+-?h+u+h+)$")


@dataclass(frozen=True)
class Interjection:
    """``backchannel``: the words over the reply leave it playing (else they cut it). ``confidence``: 0 to 1, a
    rank from the rule that decided, not a calibrated probability. ``reason``: that rule."""

    backchannel: bool
    confidence: float
    reason: str


def classify_interjection(text: str) -> Interjection:
    """Whether ``text``, the transcript of what the caller said while the agent spoke, is a backchannel.

    Args:
        text: Whisper's transcript of the caller's speech so far (empty when it heard no words).
    """
    spoken = words(text)
    if not spoken:
        return Interjection(True, 0.8, "no words (a cough, a breath, noise)")
    stops = [w for w in spoken if w in INTERRUPTION_WORDS]
    if stops:
        return Interjection(False, 0.95, f"asks to stop or corrects: '{stops[0]}'")
    rest = _without_backchannels(spoken)
    if not rest:
        return Interjection(True, 0.9, "only acknowledgement words or hums")
    return Interjection(False, 0.8 if len(rest) > 1 else 0.6, f"says more than an acknowledgement: '{rest[0]}'")


def _without_backchannels(spoken: list[str]) -> list[str]:
    """The words of ``spoken`` that are not part of an acknowledgement or a hum."""
    rest, i = [], 0
    while i < len(spoken):
        if tuple(spoken[i:i + 2]) in BACKCHANNEL_PAIRS:
            i += 2
            continue
        if spoken[i] not in BACKCHANNEL_WORDS and not _HUM.match(spoken[i]):
            rest.append(spoken[i])
        i += 1
    return rest
