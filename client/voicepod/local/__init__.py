"""A local RunPod endpoint emulator over the SDK's real worker loop (``voicepod serve-local``).

``LocalServer`` (a serve-local child process, for tests and the demo) needs only the client's packages; the
emulator itself (``Emulator``) needs aiohttp and the runpod SDK (``voicepod[local]``), imported on first use.
"""

from typing import Any

from .process import LocalServer

__all__ = ["Emulator", "EndpointConfig", "LocalServer"]


def __getattr__(name: str) -> Any:
    if name in ("Emulator", "EndpointConfig"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
