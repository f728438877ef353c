"""The phone server's drain on shutdown (voicepod.phone.shutdown), its decisions without a process or a signal;
tests/test_phone_reliability.py drains a real call."""

from __future__ import annotations

import signal
import time
from types import SimpleNamespace

import uvicorn
from voicepod.phone.shutdown import DrainingServer


def server(calls: int, drain_s: float = 30.0) -> DrainingServer:
    phone = SimpleNamespace(calls={object() for _ in range(calls)}, draining=False)
    return DrainingServer(uvicorn.Config(app=None), phone, drain_s)


async def test_a_signal_with_calls_in_progress_drains_until_they_end():
    s = server(calls=2)
    s.handle_exit(signal.SIGTERM, None)
    assert s.phone.draining and not s.should_exit
    assert not await s.on_tick(1) and not s.should_exit  # the calls go on
    s.phone.calls.clear()
    await s.on_tick(2)
    assert s.should_exit


async def test_the_drain_ends_at_its_deadline_or_at_a_second_signal():
    s = server(calls=1, drain_s=0.05)
    s.handle_exit(signal.SIGTERM, None)
    time.sleep(0.06)
    await s.on_tick(1)
    assert s.should_exit and s.phone.calls
    again = server(calls=1)
    again.handle_exit(signal.SIGTERM, None)
    again.handle_exit(signal.SIGTERM, None)
    assert again.should_exit


async def test_no_calls_or_no_drain_shuts_down_at_once():
    idle, undrained = server(calls=0), server(calls=3, drain_s=0)
    for s in (idle, undrained):
        s.handle_exit(signal.SIGTERM, None)
        assert s.should_exit and not s.phone.draining
