"""The phone server, an ASGI app (Starlette): Twilio's voice webhook ``/twiml``, the Media Streams WebSocket
``/media`` (one :class:`~voicepod.phone.call.Call` and one :class:`~voicepod.agent.VoiceAgent` per call, many
calls at once), the browser page (``/`` and ``/talk``, its files under ``/page/``, its WebSocket ``/talk/ws``:
the same calls over another line, :mod:`voicepod.phone.browser`), and ``/health``.

Every line's WebSocket is read by one loop, :func:`serve_line`, through the line's serializer; a route adds only
what is its own (who may connect, what the page is told besides the call)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
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
from . import browser, twiml
from .call import HISTORY_MESSAGES, Call, CallSettings
from .line import CallStarted, Closing, Hangup, Line, LineRefused
from .signatures import SignatureCheck
from .turn_model import TurnModel
from .twilio import MAX_FRAME_BYTES, TwilioLine

log = logging.getLogger("voicepod.phone")

# Twilio's webhook form is a few dozen short fields.
MAX_WEBHOOK_BYTES = 64 * 1024

# The page's files, shipped in the package (package data): no build step, nothing fetched from elsewhere.
PAGE_DIR = Path(__file__).with_name("page")


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


def create_app(settings: PhoneSettings, turn_model: TurnModel | None = None) -> Starlette:
    """The phone server's ASGI app. ``turn_model``: the smart turn detector's model (loaded from where
    ``make models`` puts it when the settings ask for that detector and none is given)."""
    return PhoneApp(settings, turn_model).app


class PhoneApp:
    """The server's state (its endpoints, the turn model every call shares, the calls in progress) and its
    routes."""

    def __init__(self, settings: PhoneSettings, turn_model: TurnModel | None = None):
        self.settings = settings
        # One model for the server: a session runs from several threads, and each call's decisions are in threads.
        self.turn_model = turn_model or (TurnModel.load() if settings.call.smart else None)
        self.check = SignatureCheck(settings.auth_token)
        self.calls: set[Call] = set()
        self.endpoints: list[Endpoint] = []
        self.draining = False  # shutting down: the calls in progress go on, no new one starts (phone/shutdown.py)
        if not self.check.enabled:
            log.warning("TWILIO_AUTH_TOKEN is not set: requests to /twiml and /media are NOT verified, so anyone "
                        "who can reach this server can place calls on your endpoints. Set it before taking real "
                        "calls.")
        self.app = Starlette(
            routes=[
                Route("/health", self.health),
                Route("/twiml", self.voice_webhook, methods=["GET", "POST"]),
                WebSocketRoute("/media", self.media_socket),
                Route("/", self.page),
                Route("/talk", self.page),
                WebSocketRoute("/talk/ws", self.page_socket),
                Mount("/page", StaticFiles(directory=PAGE_DIR), name="page"),
            ],
            lifespan=self.lifespan,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        s = self.settings
        self.endpoints = [Endpoint(getattr(s, stage), base_url=s.base_url, api_key=s.api_key) for stage in CHAIN]
        try:
            yield
        finally:
            for endpoint in self.endpoints:
                await endpoint.aclose()

    async def health(self, request: Request) -> Response:
        """``calls`` in progress, how many are ``replying``, and the server's asyncio ``tasks`` (every call's and
        connection's: what a soak watches for leaks)."""
        return JSONResponse({"status": "draining" if self.draining else "ok", "calls": len(self.calls),
                             "replying": sum(call.replying for call in self.calls),
                             "tasks": len(asyncio.all_tasks())}, status_code=503 if self.draining else 200)

    async def voice_webhook(self, request: Request) -> Response:
        if self.draining:  # Twilio then tries the number's fallback URL
            return PlainTextResponse("shutting down", status_code=503)
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > MAX_WEBHOOK_BYTES:
                return PlainTextResponse("request too large", status_code=413)
        # Twilio posts application/x-www-form-urlencoded.
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        public_url = self.settings.public_url
        if self.check.enabled:
            url = str(request.url)
            if public_url:
                query = f"?{request.url.query}" if request.url.query else ""
                url = f"{twiml.public_base(public_url, None)}/twiml{query}"
            if not self.check.valid(url, params, request.headers.get("x-twilio-signature")):
                log.warning("/twiml: refused a request without a valid Twilio signature (signed URL %s)", url)
                return PlainTextResponse("invalid Twilio signature", status_code=403)
        parameters = {name: params[key] for key, name in (("From", "from"), ("To", "to")) if params.get(key)}
        stream = twiml.stream_url(public_url, request.headers.get("host"))
        return Response(twiml.connect_stream(stream, parameters), media_type="application/xml")

    async def media_socket(self, websocket: WebSocket) -> None:
        if self.draining:
            await websocket.close(code=1013)  # before accepting: the handshake is refused
            return
        if self.check.enabled:
            url = twiml.stream_url(self.settings.public_url, websocket.headers.get("host"))
            if not self.check.valid(url, {}, websocket.headers.get("x-twilio-signature")):
                log.warning("/media: refused a connection without a valid Twilio signature (signed URL %s)", url)
                await websocket.close(code=1008)  # before accepting: the handshake is answered 403
                return
        await websocket.accept()
        line = TwilioLine(self.settings.max_frame_bytes)
        call = self._new_call(line, sender(websocket))
        await self._serve(websocket, line, call)
        await _close(websocket)

    async def page(self, request: Request) -> Response:
        return FileResponse(PAGE_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def page_socket(self, websocket: WebSocket) -> None:
        await websocket.accept()  # first, so that the page can show why it is refused
        send = sender(websocket)
        why = browser.refusal(websocket, self.settings.page_token)
        if why is None and self.draining:
            why = "the server is shutting down: try again in a moment"
        if why is not None:
            log.warning("/talk/ws: refused %s: %s", websocket.client.host if websocket.client else "?", why)
            await _close(websocket, browser.refused_page(why), send)
            return
        line = browser.BrowserLine(self.settings.max_frame_bytes)
        call = self._new_call(line, send)
        call_sid = browser.new_call_sid()
        await send(line.ready(call_sid, self.settings.call.detector_settings().end_silence_s))
        await call.on(CallStarted(call_sid, call_sid, {"from": "browser"}))
        watcher = asyncio.create_task(browser.watch_turns(call, send))
        try:
            await self._serve(websocket, line, call)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await browser.flush_turns(call, send, {})  # every turn as its record ends: what was heard
        await _close(websocket)

    def _new_call(self, line: Line, send: Callable[[str | bytes], Awaitable[None]]) -> Call:
        stt, llm, tts = self.endpoints
        s = self.settings
        agent = VoiceAgent(stt, llm, tts, system_prompt=s.system_prompt, voice=s.voice,
                           audio_format=line.output_format, sample_rate=line.output_rate,
                           llm_options=s.llm_options, max_history=HISTORY_MESSAGES, confirm_playback=True)
        call = Call(agent, line, send, s.call, turn_model=self.turn_model)
        self.calls.add(call)
        return call

    async def _serve(self, websocket: WebSocket, line: Line, call: Call) -> None:
        """Run the call over the socket until it ends; close the socket over a refused frame; end the call."""
        reason = "disconnected"
        try:
            reason = await serve_line(websocket, line, call)
        except LineRefused as refused:
            reason = f"{refused.code}: {refused.message}"
            log.warning("call %s: closed: %s", call.record.call_sid or "(not started)", reason)
            await _close(websocket, line.closing(refused), sender(websocket))
        finally:
            record = await call.end(reason)
            self.calls.discard(call)
            if self.settings.transcripts and call.started:
                try:
                    path = record.write(self.settings.transcripts)
                    log.info("call %s: record written to %s", record.call_sid, path)
                except OSError as exc:
                    log.error("call %s: could not write its record: %s", record.call_sid, exc)


async def serve_line(websocket: WebSocket, line: Line, call: Call) -> str:
    """Read a line's frames into its call until the line hangs up (``"stop"``) or goes (``"disconnected"``).
    Raises :class:`~voicepod.phone.line.LineRefused` for a frame that breaks the line's protocol."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return "disconnected"
        frame = message["text"] if message.get("text") is not None else message.get("bytes") or b""
        event = line.parse(frame)
        if isinstance(event, Hangup):
            return "stop"
        if event is not None:
            await call.on(event)


def sender(websocket: WebSocket) -> Callable[[str | bytes], Awaitable[None]]:
    """Sends one frame, text or binary, one at a time (a call's turns and the page's turn watcher all send)."""
    lock = asyncio.Lock()

    async def send(frame: str | bytes) -> None:
        async with lock:
            if isinstance(frame, bytes):
                await websocket.send_bytes(frame)
            else:
                await websocket.send_text(frame)

    return send


async def _close(websocket: WebSocket, closing: Closing | None = None,
                 send: Callable[[str | bytes], Awaitable[None]] | None = None) -> None:
    """Close the socket if it is still open: normally, or as ``closing`` says (its frames sent first)."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        if closing is None:
            await websocket.close(code=1000)
            return
        for frame in closing.frames:
            await (send or sender(websocket))(frame)
        await websocket.close(code=closing.code, reason=closing.reason)
