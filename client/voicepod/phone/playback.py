"""What goes down the line, and what the caller heard of it: the :class:`Player` of a call (its one way to send,
which playback the line plays now, marks coming back, clears) and each reply's :class:`Playback`.

A playback's audio and marks are held until it is released: at once for the greeting and a turn that has ended,
at the end of the turn for one started at the caller's pause (:mod:`voicepod.phone.turn_taking`). Each sentence
ends with a mark (``"<playback>:<sentence>"``); the line echoes it once what came before it has played, and only
then does the sentence count as heard. A clear (barge-in, hang-up) makes later marks mean nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from ..agent import Audio, Speech
from .line import Line

OnPlayed = Callable[[int], None]


class LineClosed(Exception):
    """Sending to the caller failed: the socket is gone."""


class Player:
    """One call's way down the line. ``line``: its serializer; ``send``: sends one frame (text or binary)."""

    def __init__(self, line: Line, send: Callable[[str | bytes], Awaitable[None]]):
        self.line = line
        self.current: Playback | None = None  # what the line plays (or will): the greeting or the latest turn's
        self._send = send
        self._closed = False

    def playback(self, number: int) -> Playback:
        """A new playback, numbered ``number`` (0: the greeting; a turn's number), held until released."""
        return Playback(number, self)

    async def send(self, frame: str | bytes) -> None:
        """Send ``frame``; :class:`LineClosed` once the line is gone."""
        if self._closed:
            raise LineClosed
        try:
            await self._send(frame)
        except Exception as exc:  # noqa: BLE001 - whatever the socket raised, the line is gone
            self._closed = True
            raise LineClosed from exc

    def marked(self, name: str) -> None:
        """The line played everything sent before the mark ``name``."""
        number, _, index = name.partition(":")
        playback = self.current
        if not (number.isdigit() and index.isdigit()):
            return  # not one of ours
        if playback is not None and playback.number == int(number) and not playback.cleared:
            playback.played_out(int(index))  # else an old turn's, or returned by a clear: it did not play

    async def clear(self) -> None:
        """Barge-in: the current playback stops, and the line drops what it holds of it."""
        playback = self.current
        if playback is None or playback.cleared:
            return
        playback.cleared = True
        if playback.sent_audio:
            with contextlib.suppress(LineClosed):
                await self.send(self.line.clear())


class Playback:
    """What one turn (or the greeting) sends down the line, and which of its sentences played to the end."""

    def __init__(self, number: int, player: Player):
        self.number = number
        self.sentences: dict[int, str] = {}
        self.marked: set[int] = set()
        self.played: set[int] = set()
        self.cleared = False  # barged in (or hung up): marks that come back now did not play
        self.sent_audio = False
        self.first_audio_at: float | None = None  # monotonic time its first audio went out
        self._player = player
        self._on_played: dict[int, OnPlayed] = {}
        self._released = asyncio.Event()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        """Let its audio and marks go out (and what was held go out now)."""
        self._released.set()

    async def wait_released(self) -> None:
        await self._released.wait()

    @property
    def playing(self) -> bool:
        return not self.cleared and bool(self.marked - self.played)

    def heard(self) -> str:
        return " ".join(self.sentences[i] for i in sorted(self.played))

    def next_sentence(self) -> int:
        return max(self.sentences, default=-1) + 1

    async def play(self, sentence: int, text: str, audio: bytes, on_played: OnPlayed | None = None) -> None:
        """Send ``audio`` of sentence ``sentence`` (once released); ``on_played(sentence)`` runs when the
        sentence has played out."""
        await self._released.wait()
        self._note(sentence, text, on_played)
        for frame in self._player.line.media(audio):
            if self.cleared:
                return
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
            await self._player.send(frame)
            self.sent_audio = True

    async def mark(self, sentence: int, text: str, on_played: OnPlayed | None = None) -> None:
        """End sentence ``sentence`` with a mark (once released): its echo says the sentence played out."""
        await self._released.wait()
        self._note(sentence, text, on_played)
        self.marked.add(sentence)
        await self._player.send(self._player.line.mark(f"{self.number}:{sentence}"))

    def played_out(self, sentence: int) -> None:
        if sentence in self.marked:
            self.played.add(sentence)
            if (on_played := self._on_played.get(sentence)) is not None:
                on_played(sentence)

    def _note(self, sentence: int, text: str, on_played: OnPlayed | None) -> None:
        if sentence not in self.sentences:
            self.sentences[sentence] = text
            if on_played is not None:
                self._on_played[sentence] = on_played


async def speak(playback: Playback, speech: Speech, on_played: OnPlayed | None = None) -> None:
    """Play ``speech`` (the greeting, an apology) as the playback's next sentence; when it has played out, the
    speech is told (so a remembered greeting joins the history) and then ``on_played``."""
    index = playback.next_sentence()

    def played(sentence: int) -> None:
        speech.played()
        if on_played is not None:
            on_played(sentence)

    async with contextlib.aclosing(speech) as events:
        async for event in events:
            if playback.cleared:
                return
            if isinstance(event, Audio):
                await playback.play(index, event.text, event.data, played)
            else:
                await playback.mark(index, event.text, played)
