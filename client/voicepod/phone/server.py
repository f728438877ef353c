"""The phone server, an ASGI app (Starlette): Twilio's voice webhook ``/twiml``, the Media Streams WebSocket
``/media`` (one :class:`~voicepod.phone.call.Call` and one :class:`~voicepod.agent.VoiceAgent` per call, many
calls at once), the browser page (``/`` and ``/talk``, its files under ``/page/``, its WebSocket ``/talk/ws``:
the same calls over another line, :mod:`voicepod.phone.browser`), and ``/health``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketState

from ..agent import DEFAULT_SYSTEM_PROMPT, VoiceAgent
from ..endpoint import Endpoint
from ..registry import CHAIN
from . import browser, media, twiml
from .call import Call, CallSettings
from .line import Line, TwilioLine
from .signatures import SignatureCheck

log = logging.getLogger("voicepod.phone")

# Twilio's frames are about 300 bytes of JSON; anything this big is not one of them.
MAX_FRAME_BYTES = 64 * 1024
# Twilio's webhook form is a few dozen short fields.
MAX_WEBHOOK_BYTES = 64 * 1024

# The page's files, shipped in the package (package data): no build step, nothing fetched from elsewhere.
PAGE_DIR = Path(__file__).with_name("page")

# Close codes (RFC 6455) for a call closed over bad input.
_CLOSE_CODES = {"binary_frame": 1003, "frame_too_big": 1009, "out_of_order": 1008}


@dataclass
class PhoneSettings:
    """What the server needs.

    ``stt``/``llm``/``tts``: endpoint ids; ``base_url``: the API base (RunPod's when None; serve-local's
    ``http://127.0.0.1:8000/v2``); ``api_key``: RunPod's key (``RUNPOD_API_KEY`` when None).
    ``system_prompt``, ``voice``, ``llm_options``: each call's agent. ``call``: greeting, apology, turn
    detection. ``transcripts``: a folder for call records. ``public_url``: the URL Twilio calls (what it
    signs). ``auth_token``: the Twilio auth token; without it, requests are not verified. ``page_token``: what
    the browser page's WebSocket must present (``?token=``); without it, the page talks only to a browser on
    this machine (loopback).
    """

    stt: str
    llm: str
    tts: str
    base_url: str | None = None
    api_key: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    voice: str | None = None
    llm_options: dict[str, Any] = field(default_factory=dict)
    call: CallSettings = field(default_factory=CallSettings)
    transcripts: Path | None = None
    public_url: str | None = None
    auth_token: str | None = None
    page_token: str | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES


class _Refused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def create_app(settings: PhoneSettings) -> Starlette:
    """The phone server's ASGI app."""
    check = SignatureCheck(settings.auth_token)
    state: dict[str, Any] = {"endpoints": None}
    calls: set[Call] = set()
    if not check.enabled:
        log.warning("TWILIO_AUTH_TOKEN is not set: requests to /twiml and /media are NOT verified, so anyone who "
                    "can reach this server can place calls on your endpoints. Set it before taking real calls.")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        endpoints = [Endpoint(getattr(settings, stage), base_url=settings.base_url, api_key=settings.api_key)
                     for stage in CHAIN]
        state["endpoints"] = endpoints
        try:
            yield
        finally:
            for endpoint in endpoints:
                await endpoint.aclose()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "calls": len(calls), "replying": sum(c.replying for c in calls)})

    async def voice_webhook(request: Request) -> Response:
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > MAX_WEBHOOK_BYTES:
                return PlainTextResponse("request too large", status_code=413)
        # Twilio posts application/x-www-form-urlencoded.
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if check.enabled:
            url = str(request.url)
            if settings.public_url:
                query = f"?{request.url.query}" if request.url.query else ""
                url = f"{twiml.public_base(settings.public_url, None)}/twiml{query}"
            if not check.valid(url, params, request.headers.get("x-twilio-signature")):
                log.warning("/twiml: refused a request without a valid Twilio signature (signed URL %s)", url)
                return PlainTextResponse("invalid Twilio signature", status_code=403)
        parameters = {name: params[key] for key, name in (("From", "from"), ("To", "to")) if params.get(key)}
        stream = twiml.stream_url(settings.public_url, request.headers.get("host"))
        return Response(twiml.connect_stream(stream, parameters), media_type="application/xml")

    async def media_socket(websocket: WebSocket) -> None:
        if check.enabled:
            url = twiml.stream_url(settings.public_url, websocket.headers.get("host"))
            if not check.valid(url, {}, websocket.headers.get("x-twilio-signature")):
                log.warning("/media: refused a connection without a valid Twilio signature (signed URL %s)", url)
                await websocket.close(code=1008)  # before accepting: the handshake is answered 403
                return
        await websocket.accept()
        call = new_call(TwilioLine(), websocket.send_text)
        reason = "disconnected"
        try:
            reason = await _serve(websocket, call, settings.max_frame_bytes)
        except _Refused as refused:
            reason = f"{refused.code}: {refused.message}"
            log.warning("call %s: closed: %s", call.record.call_sid or "(not started)", reason)
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close(code=_CLOSE_CODES.get(refused.code, 1007), reason=refused.code)
        finally:
            await end_call(call, reason)
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code=1000)

    def new_call(line: Line, send: Any) -> Call:
        stt, llm, tts = state["endpoints"]
        agent = VoiceAgent(stt, llm, tts, system_prompt=settings.system_prompt, voice=settings.voice,
                           audio_format=line.output_format, sample_rate=line.output_rate,
                           llm_options=settings.llm_options, confirm_playback=True)
        call = Call(agent, send, settings.call, line=line)
        calls.add(call)
        return call

    async def end_call(call: Call, reason: str) -> None:
        record = await call.end(reason)
        calls.discard(call)
        if settings.transcripts and call.started:
            try:
                path = record.write(settings.transcripts)
                log.info("call %s: record written to %s", record.call_sid, path)
            except OSError as exc:
                log.error("call %s: could not write its record: %s", record.call_sid, exc)

    async def page(request: Request) -> Response:
        return FileResponse(PAGE_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def page_socket(websocket: WebSocket) -> None:
        await websocket.accept()  # first, so that the page can show why it is refused
        why = browser.refusal(websocket, settings.page_token)
        if why is not None:
            log.warning("/talk/ws: refused %s: %s", websocket.client.host if websocket.client else "?", why)
            await browser.close_with(websocket, browser.CLOSE_REFUSED, why)
            return
        send = browser.sender(websocket)
        line = browser.BrowserLine()
        call = new_call(line, send)
        call_sid = browser.new_call_sid()
        await send(json.dumps({"event": "ready", "call_sid": call_sid, "input_rate": line.input_rate,
                               "output_rate": line.output_rate,
                               "end_of_turn_s": settings.call.turn.end_silence_s}))
        call.begin(call_sid, call_sid, {"from": "browser"})
        watcher = asyncio.create_task(browser.watch_turns(call, send))
        reason = "disconnected"
        try:
            reason = await browser.serve_page(websocket, call, settings.max_frame_bytes)
        except browser.PageRefused as refused:
            reason = f"{refused.code}: {refused.message}"
            log.warning("call %s: closed: %s", call_sid, reason)
            await browser.close_with(websocket, 1007, refused.message)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await end_call(call, reason)
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await browser.flush_turns(call, send, {})  # every turn as its record ends: what was heard
                await websocket.close(code=1000)

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/twiml", voice_webhook, methods=["GET", "POST"]),
            WebSocketRoute("/media", media_socket),
            Route("/", page),
            Route("/talk", page),
            WebSocketRoute("/talk/ws", page_socket),
            Mount("/page", StaticFiles(directory=PAGE_DIR), name="page"),
        ],
        lifespan=lifespan,
    )


async def _serve(websocket: WebSocket, call: Call, max_frame_bytes: int) -> str:
    """Read the call's frames until it ends; returns why it ended, raises :class:`_Refused` on bad input."""
    ignored = 0
    while not call.stopped:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return "disconnected"
        text = message.get("text")
        if text is None:
            raise _Refused("binary_frame", "a binary frame: Media Streams frames are JSON text")
        # uvicorn's ws_max_size closes first; this guards an app served without it. Twilio's frames are ASCII
        # JSON, so characters are bytes.
        if len(text) > max_frame_bytes:
            raise _Refused("frame_too_big", f"a frame of {len(text)} bytes (at most {max_frame_bytes})")
        try:
            await call.handle(media.parse(text))
        except media.ProtocolError as exc:
            if exc.code not in ("unknown_event", "bad_payload"):
                raise _Refused(exc.code, exc.message) from None
            # A frame we cannot use but that harms nothing: skipped (Twilio may add events over time).
            ignored += 1
            call.record.ignored_frames = ignored
            if ignored <= 5:
                log.warning("call %s: frame ignored: %s", call.record.call_sid or "(not started)", exc.message)
    return "stop"
