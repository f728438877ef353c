"""Turn-taking on a call: from the caller's audio, when they barge in and when their turn begins, speculatively
at a short pause or for good at its end.

The turn detector (:mod:`voicepod.phone.vad`) reports a :class:`~voicepod.phone.vad.Pause` ``pause_s`` into a
silence and ends the turn ``end_silence_s`` into it. With speculation on, the call starts the turn at the pause
as it would at the end (:class:`Speculate`: the same reply, the same code), so its STT job, and after it the
LLM's first sentence and its speech, are made while the caller is still being listened to. Nothing of it reaches
the caller until the turn is confirmed: its playback is held.

- The caller says nothing more: the detector's :class:`~voicepod.phone.vad.Utterance` carries the same audio as
  the pause (it ends where the pause was); the speculation *is* the turn (:class:`Confirm`), and its held audio
  goes out at once.
- The caller speaks again (:class:`~voicepod.phone.vad.Resumed`): the speculative turn is dropped (:class:`Drop`),
  its jobs cancelled on their endpoints and the turn taken back out of the agent's history; the turn is made
  again on the whole utterance when it ends (:class:`Begin`). The dropped jobs' ids go into the call record:
  they were billed for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vad import Pause, Resumed, SpeechStarted, TurnDetector, Utterance


@dataclass
class BargeIn:
    """The caller started talking: whatever plays or is being made for them stops."""


@dataclass
class Speculate:
    """Start a turn on ``audio``, the caller's turn so far, its reply held until :class:`Confirm` or
    :class:`Drop`."""

    audio: bytes


@dataclass
class Confirm:
    """The speculative turn is the caller's turn: its reply may go out."""


@dataclass
class Drop:
    """The speculative turn is not the caller's turn: stop it and take it back."""


@dataclass
class Begin:
    """The caller's turn ended: start (and confirm) a turn on ``audio``. ``cut``: it reached the longest turn
    allowed while the caller was still talking."""

    audio: bytes
    cut: bool = False


TurnAction = BargeIn | Speculate | Confirm | Drop | Begin


class TurnTaking:
    """Feed it the caller's audio; it says what the call should do. ``detector``: the call's turn detector.
    ``speculate``: start turns at the caller's first short pause."""

    def __init__(self, detector: TurnDetector, speculate: bool = True):
        self.detector = detector
        self.speculate = speculate
        self._pending: bytes | None = None  # the speculative turn's audio, until it is confirmed or dropped

    def feed(self, audio: bytes) -> list[TurnAction]:
        """``audio``: the caller's, in the detector's format, any length. Returns the actions, in order."""
        actions: list[TurnAction] = []
        for event in self.detector.feed(audio):
            if isinstance(event, SpeechStarted):
                actions.append(BargeIn())
            elif isinstance(event, Pause) and self.speculate:
                actions += self._drop()
                self._pending = event.audio
                actions.append(Speculate(event.audio))
            elif isinstance(event, Resumed):
                actions += self._drop()
            elif isinstance(event, Utterance):
                pending, self._pending = self._pending, None
                if pending is not None and not event.cut and event.audio == pending:
                    actions.append(Confirm())  # the caller said nothing after the pause
                else:
                    actions += [Drop()] if pending is not None else []
                    actions.append(Begin(event.audio, event.cut))
        return actions

    def _drop(self) -> list[TurnAction]:
        if self._pending is None:
            return []
        self._pending = None
        return [Drop()]
