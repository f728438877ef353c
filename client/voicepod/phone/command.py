"""``voicepod phone``: the Twilio Media Streams phone server (see :mod:`voicepod.phone.server`).

Imports nothing of the ``phone`` extra until the command runs, so the base CLI starts without it.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..cli_errors import UsageError
from ..registry import CHAIN
from ..turn import add_endpoint_options, add_reply_options, check_endpoint_options, reply_llm_options
from .barge_in import DEFAULT_BACKCHANNEL_MAX_S, DEFAULT_CUT_S
from .call import DEFAULT_GREETING, DEFAULT_MAX_SILENCE_S, TURN_DETECTORS
from .end_of_turn import DEFAULT_TEXT_VETO, DEFAULT_THRESHOLD
from .vad import DEFAULT_END_SILENCE_S, DEFAULT_PAUSE_S

# Under the 30 s that orchestrators commonly allow between SIGTERM and SIGKILL (Kubernetes' default grace period),
# so that the calls still going at its end are closed by the server, records written, jobs cancelled.
DEFAULT_DRAIN_S = 20.0


def register(commands: argparse._SubParsersAction) -> None:
    phone = commands.add_parser(
        "phone",
        description="Serve Twilio's voice webhook (POST /twiml) and Media Streams (WebSocket /media); each call "
        "gets its own voice agent. Endpoint ids default to VOICEPOD_STT_ENDPOINT, VOICEPOD_LLM_ENDPOINT and "
        "VOICEPOD_TTS_ENDPOINT, the API key to RUNPOD_API_KEY, the base URL to RUNPOD_ENDPOINT_BASE_URL. "
        "Set TWILIO_AUTH_TOKEN so that only Twilio can place calls. Also serves a page to talk to the agent "
        "in a browser (GET /): to a browser on this machine only, unless --page-token is set.",
    )
    phone.add_argument("--local", action="store_true",
                       help="start serve-local with the embedded models and answer calls with them (no account)")
    add_endpoint_options(phone)
    phone.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    phone.add_argument("--port", type=int, default=8080)
    phone.add_argument("--public-url", help="the https:// URL Twilio reaches this server at (behind a proxy or "
                       "tunnel): the stream URL in the TwiML and the URL signatures are checked against")
    phone.add_argument("--page-token", default=os.environ.get("VOICEPOD_PAGE_TOKEN") or None,
                       help="a secret the browser page must present (its URL carries it as ?token=); without "
                       "one, the page talks only to a browser on this machine (default: VOICEPOD_PAGE_TOKEN)")
    add_reply_options(phone)
    phone.add_argument("--greeting", default=DEFAULT_GREETING, help='said when a call starts ("" for none)')
    phone.add_argument("--transcripts", type=Path, metavar="DIR", help="write DIR/<callSid>.json when a call ends")
    _add_turn_options(phone)
    phone.add_argument("--drain", type=float, default=DEFAULT_DRAIN_S, metavar="SECONDS",
                       help="on SIGTERM or Ctrl-C, stop taking calls and let those in progress end for up to this "
                            f"long before closing them (default {DEFAULT_DRAIN_S:g}; 0: close them at once)")
    phone.set_defaults(func=_phone)


def _add_turn_options(phone: argparse.ArgumentParser) -> None:
    """When the caller's turn ends, and what speech over a reply does."""
    phone.add_argument("--turn-detector", choices=TURN_DETECTORS, default="smart",
                       help="smart (default): at each --pause the turn model (Smart Turn) and the transcript so far "
                       "decide whether the caller is done, waiting at most --max-silence; speech over a reply cuts "
                       "it unless it is a backchannel ('uh-huh'). silence: the turn ends after --end-silence of "
                       "silence, and any speech over a reply cuts it")
    phone.add_argument("--max-silence", type=float, default=DEFAULT_MAX_SILENCE_S, metavar="SECONDS",
                       help=f"smart: the longest silence before the turn ends (default {DEFAULT_MAX_SILENCE_S})")
    phone.add_argument("--end-threshold", type=float, default=DEFAULT_THRESHOLD, metavar="P",
                       help=f"smart: the turn model's probability above which the caller is done "
                       f"(default {DEFAULT_THRESHOLD})")
    phone.add_argument("--text-veto", type=float, default=DEFAULT_TEXT_VETO, metavar="CONFIDENCE",
                       help=f"smart: the confidence from which a transcript that reads as unfinished keeps the turn "
                       f"open (default {DEFAULT_TEXT_VETO}; above 1: the text is not read)")
    phone.add_argument("--barge-in-after", type=float, default=DEFAULT_CUT_S, metavar="SECONDS",
                       help=f"smart: the caller's speech over a reply that cuts it unless their words are a "
                       f"backchannel (default {DEFAULT_CUT_S})")
    phone.add_argument("--backchannel-max", type=float, default=DEFAULT_BACKCHANNEL_MAX_S, metavar="SECONDS",
                       help=f"smart: speech over a reply this long stops it for good whatever the words "
                       f"(default {DEFAULT_BACKCHANNEL_MAX_S})")
    phone.add_argument("--end-silence", type=float, default=DEFAULT_END_SILENCE_S, metavar="SECONDS",
                       help=f"silence: the silence that ends the caller's turn (default {DEFAULT_END_SILENCE_S})")
    phone.add_argument("--pause", type=float, default=DEFAULT_PAUSE_S, metavar="SECONDS",
                       help=f"a silence this long within the caller's turn starts the turn speculatively, its reply "
                       f"held until the end of the turn confirms it; smart decides there (default {DEFAULT_PAUSE_S}; "
                       f"silence: 0 for never)")
    phone.add_argument("--speculate", action=argparse.BooleanOptionalAction, default=True,
                       help="start each turn at the caller's first --pause, so that the transcript is made "
                       "during the end-of-turn silence (default: on; always on with --turn-detector smart)")
    phone.add_argument("--max-utterance", type=float, default=30.0, metavar="SECONDS",
                       help="a caller's turn is cut at this length (default 30)")


def _phone(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `voicepod --help` must start without the phone extra (the CLI names it
    # when one of these is missing).
    import uvicorn

    from .barge_in import BargeInSettings
    from .call import CallSettings
    from .end_of_turn import EndOfTurnSettings
    from .server import PhoneApp, PhoneSettings
    from .shutdown import DrainingServer
    from .vad import TurnSettings

    _check_turn_options(args)
    if args.drain < 0:
        raise UsageError("--drain takes 0 seconds or more")
    llm_options = reply_llm_options(args)
    if args.public_url and not _is_http_url(args.public_url):
        raise UsageError(f"--public-url must be a full URL like https://phone.example.com, got {args.public_url!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll of every job otherwise
    if args.local:  # serve-local's endpoints, named as the stages, and its base URL once it runs
        for stage in CHAIN:
            setattr(args, stage, stage)
    else:
        check_endpoint_options(args, "; or --local for the embedded models")
    _check_port(args.host, args.port)  # before --local spends a minute loading models
    settings = PhoneSettings(
        stt=args.stt, llm=args.llm, tts=args.tts, base_url=args.base_url, api_key=args.api_key,
        system_prompt=args.system_prompt, voice=args.voice,
        llm_options=llm_options,
        call=CallSettings(greeting=args.greeting, speculate=args.speculate, turn_detector=args.turn_detector,
                          turn=TurnSettings(end_silence_s=args.end_silence, max_utterance_s=args.max_utterance,
                                            pause_s=args.pause),
                          max_silence_s=args.max_silence,
                          end_of_turn=EndOfTurnSettings(threshold=args.end_threshold, text_veto=args.text_veto),
                          barge_in=BargeInSettings(cut_s=args.barge_in_after,
                                                   backchannel_max_s=args.backchannel_max)),
        transcripts=args.transcripts, public_url=args.public_url,
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None, page_token=args.page_token,
    )
    phone_app = PhoneApp(settings)
    config = uvicorn.Config(phone_app.app, host=args.host, port=args.port, ws_max_size=settings.max_frame_bytes,
                            log_level="info", lifespan="on")
    server = DrainingServer(config, phone_app, args.drain)
    if not args.local:
        print(page_note(args.host, args.port, args.page_token), file=sys.stderr)
        server.run()
        return 0
    return _run_local(args, settings, server)


def _check_turn_options(args: argparse.Namespace) -> None:
    if args.end_silence <= 0 or args.max_utterance <= 1:
        raise UsageError("--end-silence must be above 0 and --max-utterance above 1 second")
    if args.turn_detector == "silence":
        if args.pause < 0 or (args.speculate and args.pause and args.pause >= args.end_silence):
            raise UsageError(f"--pause must be 0 (no speculation) or shorter than --end-silence ({args.end_silence} s)")
        return
    if not args.speculate:
        raise UsageError("--turn-detector smart always speculates: --no-speculate needs --turn-detector silence")
    if not 0 < args.pause < args.max_silence:
        raise UsageError(f"--turn-detector smart decides at each --pause: it must be above 0 and shorter than "
                         f"--max-silence ({args.max_silence} s)")
    if not 0 <= args.end_threshold < 1 or args.text_veto < 0:
        raise UsageError("--end-threshold must be from 0 to under 1, and --text-veto 0 or more")
    if not 0 < args.barge_in_after <= args.backchannel_max:
        raise UsageError("--barge-in-after must be above 0 and no longer than --backchannel-max")


def page_url(host: str, port: int, token: str | None) -> str:
    """The browser page's URL on this machine (with its token, when one is set)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={quote(token)}" if token else "")


def page_note(host: str, port: int, token: str | None) -> str:
    note = f"talk to it in a browser: {page_url(host, port, token)}"
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        note += ("\n  (without --page-token the page answers only a browser on this machine; browsers also open "
                 "the microphone only on https:// or localhost, so serve others through an https proxy)")
    return note


def _check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"{host}:{port} is already in use (another voicepod phone?): stop it or pick "
                                 "another --port") from None
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query


def _run_local(args: argparse.Namespace, settings, server) -> int:
    """Start serve-local with the three embedded workers, as ``voicepod demo`` does, and serve calls on it."""
    import time

    from ..local.process import LocalServer, local_workers, progress_printer

    handlers = local_workers()
    print("starting three workers (speech-to-text, LLM, text-to-speech); loading models takes a few seconds",
          file=sys.stderr)
    started = time.monotonic()
    with LocalServer(handlers, on_progress=progress_printer(started)) as local:
        settings.base_url = local.base_url
        print(f"workers ready (log: {local.log_path}); call it with:\n"
              f"  voicepod call ws://{args.host}:{args.port}/media QUESTION.wav --out reply.wav\n"
              f"or {page_note(args.host, args.port, args.page_token)}", file=sys.stderr)
        server.run()
    return 0
