"""Twilio's Media Streams, all of it: the messages both ways (JSON text frames carrying base64 G.711 mu-law at
8 kHz) and :class:`TwilioLine`, the serializer that turns them into caller events for a call.

Twilio sends ``connected``, ``start``, ``media``, ``mark``, ``dtmf`` and ``stop``; the server sends ``media``,
``mark`` and ``clear``. Field names follow Twilio's (camelCase); unknown fields are ignored, as Twilio adds some
over time. The frames Twilio sends are built here too, for the simulated caller (:mod:`voicepod.phone.caller`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .line import CallerAudio, CallerEvent, CallStarted, Closing, Digit, Hangup, LineRefused, Played, Skipped

SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz: the size of Twilio's frames
ENCODING = "audio/x-mulaw"
SILENCE = b"\xff"  # mu-law code for zero


# Twilio's frames are about 300 bytes of JSON; anything this big is not one of them.
MAX_FRAME_BYTES = 64 * 1024
# Close codes (RFC 6455) for a call closed over a refused frame; any other refusal closes with 1007.
CLOSE_CODES = {"binary_frame": 1003, "frame_too_big": 1009, "out_of_order": 1008}
# Codes of frames that harm nothing: skipped, the call goes on (Twilio may add events over time).
SKIPPED = frozenset({"unknown_event", "bad_payload"})


class ProtocolError(Exception):
    """A frame that is not a Media Streams message. ``code``: ``malformed_json``, ``invalid_message``,
    ``unknown_event`` or ``bad_payload``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class MediaFormat(_Message):
    encoding: str
    sample_rate: int = Field(alias="sampleRate")
    channels: int = 1


class StartInfo(_Message):
    stream_sid: str = Field(alias="streamSid", min_length=1, max_length=128)
    call_sid: str = Field(alias="callSid", min_length=1, max_length=128)
    account_sid: str | None = Field(None, alias="accountSid")
    tracks: list[str] = ["inbound"]
    custom_parameters: dict[str, str] = Field(default_factory=dict, alias="customParameters")
    media_format: MediaFormat = Field(alias="mediaFormat")


class Connected(_Message):
    event: Literal["connected"]
    protocol: str | None = None
    version: str | None = None


class Start(_Message):
    event: Literal["start"]
    start: StartInfo


class MediaInfo(_Message):
    payload: str
    track: str = "inbound"
    chunk: str | None = None
    timestamp: str | None = None

    def audio(self) -> bytes:
        """The frame's mu-law bytes; :class:`ProtocolError` (``bad_payload``) when it is not base64."""
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("bad_payload", f"media payload is not base64: {exc}") from None


class Media(_Message):
    event: Literal["media"]
    media: MediaInfo


class MarkInfo(_Message):
    name: str


class Mark(_Message):
    event: Literal["mark"]
    mark: MarkInfo


class DtmfInfo(_Message):
    digit: str
    track: str | None = None


class Dtmf(_Message):
    event: Literal["dtmf"]
    dtmf: DtmfInfo


class Stop(_Message):
    event: Literal["stop"]


Message = Connected | Start | Media | Mark | Dtmf | Stop
EVENTS = ("connected", "start", "media", "mark", "dtmf", "stop")
_message = TypeAdapter(Annotated[Message, Field(discriminator="event")])


def parse(text: str | bytes) -> Message:
    """One frame from Twilio to a message model; :class:`ProtocolError` when it is not one."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("malformed_json", f"frame is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "frame is not a JSON object")
    event = data.get("event")
    if event not in EVENTS:
        raise ProtocolError("unknown_event", f"unknown event {str(event)[:40]!r}")
    try:
        return _message.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:])
        raise ProtocolError("invalid_message", f"{event}: {where}: {first['msg']}") from None


# --- the serializer ---------------------------------------------------------------------------------------


class TwilioLine:
    """Twilio Media Streams for one call: mu-law 8 kHz both ways, JSON text frames of 20 ms.

    ``max_frame_bytes``: a longer frame is refused. The call starts with Twilio's ``start``, which must come
    before any ``media``, once, with audio this line carries; the stream id it names goes on every frame out.
    """

    input_format = output_format = "mulaw"
    input_rate = output_rate = SAMPLE_RATE

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES):
        self.max_frame_bytes = max_frame_bytes
        self.stream_sid: str | None = None

    def parse(self, frame: str | bytes) -> CallerEvent | None:
        if isinstance(frame, bytes):
            raise LineRefused("binary_frame", "a binary frame: Media Streams frames are JSON text")
        # uvicorn's ws_max_size closes first; this guards an app served without it. Twilio's frames are ASCII
        # JSON, so characters are bytes.
        if len(frame) > self.max_frame_bytes:
            raise LineRefused("frame_too_big", f"a frame of {len(frame)} bytes (at most {self.max_frame_bytes})")
        try:
            return self._event(parse(frame))
        except ProtocolError as exc:
            if exc.code in SKIPPED:
                return Skipped(exc.message)
            raise LineRefused(exc.code, exc.message) from None

    def _event(self, message: Message) -> CallerEvent | None:
        if isinstance(message, Start):
            return self._start(message.start)
        if isinstance(message, Media):
            if self.stream_sid is None:
                raise LineRefused("out_of_order", "media before start")
            return CallerAudio(message.media.audio()) if message.media.track == "inbound" else None
        if isinstance(message, Mark):
            return Played(message.mark.name)
        if isinstance(message, Dtmf):
            return Digit(message.dtmf.digit[:1])
        if isinstance(message, Stop):
            return Hangup()
        return None  # connected

    def _start(self, info: StartInfo) -> CallStarted:
        if self.stream_sid is not None:
            raise LineRefused("out_of_order", "a second start")
        fmt = info.media_format
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != (ENCODING, SAMPLE_RATE, 1):
            raise LineRefused("invalid_message", f"unsupported audio {fmt.encoding} {fmt.sample_rate} Hz "
                              f"x{fmt.channels}: expected {ENCODING} {SAMPLE_RATE} Hz mono")
        self.stream_sid = info.stream_sid
        return CallStarted(info.call_sid, info.stream_sid, dict(list(info.custom_parameters.items())[:20]))

    def media(self, audio: bytes) -> list[str | bytes]:
        return [media(self.stream_sid or "", frame) for frame in frames(audio)]

    def mark(self, name: str) -> str | bytes:
        return mark(self.stream_sid or "", name)

    def clear(self) -> str | bytes:
        return clear(self.stream_sid or "")

    def closing(self, refused: LineRefused) -> Closing:
        return Closing([], CLOSE_CODES.get(refused.code, 1007), refused.code)


# --- frames the server sends -----------------------------------------------------------------------------


def media(stream_sid: str, audio: bytes) -> str:
    """Audio (mu-law 8 kHz) for Twilio to play."""
    return json.dumps({"event": "media", "streamSid": stream_sid,
                       "media": {"payload": base64.b64encode(audio).decode()}})


def mark(stream_sid: str, name: str) -> str:
    """A mark: Twilio echoes it back once the audio sent before it has played (or at once on ``clear``)."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    """Drop the audio Twilio has buffered and not yet played (barge-in)."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})


def frames(audio: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    """``audio`` cut into frames of ``size`` bytes (the last may be shorter)."""
    return [audio[i:i + size] for i in range(0, len(audio), size)]


# --- frames Twilio sends (the simulated caller's side) ---------------------------------------------------


def twilio_connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def twilio_start(stream_sid: str, call_sid: str, custom_parameters: dict[str, str] | None = None,
                 account_sid: str = "AC00000000000000000000000000000000") -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {
            "accountSid": account_sid, "streamSid": stream_sid, "callSid": call_sid, "tracks": ["inbound"],
            "customParameters": custom_parameters or {},
            "mediaFormat": {"encoding": ENCODING, "sampleRate": SAMPLE_RATE, "channels": 1},
        },
    })


def twilio_media(stream_sid: str, audio: bytes, sequence: int, chunk: int, timestamp_ms: int) -> str:
    return json.dumps({
        "event": "media", "sequenceNumber": str(sequence), "streamSid": stream_sid,
        "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms),
                  "payload": base64.b64encode(audio).decode()},
    })


def twilio_mark(stream_sid: str, name: str, sequence: int) -> str:
    return json.dumps({"event": "mark", "sequenceNumber": str(sequence), "streamSid": stream_sid,
                       "mark": {"name": name}})


def twilio_dtmf(stream_sid: str, digit: str, sequence: int) -> str:
    return json.dumps({"event": "dtmf", "sequenceNumber": str(sequence), "streamSid": stream_sid,
                       "dtmf": {"track": "inbound_track", "digit": digit}})


def twilio_stop(stream_sid: str, call_sid: str, sequence: int) -> str:
    return json.dumps({"event": "stop", "sequenceNumber": str(sequence), "streamSid": stream_sid,
                       "stop": {"accountSid": "AC00000000000000000000000000000000", "callSid": call_sid}})


def parse_outbound(text: str | bytes) -> dict[str, Any]:
    """A frame the server sent, as a dict with ``event`` (``media``, ``mark``, ``clear``); for the caller."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("event") not in ("media", "mark", "clear"):
        raise ProtocolError("invalid_message", f"unexpected frame from the server: {str(text)[:80]!r}")
    return data
