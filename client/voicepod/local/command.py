"""``voicepod serve-local``: serve RunPod's endpoint API locally over real SDK worker processes."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import sys
from pathlib import Path

from ..cli_errors import UsageError
from .server import Emulator, EndpointConfig


def pairs(values: list[str], what: str) -> dict[str, str]:
    """Parse ``NAME=VALUE`` arguments, exiting with a clear message on a malformed one."""
    parsed = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise UsageError(f"{what} must look like NAME=VALUE, got {value!r}")
        parsed[name] = rest
    return parsed


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve-local",
        description="Start N worker processes per endpoint, each running its handler file unchanged through "
        "the runpod SDK's worker loop, and serve RunPod's public API for them at /v2/NAME/.",
    )
    serve.add_argument("endpoints", nargs="+", metavar="NAME=PATH/TO/handler.py")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require this Bearer key (or set VOICEPOD_LOCAL_API_KEY)")
    serve.add_argument("--workers", action="append", default=[], metavar="NAME=N", help="workers per endpoint")
    serve.add_argument("--execution-timeout", type=float, default=600.0, metavar="SECONDS",
                       help="fail a job that runs longer (TIMED_OUT), unless its policy says otherwise")
    serve.add_argument("--busy-for", type=float, default=0.0, metavar="SECONDS",
                       help="fault injection: once ready, answer 429 and 503 in turn for this long (tests clients)")
    serve.set_defaults(func=lambda args: asyncio.run(serve_local(args)))


async def serve_local(args: argparse.Namespace) -> int:
    handlers = pairs(args.endpoints, "an endpoint")
    counts = {name: n for name, n in pairs(args.workers, "--workers").items()}
    if bad := [f"{name}={n}" for name, n in counts.items() if not n.isdigit() or int(n) < 1]:
        raise UsageError(f"--workers takes NAME=N with N a whole number of 1 or more, got {', '.join(bad)}")
    counts = {name: int(n) for name, n in counts.items()}
    unknown = set(counts) - set(handlers)
    if unknown:
        raise UsageError(f"--workers names unknown endpoint(s): {', '.join(sorted(unknown))}")
    for name, path in handlers.items():
        if not Path(path).is_file():
            raise UsageError(f"handler file for '{name}' not found: {path}")
    emulator = Emulator(
        [EndpointConfig(name, Path(path), counts.get(name, 1)) for name, path in handlers.items()],
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("VOICEPOD_LOCAL_API_KEY") or None,
        execution_timeout_s=args.execution_timeout,
        busy_for_s=args.busy_for,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await emulator.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"{args.host}:{args.port} is already in use (another serve-local?): "
                             "stop it or pick another --port") from None
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    keys = ("Bearer key required: the one given with --api-key or VOICEPOD_LOCAL_API_KEY" if emulator.guarded
            else "no --api-key: any key is accepted")
    print(f"serving RunPod's API at http://{args.host}:{args.port}/v2/{{endpoint}} ({keys}); "
          f"loading {', '.join(handlers)}: a line says when all are ready", file=sys.stderr, flush=True)
    await stop.wait()
    print("stopping workers", file=sys.stderr, flush=True)
    await emulator.stop()
    return 0
