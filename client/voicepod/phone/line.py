"""What carries a call: a line's serializer, both ways, and the caller events it turns frames into.

A :class:`~voicepod.phone.call.Call` sees only caller events (:class:`CallStarted`, :class:`CallerAudio`,
:class:`Played`, :class:`Digit`, :class:`Skipped`) and hands the serializer audio, marks and clears to frame. One
serve loop (:func:`voicepod.phone.server.serve_line`) reads any line's frames through its serializer, so a line is
one serializer and a route: Twilio's Media Streams (:class:`~voicepod.phone.twilio.TwilioLine`), the browser page
(:class:`~voicepod.phone.browser.BrowserLine`). docs/architecture.md has the recipe for another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class CallStarted:
    """The call is up. ``call_sid``/``stream_sid`` name it in its record; ``custom_parameters``: what the line
    carried with it (Twilio's ``<Parameter>``s, at most 20 kept)."""

    call_sid: str
    stream_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class CallerAudio:
    """The caller's audio, in the line's input format, any length."""

    audio: bytes


@dataclass
class Played:
    """The caller's side played everything sent before the mark ``name``."""

    name: str


@dataclass
class Digit:
    """The caller pressed a key (DTMF)."""

    digit: str


@dataclass
class Hangup:
    """The line says the call is over."""


@dataclass
class Skipped:
    """A frame that cannot be used but harms nothing (an event added to the protocol since, a bad payload):
    counted in the call record, the call goes on."""

    message: str


CallerEvent = CallStarted | CallerAudio | Played | Digit | Hangup | Skipped


class LineRefused(Exception):
    """A frame that breaks the line's protocol: the call is closed. ``code`` says what (``malformed_json``,
    ``invalid_message``, ``out_of_order``, ``binary_frame``, ``frame_too_big``, ``bad_audio``), ``message`` in
    words."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Closing:
    """How a line closes over a refused frame: ``frames`` to send first, then the WebSocket close ``code`` and
    ``reason`` (at most 123 bytes)."""

    frames: list[str | bytes]
    code: int
    reason: str


class Line(Protocol):
    """One call's serializer. ``input_format``/``input_rate``: the caller's audio as :class:`CallerAudio` carries
    it (``mulaw`` or ``pcm16``), what the turn detector and the STT endpoint take. ``output_format``/
    ``output_rate``: the reply audio the TTS endpoint makes for this line."""

    input_format: str
    input_rate: int
    output_format: str
    output_rate: int

    def parse(self, frame: str | bytes) -> CallerEvent | None:
        """One frame from the caller's side: its event, or None for one that carries nothing for the call.
        Raises :class:`LineRefused` for a frame that breaks the protocol."""
        ...

    def media(self, audio: bytes) -> list[str | bytes]:
        """The frames that carry ``audio`` (in the output format) to the caller."""
        ...

    def mark(self, name: str) -> str | bytes:
        """A mark: the caller's side echoes it back once the audio sent before it has played."""
        ...

    def clear(self) -> str | bytes:
        """Drop the audio the caller's side holds and has not played yet (barge-in)."""
        ...

    def closing(self, refused: LineRefused) -> Closing:
        """How to close the line over ``refused``."""
        ...
