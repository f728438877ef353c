"""``voicepod demo``: the whole chain on one machine, on the embedded default models.

Starts ``serve-local`` with the three workers, speaks a question with the TTS worker itself (so the demo needs
no microphone and no sample file), runs one turn, writes ``reply.wav`` and prints the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import sys
import time
from pathlib import Path

from . import registry
from .audio import pcm16_to_float, write_wav
from .cli_errors import UsageError
from .local.process import LocalServer
from .protocol import AudioChunk
from .registry import checkout_root
from .turn import add_agent_options, agent_from_args, run_turn


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="run one spoken turn through three local workers (no GPU needed)")
    demo.add_argument("--question", default="What is the capital of France?", help="what the demo asks")
    demo.add_argument("--question-wav", type=Path, help="ask with this recording instead of a spoken --question")
    demo.add_argument("--workers-dir", type=Path, default=checkout_root() / "workers")
    add_agent_options(demo)
    demo.set_defaults(func=_demo)


async def speak(server: LocalServer, text: str) -> bytes:
    """Say ``text`` with the TTS endpoint and return it as a WAV file's bytes."""
    async with server.endpoint("tts") as tts:
        job = await tts.run({"text": text, "format": "pcm16"})
        chunks = [chunk async for chunk in job.chunks() if isinstance(chunk, AudioChunk)]
    samples = pcm16_to_float(b"".join(base64.b64decode(c.audio) for c in chunks))
    return write_wav(samples, chunks[0].sample_rate)


def _progress(ready: dict[str, bool], started: float) -> None:
    states = "  ".join(f"{name}: {'ready' if ok else 'loading'}" for name, ok in ready.items())
    print(f"[{time.monotonic() - started:5.1f} s] {states}", file=sys.stderr, flush=True)


def _demo(args: argparse.Namespace) -> int:
    # The workers run in child processes: check here that this environment can run them at all.
    missing = [name for name in ("aiohttp", "runpod", "faster_whisper", "torch", "onnxruntime")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"the demo runs the three workers here and needs {', '.join(missing)}: "
                         "pip install 'voicepod[workers]' from a checkout (or `make demo`)")
    if not all(path.is_file() for path in registry.handlers(args.workers_dir.parent).values()):
        raise UsageError(f"no worker handlers under {args.workers_dir}: run the demo from a voicepod checkout "
                         "(or pass --workers-dir)")
    handlers = registry.handlers(args.workers_dir.parent)
    roles = ", ".join(worker.role for worker in registry.WORKERS)
    print(f"starting the workers ({roles}); loading models takes a few seconds", file=sys.stderr)
    started = time.monotonic()
    server = LocalServer(handlers, on_progress=lambda ready: _progress(ready, started))
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
