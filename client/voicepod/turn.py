"""``voicepod turn``: one spoken turn against deployed (or local) endpoints, from a file to a file."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .agent import DEFAULT_SYSTEM_PROMPT, VOICE_MAX_TOKENS, Audio, Done, ReplyText, Transcript, TurnMetrics, VoiceAgent
from .aggregator import FINISH_SENTENCE_WITHIN
from .audio import mulaw_decode, pcm16_to_float, write_wav
from .cli_errors import LOCAL_BASE_URL, UsageError, is_local
from .endpoint import DEFAULT_BASE_URL, Endpoint, is_direct
from .protocol import MAX_SENTENCE_ALLOWANCE
from .registry import CHAIN


async def run_turn(agent: VoiceAgent, question: bytes, out: Path, stream: TextIO = sys.stdout) -> Done:
    """Run one turn, print the transcript and the reply as they stream, write the reply audio to ``out`` (WAV)
    and print the timing table; returns the turn's :class:`~voicepod.agent.Done`."""
    pieces: list[np.ndarray] = []
    rate = 0
    done: Done | None = None
    written = ""
    async for event in agent.respond(question):
        if isinstance(event, Transcript) and event.final:
            print(f"you said:  {event.text}", file=stream)
            print("reply:     ", end="", file=stream, flush=True)
        elif isinstance(event, ReplyText):
            written += event.delta
            print(event.delta, end="", file=stream, flush=True)
        elif isinstance(event, Audio):
            rate = event.sample_rate
            pieces.append(mulaw_decode(event.data) if event.format == "mulaw" else pcm16_to_float(event.data))
        elif isinstance(event, TurnMetrics):
            print("\n", file=stream)
            print(event.table(), file=stream)
        elif isinstance(event, Done):
            done = event
    assert done is not None
    if not done.interrupted and " ".join(written.split()) != " ".join(done.reply.split()):
        # The aggregator left something out: a sentence the reply cap cut short, or a piece with no words.
        print(f"\nspoken:    {done.reply}", file=stream)
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    out.write_bytes(write_wav(samples, rate or 16000))
    print(f"\nwrote {out} ({len(samples) / (rate or 16000):.1f} s of audio)", file=stream)
    return done


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("reply.wav"), help="where to write the reply (WAV)")
    add_reply_options(parser)


def add_reply_options(parser: argparse.ArgumentParser) -> None:
    """What the agent's replies are made with, as ``voicepod turn``, ``demo`` and ``phone`` take it (read back by
    :func:`reply_llm_options`)."""
    parser.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT)
    parser.add_argument("--voice", help="TTS voice (the worker's default when omitted)")
    parser.add_argument("--max-tokens", type=int, default=VOICE_MAX_TOKENS, help="cap on the reply's length")
    parser.add_argument("--finish-within", type=int, default=FINISH_SENTENCE_WITHIN, metavar="TOKENS",
                        help="tokens past the cap a reply may run to finish its sentence; one still unfinished is "
                        "not spoken")
    parser.add_argument("--temperature", type=float, default=0.0)


def reply_llm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The LLM job's options from :func:`add_reply_options`' flags; a value the worker would refuse is refused
    here, in one line, before any call."""
    if not 0 <= args.finish_within <= MAX_SENTENCE_ALLOWANCE:
        raise UsageError(f"--finish-within takes 0 to {MAX_SENTENCE_ALLOWANCE} tokens")
    return {"max_tokens": args.max_tokens, "finish_sentence_within": args.finish_within,
            "temperature": args.temperature}


def agent_from_args(args: argparse.Namespace, stt: Endpoint, llm: Endpoint, tts: Endpoint) -> VoiceAgent:
    return VoiceAgent(stt, llm, tts, system_prompt=args.system_prompt, voice=args.voice,
                      llm_options=reply_llm_options(args))


def register(commands: argparse._SubParsersAction) -> None:
    turn = commands.add_parser(
        "turn",
        description="Transcribe QUESTION, stream a reply from the LLM and speak it sentence by sentence. "
        "Endpoints (ids, or load-balancing endpoints' URLs) default to VOICEPOD_STT_ENDPOINT, VOICEPOD_LLM_ENDPOINT "
        "and VOICEPOD_TTS_ENDPOINT; the API key to RUNPOD_API_KEY; the base URL to RUNPOD_ENDPOINT_BASE_URL, else "
        "RunPod's.",
    )
    turn.add_argument("question", type=Path, metavar="QUESTION.wav")
    add_endpoint_options(turn)
    add_agent_options(turn)
    turn.set_defaults(func=lambda args: asyncio.run(_turn(args)))


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """``--base-url``, ``--api-key`` and an endpoint flag per stage, defaulting to their environment variables: the
    endpoints of a chain, as ``voicepod turn`` and ``voicepod phone`` take them. Each stage takes a queue endpoint's
    id or a load-balancing endpoint's URL, mixed freely."""
    parser.add_argument("--base-url", default=os.environ.get("RUNPOD_ENDPOINT_BASE_URL"),
                        help=f"for endpoint ids: e.g. {LOCAL_BASE_URL} for serve-local (default: RunPod's API)")
    parser.add_argument("--api-key", default=os.environ.get("RUNPOD_API_KEY"),
                        help="RunPod API key (default: RUNPOD_API_KEY); serve-local without --api-key takes any")
    for stage in CHAIN:
        parser.add_argument(f"--{stage}", default=os.environ.get(f"VOICEPOD_{stage.upper()}_ENDPOINT"),
                            help=f"{stage.upper()} endpoint: a queue endpoint's id, or a load-balancing endpoint's "
                            "URL (https://ID.api.runpod.ai; serve-local --direct prints its own)")


def check_endpoint_options(args: argparse.Namespace, other_way: str = "") -> str:
    """The base URL of the endpoints in ``args``, once every endpoint (and, off this machine, a key) is there; else
    a :class:`UsageError` saying what to set, with ``other_way`` (e.g. "; or --local ...") after it."""
    missing = [stage for stage in CHAIN if not getattr(args, stage)]
    if missing:
        flags = ", ".join(f"--{stage}" for stage in missing)
        raise UsageError(f"no endpoint id for {', '.join(missing)}: pass {flags} or set VOICEPOD_*_ENDPOINT"
                         f"{other_way}")
    base_url = args.base_url or DEFAULT_BASE_URL
    # A URL is a load-balancing endpoint, reached at that URL; an id is reached under the base URL.
    remote = [where for stage in CHAIN
              if not is_local(where := getattr(args, stage) if is_direct(getattr(args, stage)) else base_url)]
    if not args.api_key and remote:
        raise UsageError(f"no API key for {remote[0]}: set RUNPOD_API_KEY or pass --api-key "
                         f"(for serve-local, pass --base-url {LOCAL_BASE_URL}){other_way}")
    return base_url


async def _turn(args: argparse.Namespace) -> int:
    base_url = check_endpoint_options(args)
    if not args.question.is_file():
        raise UsageError(f"{args.question}: no such file (the question, a WAV/MP3/OGG recording)")
    endpoints = [Endpoint(getattr(args, stage), api_key=args.api_key or "", base_url=base_url)
                 for stage in CHAIN]
    try:
        await run_turn(agent_from_args(args, *endpoints), args.question.read_bytes(), args.out)
    finally:
        for endpoint in endpoints:
            await endpoint.aclose()
    return 0
