"""Shutting the phone server down without cutting the calls in progress: a drain before uvicorn's own shutdown.

uvicorn, told to stop (SIGTERM, Ctrl-C), closes every WebSocket at once (1012, "service restart"), and Twilio ends
a call whose stream closes: a rolling deploy would hang up on everyone mid-sentence. :class:`DrainingServer` first
stops taking calls (``/twiml`` answers 503, so Twilio tries the number's fallback URL; new sockets are refused;
``/health`` answers 503 ``draining``, so a load balancer stops sending calls) and lets the calls in progress go on
until they end or ``drain_s`` has passed; then uvicorn shuts down as it would have, ending whatever is left. A
second signal ends the drain at once. uvicorn has no such hook for WebSockets (its ``timeout_graceful_shutdown``
waits only after it has closed them), hence this subclass of its ``Server``.
"""

from __future__ import annotations

import logging
import time
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("voicepod.phone")


class DrainingServer(uvicorn.Server):
    """uvicorn's server over a :class:`~voicepod.phone.server.PhoneApp` (``phone``), which it tells to drain.
    ``drain_s``: the longest wait for the calls in progress to end after the first signal (0: none, uvicorn's own
    behaviour)."""

    def __init__(self, config: uvicorn.Config, phone: Any, drain_s: float):
        super().__init__(config)
        self.phone = phone
        self.drain_s = drain_s
        self._drain: tuple[float, int] | None = None  # (deadline, the signal) while draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None and self.drain_s > 0 and self.phone.calls and not self.should_exit:
            self._drain = (time.monotonic() + self.drain_s, sig)
            self.phone.draining = True
            log.info("draining: %d call(s) in progress, no new ones; shutting down when they end or in %.0f s "
                     "(signal again to end them now)", len(self.phone.calls), self.drain_s)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # uvicorn's main loop asks this every 0.1 s whether to shut down.
        if self._drain is not None and not self.should_exit:
            deadline, sig = self._drain
            if not self.phone.calls or time.monotonic() >= deadline:
                if self.phone.calls:
                    log.warning("drain over: ending %d call(s) still in progress", len(self.phone.calls))
                super().handle_exit(sig, None)  # uvicorn's shutdown, and its signal re-raised at the end
        return await super().on_tick(counter)
