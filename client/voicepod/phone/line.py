"""What carries a call: the audio format each way and the frames that carry audio, marks and clears.

A :class:`~voicepod.phone.call.Call` is the same session on every line; only this differs. Twilio's Media Streams
(:class:`TwilioLine`) carry mu-law 8 kHz as base64 in JSON; the browser page
(:class:`~voicepod.phone.browser.BrowserLine`) carries PCM16 in binary frames.
"""

from __future__ import annotations

from typing import Protocol

from ..audio import MULAW_RATE
from . import media


class Line(Protocol):
    """``input_format``/``input_rate``: the caller's audio as :meth:`Call.hear` gets it (``mulaw`` or ``pcm16``),
    what the turn detector and the STT endpoint take. ``output_format``/``output_rate``: the reply audio the TTS
    endpoint makes for this line. The frame methods return what to send down the line (text or binary)."""

    input_format: str
    input_rate: int
    output_format: str
    output_rate: int

    def media(self, stream_sid: str, audio: bytes) -> list[str | bytes]:
        """The frames that carry ``audio`` (in the output format) to the caller."""
        ...

    def mark(self, stream_sid: str, name: str) -> str | bytes:
        """A mark: the caller's side echoes it back once the audio sent before it has played."""
        ...

    def clear(self, stream_sid: str) -> str | bytes:
        """Drop the audio the caller's side holds and has not played yet (barge-in)."""
        ...


class TwilioLine:
    """Twilio Media Streams: mu-law 8 kHz both ways, JSON text frames of 20 ms."""

    input_format = output_format = "mulaw"
    input_rate = output_rate = MULAW_RATE

    def media(self, stream_sid: str, audio: bytes) -> list[str | bytes]:
        return [media.media(stream_sid, frame) for frame in media.frames(audio)]

    def mark(self, stream_sid: str, name: str) -> str | bytes:
        return media.mark(stream_sid, name)

    def clear(self, stream_sid: str) -> str | bytes:
        return media.clear(stream_sid)
