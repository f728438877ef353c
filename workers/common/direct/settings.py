"""Which way a worker serves, and where its HTTP server listens in load-balancing mode.

RunPod's load-balancing endpoints (docs.runpod.io, serverless/load-balancing/overview) give the worker ``PORT``, the
port of its server, and ``PORT_HEALTH``, where the balancer asks ``GET /ping`` (default ``PORT``); the documented
default port is 80. ``voicepod deploy`` sets both explicitly (docs/deploy.md says why).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MODE_ENV = "VOICEPOD_MODE"
QUEUE, DIRECT = "queue", "direct"
# serve-local hands a worker the SHA-256 of its --api-key, never the key: on RunPod the balancer checks the key at
# its edge, before a request reaches the worker, and the variable is unset there.
KEY_HASH_ENV = "VOICEPOD_DIRECT_KEY_SHA256"
DEFAULT_PORT = 80


def mode() -> str:
    """``queue`` (the runpod SDK's job loop, the default) or ``direct`` (this package's HTTP server)."""
    chosen = os.environ.get(MODE_ENV, QUEUE).strip().lower() or QUEUE
    if chosen not in (QUEUE, DIRECT):
        raise SystemExit(f"{MODE_ENV}={chosen!r}: use '{QUEUE}' (the default) or '{DIRECT}'")
    return chosen


def direct_mode() -> bool:
    return mode() == DIRECT


@dataclass(frozen=True)
class Listen:
    """``host``: the address to bind (all interfaces on RunPod; serve-local binds loopback); ``port``: the
    server's; ``health_port``: where ``/ping`` is also answered (the same port unless ``PORT_HEALTH`` differs);
    ``key_sha256``: the hex SHA-256 of the key every request but ``/ping`` must carry, or None (RunPod's edge
    checks it)."""

    host: str
    port: int
    health_port: int
    key_sha256: str | None


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{name}={raw!r}: a port number, 1 to 65535")
    return int(raw)


def listen() -> Listen:
    """Where to listen, from ``PORT``, ``PORT_HEALTH``, ``VOICEPOD_DIRECT_HOST`` (default ``0.0.0.0``) and the
    key hash."""
    port = _port("PORT", DEFAULT_PORT)
    return Listen(host=os.environ.get("VOICEPOD_DIRECT_HOST", "0.0.0.0"), port=port,
                  health_port=_port("PORT_HEALTH", port), key_sha256=os.environ.get(KEY_HASH_ENV) or None)
