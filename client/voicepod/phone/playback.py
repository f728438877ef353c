"""What goes down the line, and what the caller heard of it: the :class:`Player` of a call (its one way to send,
which playback the line plays now, marks coming back, clears) and each reply's :class:`Playback`.

A playback's audio and marks are held until it is released: at once for the greeting and a turn that has ended,
at the end of the turn for one started at the caller's pause (:mod:`voicepod.phone.turn_taking`). Each sentence
ends with a mark (``"<playback>:<sentence>"``); the line echoes it once what came before it has played, and only
then does the sentence count as heard. A clear (barge-in, hang-up) makes later marks mean nothing.

A playback keeps what it sends (its *tape*: a reply is at most a minute of audio), so that a reply cut by what
might have been an interruption (:meth:`Playback.pause`) can be taken up again (:meth:`Playback.resume`) from the
start of the sentence it was cut in: the line has dropped what it held, and which part of that sentence the caller
heard is not known (a mark says only that a whole sentence played). Repeating the cut sentence is what a person
does after "sorry, go on". Marks sent after a resume carry its number (``"<playback>:<sentence>.<n>"``), so that
the echo of a mark the clear gave back is not taken for the sentence having played.
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
        number, _, rest = name.partition(":")
        index, _, take = rest.partition(".")
        playback = self.current
        if not (number.isdigit() and index.isdigit() and (take.isdigit() or not take)):
            return  # not one of ours
        if playback is not None and playback.number == int(number) and not playback.cleared:
            playback.played_out(int(index), int(take or 0))  # else an old turn's, or returned by a clear

    async def clear(self) -> None:
        """Barge-in: the current playback stops for good, and the line drops what it holds of it."""
        playback = self.current
        if playback is None or playback.cleared:
            return
        on_line = playback.on_line
        playback.cleared = True
        if on_line:
            with contextlib.suppress(LineClosed):
                await self.send(self.line.clear())


class Playback:
    """What one turn (or the greeting) sends down the line, and which of its sentences played to the end."""

    def __init__(self, number: int, player: Player):
        self.number = number
        self.sentences: dict[int, str] = {}
        self.marked: set[int] = set()  # sentences whose mark went out in the current take
        self.played: set[int] = set()
        self.cleared = False  # barged in (or hung up): marks that come back now did not play
        self.paused = False  # cut, maybe for good: what comes is kept, not sent, until resume() or a clear
        self.sent_audio = False
        self.first_audio_at: float | None = None  # monotonic time its first audio went out
        self.held_ready = False  # its first audio waited on hold(): without the hold it would have gone out
        self.take = 0  # how many times it was resumed
        self._player = player
        self._on_played: dict[int, OnPlayed] = {}
        self._released = asyncio.Event()
        self._unheld = asyncio.Event()
        self._unheld.set()
        self._tape: list[tuple[int, bytes | None]] = []  # (sentence, a frame of its audio, or None for its mark)
        self._sent = 0  # how much of the tape went out in this take
        self._on_line = False  # audio sent since the last clear: the line may hold some
        self._sending = asyncio.Lock()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    @property
    def on_line(self) -> bool:
        """Whether audio went out since the line was last cleared (the line may still hold some)."""
        return self._on_line

    def release(self) -> None:
        """Let its audio and marks go out (and what was held go out now)."""
        self._released.set()

    async def wait_released(self) -> None:
        await self._released.wait()

    def hold(self, held: bool) -> None:
        """Hold back its first audio while ``held`` (the caller may be going on: voicepod.phone.call); once some
        audio has gone out, a hold changes nothing."""
        if held:
            self._unheld.clear()
        else:
            self._unheld.set()

    @property
    def playing(self) -> bool:
        return not self.cleared and (self.paused or bool(self.marked - self.played))

    def heard(self) -> str:
        return " ".join(self.sentences[i] for i in sorted(self.played))

    def next_sentence(self) -> int:
        return max(self.sentences, default=-1) + 1

    async def play(self, sentence: int, text: str, audio: bytes, on_played: OnPlayed | None = None) -> None:
        """Send ``audio`` of sentence ``sentence`` (once released); ``on_played(sentence)`` runs when the
        sentence has played out."""
        await self._released.wait()
        if not self.sent_audio:
            if not self._unheld.is_set():
                self.held_ready = True
            await self._unheld.wait()
        self._note(sentence, text, on_played)
        self._tape += [(sentence, frame) for frame in self._player.line.media(audio)]
        await self._pump()

    async def mark(self, sentence: int, text: str, on_played: OnPlayed | None = None) -> None:
        """End sentence ``sentence`` with a mark (once released): its echo says the sentence played out."""
        await self._released.wait()
        self._note(sentence, text, on_played)
        self._tape.append((sentence, None))
        await self._pump()

    async def pause(self) -> None:
        """Cut it, maybe for good: the line drops what it holds, what comes next is kept, and the marks not yet
        echoed no longer count (their sentences did not play out)."""
        if self.cleared or self.paused:
            return
        self.paused = True
        self.marked &= self.played
        if self._on_line:
            self._on_line = False
            with contextlib.suppress(LineClosed):
                await self._player.send(self._player.line.clear())

    async def resume(self) -> None:
        """Take it up again after :meth:`pause`, from the start of the first sentence that did not play out."""
        if self.cleared or not self.paused:
            return
        async with self._sending:
            self.paused = False
            self.take += 1
            first = min((s for s, _ in self._tape if s not in self.played), default=None)
            self._sent = next((i for i, (s, _) in enumerate(self._tape) if s == first), len(self._tape))
        await self._pump()

    def played_out(self, sentence: int, take: int = 0) -> None:
        if sentence in self.marked and take == self.take:
            self.played.add(sentence)
            if (on_played := self._on_played.get(sentence)) is not None:
                on_played(sentence)

    async def _pump(self) -> None:
        """Send what is on the tape and has not gone out, unless cut."""
        async with self._sending:
            while self._sent < len(self._tape) and not (self.cleared or self.paused):
                sentence, frame = self._tape[self._sent]
                self._sent += 1
                if frame is None:
                    self.marked.add(sentence)
                    name = f"{self.number}:{sentence}" + (f".{self.take}" if self.take else "")
                    await self._player.send(self._player.line.mark(name))
                    continue
                if self.first_audio_at is None:
                    self.first_audio_at = time.monotonic()
                await self._player.send(frame)
                self.sent_audio = True
                # A frame whose send a cut overtook is not on the line as far as a later clear goes: the cut's
                # clear is out (or nothing was on the line), and a second clear would clear nothing of it.
                self._on_line = self._on_line or not (self.cleared or self.paused)

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
