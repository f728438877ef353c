"""``voicepod demo``: the whole chain on one machine, on the embedded default models.

Starts ``serve-local`` with the three workers, speaks a question with the TTS worker itself (so the demo needs
no microphone and no sample file), runs one turn, writes ``reply.wav`` and prints the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from pathlib import Path

from . import registry
from .audio import pcm16_to_float, write_wav
from .cli_errors import UsageError
from .local.process import LocalServer, local_workers, progress_printer
from .protocol import AudioChunk
from .turn import add_agent_options, agent_from_args, run_turn


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", description="Start the workers on the embedded models, ask them a spoken "
                               "question, and write the spoken reply.")
    demo.add_argument("--question", default="What is the capital of France?", help="what the demo asks")
    demo.add_argument("--question-wav", type=Path, help="ask with this recording instead of a spoken --question")
    demo.add_argument("--workers-dir", type=Path, help="the folder of the workers' handlers (default: the checkout's)")
    add_agent_options(demo)
    demo.set_defaults(func=_demo)


async def speak(server: LocalServer, text: str) -> bytes:
    """Say ``text`` with the TTS endpoint and return it as a WAV file's bytes."""
    async with server.endpoint("tts") as tts, tts.submit({"text": text, "format": "pcm16"}) as job:
        chunks = [chunk async for chunk in job.chunks() if isinstance(chunk, AudioChunk)]
    samples = pcm16_to_float(b"".join(base64.b64decode(c.audio) for c in chunks))
    return write_wav(samples, chunks[0].sample_rate)


def _demo(args: argparse.Namespace) -> int:
    handlers = local_workers(args.workers_dir)
    if args.question_wav and not args.question_wav.is_file():
        raise UsageError(f"{args.question_wav}: no such file (--question-wav takes a recording)")
    roles = ", ".join(worker.role for worker in registry.WORKERS)
    print(f"starting the workers ({roles}); loading models takes a few seconds", file=sys.stderr)
    started = time.monotonic()
    server = LocalServer(handlers, on_progress=progress_printer(started))
    with server:
        print(f"workers ready in {time.monotonic() - started:.1f} s (log: {server.log_path})\n", file=sys.stderr)
        asyncio.run(_conversation(server, args))
    print("workers stopped", file=sys.stderr)
    return 0


async def _conversation(server: LocalServer, args: argparse.Namespace) -> None:
    if args.question_wav:
        question = args.question_wav.read_bytes()
    else:
        question = await speak(server, args.question)
        path = args.out.with_name("question.wav")
        path.write_bytes(question)
        print(f"asking (spoken by the TTS worker, saved to {path}): {args.question}\n")
    endpoints = [server.endpoint(stage) for stage in registry.CHAIN]
    try:
        await run_turn(agent_from_args(args, *endpoints), question, args.out)
    finally:
        for endpoint in endpoints:
            await endpoint.aclose()
