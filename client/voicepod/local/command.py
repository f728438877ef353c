"""``voicepod serve-local``: serve RunPod's endpoint API locally over real SDK worker processes."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import sys
from pathlib import Path

from .. import registry
from ..cli_errors import UsageError
from .direct import DirectEndpoints
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
        "the runpod SDK's worker loop, and serve RunPod's public API for them at /v2/NAME/; or, with --direct, "
        "each endpoint's worker in load-balancing mode on its own port.",
    )
    serve.add_argument("endpoints", nargs="*", metavar="NAME=PATH/TO/handler.py",
                       help="the endpoints to serve (default: this checkout's workers, named stt, llm and tts)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require this Bearer key (or set VOICEPOD_LOCAL_API_KEY)")
    serve.add_argument("--workers", action="append", default=[], metavar="NAME=N", help="workers per endpoint")
    serve.add_argument("--execution-timeout", type=float, default=600.0, metavar="SECONDS",
                       help="fail a job that runs longer (TIMED_OUT), unless its policy says otherwise")
    serve.add_argument("--busy-for", type=float, default=0.0, metavar="SECONDS",
                       help="fault injection: once ready, answer 429 and 503 in turn for this long (tests clients)")
    serve.add_argument("--queue-delay", type=float, default=0.0, metavar="SECONDS",
                       help="hold each job this long in its queue before a worker may take it: a model of what "
                       "RunPod's queue adds (0.10-0.16 s measured on warm workers; docs/deploy.md)")
    serve.add_argument("--direct", action="store_true",
                       help="run each endpoint's worker in load-balancing mode instead, on its own port (--port, "
                       "--port+1, ... in the order given), and print each one's URL: no queue, no emulator")
    serve.set_defaults(func=lambda args: asyncio.run(serve_local(args)))


async def serve_local(args: argparse.Namespace) -> int:
    handlers = pairs(args.endpoints, "an endpoint") if args.endpoints else {
        name: str(path) for name, path in registry.handlers().items()}
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
    if args.queue_delay < 0:
        raise UsageError(f"--queue-delay takes 0 seconds or more, got {args.queue_delay:g}")
    configs = [EndpointConfig(name, Path(path), counts.get(name, 1)) for name, path in handlers.items()]
    api_key = args.api_key or os.environ.get("VOICEPOD_LOCAL_API_KEY") or None
    server = _direct(args, configs, api_key) if args.direct else Emulator(
        configs,
        host=args.host,
        port=args.port,
        api_key=api_key,
        execution_timeout_s=args.execution_timeout,
        busy_for_s=args.busy_for,
        queue_delay_s=args.queue_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        where = exc.filename if args.direct else f"{args.host}:{args.port}"  # direct: the port that failed
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"{where} is already in use (another serve-local?): stop it or pick another --port") \
                from None
        raise UsageError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    keys = ("Bearer key required: the one given with --api-key or VOICEPOD_LOCAL_API_KEY" if api_key
            else "no --api-key: any key is accepted")
    if args.direct:
        urls = "  ".join(f"{name}={url}" for name, url in server.urls.items())
        print(f"load-balancing endpoints (no queue): {urls} ({keys}); loading: a line says when all are ready",
              file=sys.stderr, flush=True)
    else:
        delay = f"; each job held {args.queue_delay:g} s in its queue (--queue-delay)" if args.queue_delay else ""
        print(f"serving RunPod's API at http://{args.host}:{args.port}/v2/{{endpoint}} ({keys}{delay}); "
              f"loading {', '.join(handlers)}: a line says when all are ready", file=sys.stderr, flush=True)
    await stop.wait()
    print("stopping workers", file=sys.stderr, flush=True)
    await server.stop()
    return 0


def _direct(args: argparse.Namespace, configs: list[EndpointConfig], api_key: str | None) -> DirectEndpoints:
    """The ``--direct`` servers, once the options make sense for them."""
    if many := [f"{c.name}={c.workers}" for c in configs if c.workers > 1]:
        raise UsageError(f"--direct runs one worker per endpoint (RunPod's balancer, which spreads requests over "
                         f"workers, has no local stand-in), got --workers {', '.join(many)}")
    if args.queue_delay or args.busy_for:
        raise UsageError("--queue-delay and --busy-for act on the emulator's queue, which --direct has none of")
    return DirectEndpoints(configs, host=args.host, port=args.port, api_key=api_key)
