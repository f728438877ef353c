"""Where the two kinds of endpoint are chosen, without a model: ``Endpoint`` given a URL or an id, the chain's
command-line options, serve-local's ``--direct`` and ``--queue-delay`` (through the real CLI)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from voicepod import Endpoint, VoicepodError
from voicepod.local import LocalServer

from .conftest import TEST_HANDLERS
from .test_cli_errors import one_line, voicepod

COUNTING = TEST_HANDLERS / "counting.py"


async def test_an_http_url_is_a_load_balancing_endpoint_and_an_id_a_queue_one() -> None:
    async with Endpoint("https://abc123.api.runpod.ai/", api_key="k") as direct, \
            Endpoint("abc123", api_key="k") as queue:
        assert direct.direct and not queue.direct
        assert direct.endpoint_id == "https://abc123.api.runpod.ai"
        assert direct.openai_base_url == "https://abc123.api.runpod.ai/openai/v1"
        assert queue.openai_base_url == "https://api.runpod.ai/v2/abc123/openai/v1"
        with pytest.raises(VoicepodError, match="load-balancing endpoint"):
            direct.job("some-id")
        assert "k" not in repr(direct)


@pytest.mark.parametrize(("llm", "needs_key"), [("http://127.0.0.1:9/", False), ("https://x1.api.runpod.ai", True)])
def test_turn_takes_urls_and_asks_a_key_only_off_this_machine(tmp_path, llm: str, needs_key: bool) -> None:
    question = tmp_path / "q.wav"
    question.write_bytes(b"RIFF")
    code, err = voicepod("turn", str(question), "--base-url", "http://127.0.0.1:9/v2", "--stt", "stt",
                         "--llm", llm, "--tts", "tts", key=None)
    line = one_line(err)
    if needs_key:
        assert code == 2 and "no API key for https://x1.api.runpod.ai" in line
    else:  # past the options: it tries to reach the (absent) endpoints
        assert code == 1 and "cannot reach" in line


@pytest.mark.parametrize(("flags", "message"), [
    (["--direct", "--workers", "count=2"], "--direct runs one worker per endpoint"),
    (["--direct", "--queue-delay", "0.1"], "--queue-delay and --busy-for act on the emulator's queue"),
    (["--queue-delay", "-1"], "--queue-delay takes 0 seconds or more"),
])
def test_serve_local_refuses_options_that_do_not_fit(flags: list[str], message: str) -> None:
    code, err = voicepod("serve-local", f"count={COUNTING}", *flags, timeout=60)
    assert code == 2 and message in one_line(err)


def test_serve_local_direct_on_a_busy_port_says_which() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = voicepod("serve-local", "--direct", f"count={COUNTING}", "--port", str(port), timeout=60)
    assert code == 2 and one_line(err) == (f"voicepod serve-local: 127.0.0.1:{port} is already in use (another "
                                           "serve-local?): stop it or pick another --port")


def test_queue_delay_holds_each_job_in_its_queue() -> None:
    async def first_chunk_after(server: LocalServer) -> tuple[float, int]:
        async with server.endpoint("count") as ep:
            started = time.monotonic()
            job = await ep.run({"count": 1, "delay": 0})
            async for _ in job.stream():
                break
            waited = time.monotonic() - started
            await asyncio.sleep(0.1)
            return waited, (await job.status())["delayTime"]

    with LocalServer({"count": COUNTING}, ready_timeout_s=120, extra_args=["--queue-delay", "0.6"]) as held, \
            LocalServer({"count": COUNTING}, ready_timeout_s=120) as prompt:
        (held_wait, held_delay), (prompt_wait, prompt_delay) = (asyncio.run(first_chunk_after(s))
                                                                for s in (held, prompt))
        assert "each job held 0.6 s in its queue" in held.logs()
    assert held_wait >= 0.6 and held_delay >= 600
    assert prompt_wait < 0.5 and prompt_delay < 500
