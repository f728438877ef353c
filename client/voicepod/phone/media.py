"""Twilio Media Streams messages, both ways: JSON text frames carrying base64 G.711 mu-law at 8 kHz.

Twilio sends ``connected``, ``start``, ``media``, ``mark``, ``dtmf`` and ``stop``; the server sends ``media``,
``mark`` and ``clear``. Field names follow Twilio's (camelCase); unknown fields are ignored, as Twilio adds some
over time. Shared by the server and the simulated caller.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz: the size of Twilio's frames
ENCODING = "audio/x-mulaw"
SILENCE = b"\xff"  # mu-law code for zero


class ProtocolError(Exception):
    """A frame that breaks the protocol. ``code``: ``malformed_json``, ``invalid_message``, ``unknown_event``,
    ``bad_payload`` or ``out_of_order``."""

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
