"""A Twilio phone bot built with Pipecat, whose STT, LLM and TTS run on your voicepod endpoints.

Pipecat does the call: Twilio's media stream over a FastAPI WebSocket (Pipecat's transport and Twilio
serializer, G.711 at 8 kHz), Silero VAD, turn-taking and barge-in. voicepod's services do the models.

    pip install 'voicepod[pipecat]'
    export RUNPOD_API_KEY=...                    # and the endpoint ids:
    export VOICEPOD_STT_ENDPOINT=... VOICEPOD_LLM_ENDPOINT=... VOICEPOD_TTS_ENDPOINT=...
    python examples/pipecat_phone_bot.py --port 8765

Expose the port over HTTPS (a tunnel or a proxy) and set the Twilio number's voice webhook to
``https://YOUR-HOST/twiml`` (POST): the answer tells Twilio to stream the call to ``wss://YOUR-HOST/ws``. Set
``TWILIO_AUTH_TOKEN``: then only Twilio may use either (its ``X-Twilio-Signature`` is checked, as ``voicepod
phone`` checks it; ``--public-url`` says which URL Twilio signed when a proxy changes it), and with
``TWILIO_ACCOUNT_SID`` too the call is hung up when the bot ends it.

Against ``voicepod serve-local`` instead of RunPod: ``--base-url http://127.0.0.1:8000/v2`` (the endpoint ids
default to serve-local's names, ``stt``, ``llm`` and ``tts``). Call it as Twilio would with ``voicepod call
ws://127.0.0.1:8765/ws question.wav``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from twilio.request_validator import RequestValidator
from voicepod import Endpoint
from voicepod.pipecat import RunPodLLMService, RunPodSTTService, RunPodTTSService

TWILIO_RATE = 8000  # G.711 mu-law: the serializer converts to and from PCM16 at the pipeline's rate
SYSTEM = "You are a friendly phone assistant. Answer in one or two short sentences, without lists or markdown."
GREETING = "Hello! How can I help you today?"

# Shared by every call, so calls reuse the open connections to the API.
ENDPOINTS: dict[str, Endpoint] = {}
# The https:// URL Twilio calls, when a proxy or tunnel rewrites it (--public-url): what Twilio signs.
PUBLIC_URL = os.environ.get("PUBLIC_URL")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    for shared in ENDPOINTS.values():
        await shared.aclose()


app = FastAPI(lifespan=lifespan)


def endpoint(stage: str) -> Endpoint:
    """The ``stage`` endpoint: its id from ``VOICEPOD_<STAGE>_ENDPOINT`` (default: the stage, serve-local's
    name); the key from ``RUNPOD_API_KEY`` and the API base from ``RUNPOD_ENDPOINT_BASE_URL``, as Endpoint does."""
    if stage not in ENDPOINTS:
        ENDPOINTS[stage] = Endpoint(os.environ.get(f"VOICEPOD_{stage.upper()}_ENDPOINT", stage))
    return ENDPOINTS[stage]


def signed_by_twilio(url: str, params: dict[str, str], signature: str | None) -> bool:
    """Whether ``signature`` is Twilio's for ``url`` and ``params``; with no ``TWILIO_AUTH_TOKEN``, anything is."""
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    return not token or bool(signature and RequestValidator(token).validate(url, params, signature))


def public(host: str | None, scheme: str) -> str:
    base = PUBLIC_URL.rstrip("/").split("://", 1)[1] if PUBLIC_URL else host or "localhost"
    return f"{scheme}://{base}"


@app.post("/twiml")
async def twiml(request: Request) -> Response:
    """Twilio's voice webhook: stream this call to our WebSocket."""
    params = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    if not signed_by_twilio(f"{public(request.headers.get('host'), 'https')}/twiml", params,
                            request.headers.get("x-twilio-signature")):
        return Response("invalid Twilio signature", status_code=403)
    url = f"{public(request.headers.get('host'), 'wss')}/ws"
    stream = f"<Stream url={quoteattr(url)} />"
    body = f"<?xml version='1.0' encoding='UTF-8'?><Response><Connect>{stream}</Connect></Response>"
    return Response(content=body, media_type="application/xml")


@app.websocket("/ws")
async def call(websocket: WebSocket) -> None:
    """One phone call: Twilio's media stream in, the bot's voice out."""
    url = f"{public(websocket.headers.get('host'), 'wss')}/ws"
    if not signed_by_twilio(url, {}, websocket.headers.get("x-twilio-signature")):
        await websocket.close(code=1008)  # before accepting: the handshake is answered 403
        return
    await websocket.accept()
    _, call_data = await parse_telephony_websocket(websocket)
    account_sid, auth_token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        account_sid=account_sid,
        auth_token=auth_token,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=bool(account_sid and auth_token)),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True, serializer=serializer),
    )

    stt = RunPodSTTService(endpoint=endpoint("stt"), language="en")
    llm = RunPodLLMService(
        endpoint=endpoint("llm"),
        settings=RunPodLLMService.Settings(system_instruction=SYSTEM, max_tokens=80, temperature=0.7),
    )
    tts = RunPodTTSService(endpoint=endpoint("tts"))

    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline([
        transport.input(),
        stt,
        aggregators.user(),
        llm,
        tts,
        transport.output(),
        aggregators.assistant(),
    ])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=TWILIO_RATE, audio_out_sample_rate=TWILIO_RATE),
    )

    @transport.event_handler("on_client_connected")
    async def greet(transport: FastAPIWebsocketTransport, client: object) -> None:
        await worker.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_client_disconnected")
    async def hang_up(transport: FastAPIWebsocketTransport, client: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (behind your HTTPS proxy)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--base-url", help="endpoints' API base, e.g. http://127.0.0.1:8000/v2 for serve-local")
    parser.add_argument("--public-url", help="the https:// URL Twilio reaches this bot at, when a proxy rewrites it")
    args = parser.parse_args()
    if args.base_url:
        os.environ["RUNPOD_ENDPOINT_BASE_URL"] = args.base_url
    global PUBLIC_URL
    PUBLIC_URL = args.public_url or PUBLIC_URL
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
