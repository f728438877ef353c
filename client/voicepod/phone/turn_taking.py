"""Turn-taking on a call: from the caller's audio, when they start talking and when their turn begins,
speculatively at a short pause or for good at its end; with the smart detector, when a turn ended early was not
the end after all.

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

**The smart detector** (``smart=True``; speculation is always on with it) does not wait for the silence: when the
call's turn model and the transcript say the caller is done, the call ends the turn at once (:meth:`end_now`:
:class:`Confirm`, and the detector's utterance is closed, so that no ``Utterance`` comes for it). The detector's
``end_silence_s`` is then the longest wait (``--max-silence``). A turn so ended may still have been cut short: if
the caller starts talking again before any of its reply has gone out, the turn is taken back (:class:`Continue`:
the call drops its answer as it drops a speculation) and the new speech is the rest of it: the next turn's audio
is the earlier turn's followed by the new utterance's. Once the reply is heard (:meth:`settle`), new speech is new.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vad import Pause, Resumed, SpeechStarted, TurnDetector, Utterance

# What ended a turn (TurnRecord.end_of_turn.by): the turn model and the transcript, the silence detector's fixed
# silence, the smart detector's longest wait, the longest turn allowed.
SMART, SILENCE, MAX_SILENCE, MAX_UTTERANCE = "smart", "silence", "max_silence", "max_utterance"


@dataclass
class BargeIn:
    """The caller started talking (``min_speech_s`` of speech): over a reply, it may be an interruption."""


@dataclass
class Speculate:
    """Start a turn on ``audio``, the caller's turn so far, its reply held until :class:`Confirm` or
    :class:`Drop`."""

    audio: bytes


@dataclass
class Confirm:
    """The speculative turn is the caller's turn: its reply may go out. ``by``: what ended it (:data:`SMART`,
    :data:`SILENCE`, :data:`MAX_SILENCE`); ``continued``: how many earlier ends it takes back (:class:`Continue`)."""

    by: str = SILENCE
    continued: int = 0


@dataclass
class Drop:
    """The speculative turn is not the caller's turn: stop it and take it back."""


@dataclass
class Begin:
    """The caller's turn ended: start (and confirm) a turn on ``audio``. ``cut``: it reached the longest turn
    allowed while the caller was still talking. ``by`` and ``continued``: as :class:`Confirm`'s."""

    audio: bytes
    cut: bool = False
    by: str = SILENCE
    continued: int = 0


@dataclass
class Continue:
    """The turn the smart detector ended last was not over: the caller went on before its reply was heard. Drop
    that turn's answer (as a dropped speculation); its audio starts the turn that is coming."""


TurnAction = BargeIn | Speculate | Confirm | Drop | Begin | Continue


class TurnTaking:
    """Feed it the caller's audio; it says what the call should do. ``detector``: the call's turn detector.
    ``speculate``: start turns at the caller's first short pause. ``smart``: the call ends turns itself
    (:meth:`end_now`) and the detector's silence is only the longest wait; implies ``speculate``."""

    def __init__(self, detector: TurnDetector, speculate: bool = True, smart: bool = False):
        self.detector = detector
        self.speculate = speculate or smart
        self.smart = smart
        self._pending: bytes | None = None  # the speculative turn's audio, until it is confirmed or dropped
        # The turn end_now() ended, until its reply is heard: its audio and how many ends it took back itself.
        self._early: tuple[bytes, int] | None = None
        self._prefix = b""  # the audio of turns taken back: the coming turn's start
        self._continued = 0  # how many ends the coming turn takes back

    @property
    def continuable(self) -> bool:
        """Whether the last turn was ended early (:meth:`end_now`) and may yet be taken back."""
        return self._early is not None

    def feed(self, audio: bytes) -> list[TurnAction]:
        """``audio``: the caller's, in the detector's format, any length. Returns the actions, in order."""
        actions: list[TurnAction] = []
        for event in self.detector.feed(audio):
            if isinstance(event, SpeechStarted):
                actions.append(self._started())
            elif isinstance(event, Pause) and self.speculate:
                actions += self._drop()
                self._pending = self._prefix + event.audio
                actions.append(Speculate(self._pending))
            elif isinstance(event, Resumed):
                actions += self._drop()
            elif isinstance(event, Utterance):
                actions += self._ended(event)
        return actions

    def end_now(self) -> list[TurnAction]:
        """The smart detector's decision: the speculative turn is the caller's, ended here. Returns
        ``[Confirm]`` (none when there is no speculative turn: it was dropped meanwhile)."""
        if self._pending is None:
            return []
        self._early, self._pending = (self._pending, self._continued), None
        self.detector.close()
        return [self._confirm(SMART)]

    def settle(self) -> None:
        """The early-ended turn's reply has begun to be heard: it stands, and new speech is a new turn."""
        self._early = None

    def dismiss(self, close: bool = True) -> list[TurnAction]:
        """The caller's current utterance is no turn (a backchannel over a reply): forget it (``close``: and end
        it in the detector; not when it has ended there already). Returns ``[Drop]`` when a speculative turn was
        started on it."""
        if close:
            self.detector.close()
        actions = self._drop()
        self._prefix, self._continued = b"", 0
        return actions

    def _started(self) -> TurnAction:
        if self._early is None:
            return BargeIn()
        (self._prefix, continued), self._early = self._early, None
        self._continued = continued + 1
        return Continue()

    def _ended(self, event: Utterance) -> list[TurnAction]:
        pending, self._pending = self._pending, None
        audio = self._prefix + event.audio
        by = MAX_UTTERANCE if event.cut else MAX_SILENCE if self.smart else SILENCE
        if pending is not None and not event.cut and audio == pending:
            return [self._confirm(by)]  # the caller said nothing after the pause
        actions: list[TurnAction] = [Drop()] if pending is not None else []
        continued = self._continued
        self._prefix, self._continued = b"", 0
        return [*actions, Begin(audio, event.cut, by, continued)]

    def _confirm(self, by: str) -> Confirm:
        confirm = Confirm(by, self._continued)
        self._prefix, self._continued = b"", 0
        return confirm

    def _drop(self) -> list[TurnAction]:
        if self._pending is None:
            return []
        self._pending = None
        return [Drop()]
