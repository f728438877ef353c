"""Security: the API key stays secret, the emulator is loopback-only and guarded, payloads are capped, and
audio URLs cannot reach inside the network (what tests/test_stt_inputs.py does not already cover)."""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from voicepod import APIError, AuthError, Endpoint, TransportError
from voicepod.local import LocalServer
from voicepod.local.process import free_port

from tests.stt_util import Route, serve_routes
from workers.common.errors import WorkerError
from workers.stt.fetch import FETCH_FAILED, URL_FORBIDDEN, FetchPolicy, fetch_audio

from .conftest import TEST_HANDLERS

KEY = "sk-secret-3b9e7d1c"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(
        {"count": TEST_HANDLERS / "counting.py", "env": TEST_HANDLERS / "environment.py"},
        api_key=KEY,
        env={"RUNPOD_API_KEY": KEY},
        ready_timeout_s=120,
    ) as srv:
        yield srv


def _everything_said_about(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


# --- the key ---------------------------------------------------------------------------------------------


async def test_the_key_is_in_no_repr_error_or_log(server: LocalServer) -> None:
    async with server.endpoint("count") as ep:
        job = await ep.run({"count": 2, "delay": 0})
        assert [c["seq"] async for c in job.stream()] == [0, 1]
        assert KEY not in repr(ep) + repr(ep._transport) + repr(job)
    async with Endpoint("count", KEY, f"http://127.0.0.1:{free_port()}/v2", max_retries=1) as dead:
        with pytest.raises(TransportError) as refused:
            await dead.health()
    assert KEY not in _everything_said_about(refused.value)
    wrong = KEY[::-1]
    async with server.endpoint("count", api_key=wrong, max_retries=0) as ep:
        with pytest.raises(AuthError) as denied:
            await ep.run({"count": 1})
    assert KEY not in _everything_said_about(denied.value) and wrong not in str(denied.value)
    assert KEY not in " ".join(server.command())  # not on the command line either, where `ps` shows it
    logs = server.logs()
    assert "ready: 'count'" in logs
    assert KEY not in logs


async def test_workers_never_see_the_key(server: LocalServer) -> None:
    names = ["RUNPOD_API_KEY", "RUNPOD_AI_API_KEY", "VOICEPOD_LOCAL_API_KEY", "RUNPOD_POD_ID"]
    async with server.endpoint("env") as ep:
        result = await ep.run_sync({"names": names})
    assert result["output"][-1]["present"] == ["RUNPOD_POD_ID"]  # the variable the SDK needs is there


# --- the emulator ------------------------------------------------------------------------------------------


def test_the_emulator_listens_on_loopback_only(server: LocalServer) -> None:
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, port = local.split(":")
                if state == "0A" and int(port, 16) == server.port:  # 0A: LISTEN
                    listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex; no 0.0.0.0, no IPv6 wildcard


def test_every_public_route_requires_the_key(server: LocalServer) -> None:
    base = server.base_url
    for method, path in [("POST", "/count/run"), ("POST", "/count/runsync"), ("GET", "/count/stream/x"),
                         ("GET", "/count/status/x"), ("POST", "/count/cancel/x"), ("POST", "/count/purge-queue"),
                         ("GET", "/count/health")]:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer {KEY}x"},
                        {"Authorization": KEY[:-1]}):
            response = httpx.request(method, base + path, headers=headers, json={"input": {}})
            assert response.status_code == 401, (method, path, headers)
            assert KEY not in response.text


def test_the_workers_internal_routes_refuse_outsiders(server: LocalServer) -> None:
    root = server.base_url.removesuffix("/v2")
    for query in ("", f"?token={KEY}", "?token="):
        response = httpx.get(f"{root}/_worker/count/job-take/count-0{query}", timeout=10)
        assert response.status_code == 403
        response = httpx.post(f"{root}/_worker/count/job-done/count-0/x{query}", json={"output": 1}, timeout=10)
        assert response.status_code == 403


def test_payloads_over_ten_megabytes_and_absurd_nesting_are_refused(server: LocalServer) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = json.dumps({"input": {"text": "a" * (10 * 1024 * 1024)}})
    response = httpx.post(f"{server.base_url}/count/run", content=big, headers=headers, timeout=30)
    assert response.status_code == 413
    deep = '{"input": ' + "[" * 200_000 + "]" * 200_000 + "}"
    response = httpx.post(f"{server.base_url}/count/run", content=deep, headers=headers, timeout=30)
    assert response.status_code == 400
    assert httpx.get(f"{server.base_url}/count/health", headers=headers).json()["workers"]["ready"] == 1


async def test_the_client_reports_a_refused_payload_and_does_not_resend_it(server: LocalServer) -> None:
    async with server.endpoint("count") as ep:
        started = time.monotonic()
        with pytest.raises(APIError) as refused:
            await ep.run({"blob": "a" * (11 * 1024 * 1024)})
    assert refused.value.status_code == 413
    assert time.monotonic() - started < 10


# --- audio_url: what test_stt_inputs.py leaves out -------------------------------------------------------

PUBLIC_ONLY = FetchPolicy(max_bytes=10_000, timeout_s=5.0, max_redirects=2)


@pytest.mark.parametrize("url", [
    "http://2130706433/a.wav",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/a.wav",
    "http://127.1/a.wav",
    "http://0/a.wav",
    "http://[::ffff:127.0.0.1]/a.wav",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "https://10.0.0.1/a.wav",
    "http://user:pass@127.0.0.1/a.wav",
])
def test_disguised_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(WorkerError) as caught:
        fetch_audio(url, PUBLIC_ONLY)
    assert caught.value.code == URL_FORBIDDEN, caught.value.message


def test_redirects_are_followed_up_to_the_limit_and_no_further() -> None:
    allowed = FetchPolicy(max_bytes=10_000, timeout_s=5.0, max_redirects=2, allow_private=True)
    routes = {"/ok": Route(b"audio"), "/r1": Route(status=302, location="/ok"),
              "/r2": Route(status=301, location="/r1"), "/r3": Route(status=307, location="/r2")}
    with serve_routes(routes) as base:
        assert fetch_audio(f"{base}/r2", allowed) == b"audio"
        with pytest.raises(WorkerError) as caught:
            fetch_audio(f"{base}/r3", allowed)
    assert caught.value.code == FETCH_FAILED and "redirects" in caught.value.message


def test_a_slow_trickle_is_cut_off_by_the_whole_download_deadline() -> None:
    # Each byte comes well within httpx's per-read timeout, so only the overall deadline can stop this.
    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        policy = FetchPolicy(max_bytes=10_000, timeout_s=1.0, max_redirects=0, allow_private=True)
        started = time.monotonic()
        with pytest.raises(WorkerError) as caught:
            fetch_audio(f"http://127.0.0.1:{httpd.server_port}/slow.wav", policy)
        assert caught.value.code == FETCH_FAILED
        assert time.monotonic() - started < 3
    finally:
        httpd.shutdown()
