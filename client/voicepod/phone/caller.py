"""A simulated Twilio caller: connects to ``/media`` as Twilio would, streams audio as real-time 20 ms mu-law
frames (silence when it has nothing to say), "plays" what the server sends at real-time speed, echoes each mark
once the audio before it has played, and on ``clear`` drops what has not played and returns the pending marks at
once, as Twilio does. ``voicepod call`` and the tests use it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections import deque
from typing import Any

from . import twilio
from .signatures import sign

FRAME_S = twilio.FRAME_BYTES / twilio.SAMPLE_RATE


def signed_stream_url(url: str) -> str:
    """The URL Twilio signs for a stream: the same address with ``wss://`` (Twilio only streams over TLS)."""
    return "wss://" + url.split("://", 1)[1] if url.startswith("ws://") else url


class SimulatedCaller:
    """One call from Twilio's side. Use as ``async with SimulatedCaller(url) as caller: await caller.say(...)``.

    ``url``: the server's ``ws(s)://HOST/media``. ``auth_token``: sign the upgrade (``X-Twilio-Signature``)
    with this Twilio auth token, over ``signed_url`` (default: ``url`` as ``wss://``). ``custom_parameters``:
    the ``start`` message's. ``echo_marks``: echo marks as the audio plays (Twilio always does).
    ``headers``: extra handshake headers.

    What it got: ``received`` (all reply audio), ``heard`` (what played before a clear or the end),
    ``marks`` (names echoed back), ``clears``, ``media_times`` (arrival time of each audio frame),
    ``arrivals`` (each mark's name, or ``None`` for a clear, with how many bytes of ``received`` came before it:
    where each sentence's audio ends), ``close_code`` once the server closed the socket.
    """

    def __init__(self, url: str, *, auth_token: str | None = None, signed_url: str | None = None,
                 call_sid: str | None = None, stream_sid: str | None = None,
                 custom_parameters: dict[str, str] | None = None, echo_marks: bool = True,
                 headers: dict[str, str] | None = None):
        self.url = url
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self.stream_sid = stream_sid or "MZ" + secrets.token_hex(16)
        self.custom_parameters = custom_parameters or {}
        self.echo_marks = echo_marks
        self.headers = dict(headers or {})
        if auth_token:
            self.headers["X-Twilio-Signature"] = sign(auth_token, signed_url or signed_stream_url(url))
        self.received = bytearray()
        self.heard = bytearray()
        self.marks: list[str] = []
        self.clears: list[float] = []
        self.media_times: list[float] = []
        self.arrivals: list[tuple[str | None, int]] = []
        self.close_code: int | None = None
        self.speech_ended_at: float | None = None
        self._ws: Any = None
        self._sequence = 1
        self._speech: deque[bytes] = deque()
        self._spoken = asyncio.Event()
        self._playout: deque[bytearray | str] = deque()
        self._last_audio_at = 0.0
        self._send_lock = asyncio.Lock()
        self._speaker: asyncio.Task[None] | None = None
        self._player: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def __aenter__(self) -> SimulatedCaller:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.hang_up()

    async def connect(self) -> None:
        """Open the socket (raises the ``websockets`` error when the server refuses it) and send ``connected``
        and ``start``; from then on audio flows both ways."""
        from websockets.asyncio.client import connect

        self._ws = await connect(self.url, additional_headers=self.headers, max_size=2**22, open_timeout=30)
        await self.send_raw(twilio.twilio_connected())
        await self.send_raw(twilio.twilio_start(self.stream_sid, self.call_sid, self.custom_parameters))
        self._speaker = asyncio.create_task(self._speak())
        self._player = asyncio.create_task(self._play())
        self._listener = asyncio.create_task(self._listen())

    async def send_raw(self, frame: str | bytes) -> None:
        """Send one frame as it is (tests send bad ones this way)."""
        async with self._send_lock:
            await self._ws.send(frame)

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    # --- the caller's voice ------------------------------------------------------------------------------

    async def say(self, audio: bytes) -> None:
        """Speak ``audio`` (mu-law 8 kHz) in real time; returns once its last frame is sent. Raises
        ``ConnectionError`` if the call ends first (the server closed it, or sending failed)."""
        self._spoken.clear()
        self._speech.extend(twilio.frames(audio))
        spoken = asyncio.ensure_future(self._spoken.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        await asyncio.wait({spoken, closed}, return_when=asyncio.FIRST_COMPLETED)
        spoken.cancel()
        closed.cancel()
        if not self._spoken.is_set():
            raise ConnectionError(f"the call ended while speaking (close code {self.close_code})")
        self.speech_ended_at = time.monotonic()

    async def _speak(self) -> None:
        started = time.monotonic()
        chunk = 0
        try:
            while True:
                # On an absolute clock, as Twilio sends: a late tick catches up instead of drifting.
                await asyncio.sleep(max(0.0, started + chunk * FRAME_S - time.monotonic()))
                frame = self._speech.popleft() if self._speech else twilio.SILENCE * twilio.FRAME_BYTES
                chunk += 1
                await self.send_raw(twilio.twilio_media(self.stream_sid, frame, self._next_sequence(), chunk,
                                                       int(chunk * FRAME_S * 1000)))
                if not self._speech:
                    self._spoken.set()
        except Exception:  # noqa: BLE001 - sending failed: the socket is gone, and say() must not wait on
            self.closed.set()

    # --- the line's speaker ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            async for frame in self._ws:
                data = twilio.parse_outbound(frame)
                if data["event"] == "media":
                    audio = base64.b64decode(data["media"]["payload"])
                    now = time.monotonic()
                    self.received += audio
                    self.media_times.append(now)
                    self._last_audio_at = now
                    self._playout.append(bytearray(audio))
                elif data["event"] == "mark":
                    self._playout.append(data["mark"]["name"])
                    self.arrivals.append((data["mark"]["name"], len(self.received)))
                elif data["event"] == "clear":
                    self.clears.append(time.monotonic())
                    self.arrivals.append((None, len(self.received)))
                    pending = [item for item in self._playout if isinstance(item, str)]
                    self._playout.clear()
                    for name in pending:  # Twilio returns every pending mark at once on clear
                        await self._echo(name)
        except Exception:  # noqa: BLE001 - the socket closed (or the server broke the protocol): the call is over
            pass
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    async def _play(self) -> None:
        started = time.monotonic()
        tick = 0
        with contextlib.suppress(Exception):
            while True:
                tick += 1
                await asyncio.sleep(max(0.0, started + tick * FRAME_S - time.monotonic()))
                budget = twilio.FRAME_BYTES
                while self._playout and (isinstance(self._playout[0], str) or budget > 0):
                    head = self._playout[0]
                    if isinstance(head, str):
                        self._playout.popleft()
                        await self._echo(head)
                        continue
                    take = min(budget, len(head))
                    self.heard += head[:take]
                    del head[:take]
                    budget -= take
                    if not head:
                        self._playout.popleft()

    async def _echo(self, name: str) -> None:
        self.marks.append(name)
        if self.echo_marks:
            await self.send_raw(twilio.twilio_mark(self.stream_sid, name, self._next_sequence()))

    # --- waiting and ending ------------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return any(isinstance(item, bytearray) for item in self._playout)

    def first_audio_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` (a ``time.monotonic()``) to the first reply audio that arrived after it."""
        return next((t - moment for t in self.media_times if t >= moment), None)

    async def wait_for_audio(self, after: float, timeout: float) -> float:
        """Wait until audio arrives after ``after`` (monotonic); returns its delay. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while (delay := self.first_audio_after(after)) is None:
            if self.closed.is_set():
                raise ConnectionError(f"the server closed the call (code {self.close_code})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply audio within {timeout} s")
            await asyncio.sleep(0.02)
        return delay

    async def wait_until_quiet(self, quiet_s: float, timeout: float) -> None:
        """Wait until nothing is playing and no audio has arrived for ``quiet_s``. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if self.playing or now - self._last_audio_at < quiet_s:
                quiet_since = now
            elif now - quiet_since >= quiet_s or self.closed.is_set():
                return
            if now > deadline:
                raise TimeoutError(f"still hearing audio after {timeout} s")
            await asyncio.sleep(0.02)

    async def hang_up(self, send_stop: bool = True) -> None:
        """End the call as Twilio does: a ``stop`` message, then the socket closes."""
        if self._ws is None:
            return
        if send_stop and not self.closed.is_set():
            with contextlib.suppress(Exception):
                await self.send_raw(twilio.twilio_stop(self.stream_sid, self.call_sid, self._next_sequence()))
        await self._finish()
        with contextlib.suppress(Exception):
            await self._ws.close()
            await asyncio.wait_for(self.closed.wait(), 10)

    async def drop(self) -> None:
        """Lose the connection: no ``stop``, no closing handshake (a dropped line)."""
        if self._ws is not None:
            await self._finish()
            self._ws.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.closed.wait(), 10)

    async def _finish(self) -> None:
        # The listener ends by itself when the socket closes.
        tasks = [task for task in (self._speaker, self._player) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
