"""``voicepod call``: call a phone server as Twilio would (see :mod:`voicepod.phone.caller`), from a file."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ..cli_errors import UsageError


def register(commands: argparse._SubParsersAction) -> None:
    call = commands.add_parser(
        "call",
        description="Connect to URL (ws://HOST:PORT/media) as Twilio's Media Streams would, wait for the greeting, "
        "speak QUESTION as real-time 20 ms mu-law frames, play the reply (echoing marks), write what it heard and "
        "print the latency from the end of its speech to the first reply audio. With TWILIO_AUTH_TOKEN set, the "
        "connection is signed as Twilio signs it.",
    )
    call.add_argument("url", metavar="URL", help="the server's media WebSocket, e.g. ws://127.0.0.1:8080/media")
    call.add_argument("question", type=Path, metavar="QUESTION.wav", help="a 16-bit PCM WAV file, any rate")
    call.add_argument("--out", type=Path, default=Path("reply.wav"), help="where to write what it heard (WAV)")
    call.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the reply")
    call.add_argument("--quiet", type=float, default=2.0, metavar="SECONDS",
                      help="the reply is over after this much silence (default 2)")
    call.set_defaults(func=lambda args: asyncio.run(_call(args)))


async def _call(args: argparse.Namespace) -> int:
    from ..audio import MULAW_RATE, mulaw_decode, mulaw_encode, read_wav, resample, write_wav
    from .caller import SimulatedCaller  # needs the phone extra, which the CLI names when it is missing

    try:
        samples, rate = read_wav(args.question.read_bytes())
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read {args.question} as a 16-bit PCM WAV file: {exc}") from None
    question = mulaw_encode(resample(samples, rate, MULAW_RATE))
    caller = SimulatedCaller(args.url, auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None)
    try:
        await caller.connect()
    except ModuleNotFoundError:
        raise  # the phone extra is missing: the CLI names it
    except Exception as exc:  # noqa: BLE001 - refused or unreachable: one line, not a traceback
        raise SystemExit(f"voicepod call: could not connect to {args.url}: {exc}") from None
    print(f"call {caller.call_sid} connected", file=sys.stderr)
    try:
        await caller.wait_until_quiet(args.quiet, args.timeout)  # the greeting, if the server says one
        print(f"speaking {args.question} ({len(samples) / rate:.1f} s)", file=sys.stderr)
        await caller.say(question)
        assert caller.speech_ended_at is not None
        latency = await caller.wait_for_audio(caller.speech_ended_at, args.timeout)
        await caller.wait_until_quiet(args.quiet, args.timeout)
    except (TimeoutError, ConnectionError) as exc:
        raise SystemExit(f"voicepod call: {exc}") from None
    finally:
        await caller.hang_up()
    args.out.write_bytes(write_wav(mulaw_decode(bytes(caller.heard)), MULAW_RATE))
    print(f"heard {len(caller.heard) / MULAW_RATE:.1f} s of audio, written to {args.out}")
    print(f"latency from the end of speech to the first reply audio: {latency:.2f} s")
    print(f"marks echoed: {len(caller.marks)}, clears: {len(caller.clears)}")
    return 0
