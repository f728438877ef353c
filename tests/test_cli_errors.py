"""A user's everyday mistakes at the command line, each through the real CLI: one line that names the problem and
says what to do, no traceback (that takes ``--debug``), and a serve-local that keeps serving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from voicepod.local.process import LocalServer, free_port

from .conftest import REPO, TEST_HANDLERS

KEY = "local-test-key"


@pytest.fixture(scope="module")
def server():
    # A real STT worker (it must refuse a file that is not audio); the turn never reaches the other two.
    handlers = {"stt": REPO / "workers/stt/handler.py", "llm": TEST_HANDLERS / "counting.py",
                "tts": TEST_HANDLERS / "counting.py"}
    with LocalServer(handlers, api_key=KEY, ready_timeout_s=300) as running:
        yield running


def voicepod(*args: str, key: str | None = KEY, cwd: Path | None = None, timeout: float = 120) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "VOICEPOD_"))}
    if key is not None:
        env["RUNPOD_API_KEY"] = key
    result = subprocess.run([sys.executable, "-m", "voicepod.cli", *args], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=timeout)
    return result.returncode, result.stderr


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def turn(server: LocalServer, question: Path, *extra: str, base_url: str | None = None, **kwargs) -> tuple[int, str]:
    return voicepod("turn", str(question), "--base-url", base_url or server.base_url, "--stt", "stt", "--llm", "llm",
                    "--tts", "tts", "--out", str(question.with_name("reply.wav")), *extra, **kwargs)


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    from tests.speech import espeak_wav

    path = tmp_path / "question.wav"
    path.write_bytes(espeak_wav("Hello there."))
    return path


def test_a_missing_question_file(server, tmp_path):
    code, err = turn(server, tmp_path / "nope.wav")
    assert code == 2
    missing = tmp_path / "nope.wav"
    assert one_line(err) == f"voicepod turn: {missing}: no such file (the question, a WAV/MP3/OGG recording)"


def test_a_wrong_key_says_which_key_to_set(server, wav):
    code, err = turn(server, wav, key="wrong")
    line = one_line(err)
    assert code == 1 and line.startswith(f"voicepod turn: 401 from {server.base_url}/stt/run: ")
    assert "set RUNPOD_API_KEY (or --api-key) to the key serve-local was started with" in line


def test_api_key_flag_wins_over_the_environment(server, wav, tmp_path):
    code, err = turn(server, tmp_path / "nope.wav", "--api-key", KEY, key="wrong")
    assert code == 2 and "no such file" in one_line(err)  # got past the key: the file is the only problem left


def test_a_wrong_endpoint_name_lists_the_served_ones(server, wav):
    code, err = voicepod("turn", str(wav), "--base-url", server.base_url, "--stt", "stx", "--llm", "llm",
                         "--tts", "tts", "--out", str(wav.with_name("r.wav")))
    line = one_line(err)
    assert code == 1 and f"404 from {server.base_url}/stx/run" in line
    assert "no endpoint 'stx' here; serving: stt, llm, tts" in line and "check the endpoint id" in line


def test_leaving_v2_off_the_base_url(server, wav):
    code, err = turn(server, wav, base_url=server.base_url.removesuffix("/v2"))
    line = one_line(err)
    assert code == 1 and "404 from" in line and "served under /v2" in line


def test_a_file_that_is_not_audio_is_refused_by_the_stt_worker(server, tmp_path):
    notes = tmp_path / "notes.wav"
    notes.write_text("these are my meeting notes, not a recording\n" * 20)
    code, err = turn(server, notes)
    line = one_line(err)
    assert code == 1 and line.startswith("voicepod turn: the 'stt' job failed: ")
    assert "could not decode" in line or "audio" in line


def test_connection_refused_asks_whether_serve_local_runs(wav):
    port = free_port()
    code, err = voicepod("turn", str(wav), "--base-url", f"http://127.0.0.1:{port}/v2", "--stt", "stt",
                         "--llm", "llm", "--tts", "tts")
    line = one_line(err)
    assert code == 1 and f"cannot reach http://127.0.0.1:{port} (connection refused)" in line
    assert "is serve-local running there?" in line


def test_an_unreachable_endpoint_url_asks_whether_its_worker_runs_not_about_base_url():
    from voicepod.cli_errors import explain
    from voicepod.errors import TransportError

    line = explain(TransportError("POST", "http://127.0.0.1:9/stream", "connection refused"))
    assert line.startswith("cannot reach http://127.0.0.1:9 (connection refused)")
    assert "serve-local --direct" in line and "--base-url" not in line


def test_forgetting_base_url_and_key_points_at_serve_local(wav):
    code, err = voicepod("turn", str(wav), "--stt", "stt", "--llm", "llm", "--tts", "tts", key=None)
    line = one_line(err)
    assert code == 2 and "no API key for https://api.runpod.ai/v2" in line
    assert "--base-url http://127.0.0.1:8000/v2" in line


def test_missing_endpoint_ids(wav):
    code, err = voicepod("turn", str(wav), "--stt", "stt")
    assert code == 2 and one_line(err) == ("voicepod turn: no endpoint id for llm, tts: pass --llm, --tts or set "
                                           "VOICEPOD_*_ENDPOINT")


def test_debug_shows_the_traceback(wav, tmp_path):
    code, err = voicepod("--debug", "turn", str(tmp_path / "nope.wav"), "--stt", "a", "--llm", "b", "--tts", "c")
    assert code == 1 and "Traceback" in err and "UsageError" in err


def test_a_second_serve_local_on_a_busy_port(server):
    code, err = voicepod("serve-local", f"count={TEST_HANDLERS / 'counting.py'}", "--port", str(server.port),
                         timeout=60)
    assert code == 2
    assert one_line(err) == (f"voicepod serve-local: 127.0.0.1:{server.port} is already in use (another "
                             "serve-local?): stop it or pick another --port")
    assert "starting" not in err  # no worker was started


def test_serve_local_says_when_all_endpoints_are_ready_and_how_keys_work(server):
    logs = server.logs()
    assert "(Bearer key required: the one given with --api-key or VOICEPOD_LOCAL_API_KEY)" in logs
    assert "all endpoints ready: stt, llm, tts in " in logs
    # Still serving after every mistake above.
    import httpx

    health = httpx.get(f"{server.base_url}/stt/health", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert health["workers"]["ready"] == 1


def test_serve_local_with_a_missing_handler_file(tmp_path):
    code, err = voicepod("serve-local", f"stt={tmp_path / 'handler.py'}", "--port", str(free_port()))
    assert code == 2
    assert one_line(err) == f"voicepod serve-local: handler file for 'stt' not found: {tmp_path}/handler.py"


def test_the_openai_route_refuses_a_wrong_key_in_openais_shape(server):
    import httpx
    import openai

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{server.base_url}/llm/openai/v1/chat/completions", json=body,
                       headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 401
    error = reply.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error" and error["message"]
    client = openai.OpenAI(base_url=f"{server.base_url}/llm/openai/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert refused.value.code == "invalid_api_key"


@pytest.mark.parametrize("args, says", [
    (["serve-local", "stt=workers/stt/handler.py", "--workers", "stt=two"],
     "--workers takes NAME=N with N a whole number of 1 or more, got stt=two"),
    (["cost", "--results", "README.md"], "README.md is not the chain benchmark's results"),
    (["demo", "--question-wav", "nope.wav"], "nope.wav: no such file"),
    (["phone", "--stt", "a", "--llm", "b", "--tts", "c"], "no API key for https://api.runpod.ai/v2"),
    (["turn", "README.md", "--base-url", "http://127.0.0.1:9/v2", "--stt", "a", "--llm", "b", "--tts", "c",
      "--finish-within", "300"], "--finish-within takes 0 to 256 tokens"),
])
def test_other_mistakes_end_in_one_line(args, says):
    code, err = voicepod(*args, key=None, cwd=REPO)
    assert code == 2 and says in one_line(err)


def test_a_phone_server_on_a_busy_port_says_so_before_loading_anything(server):
    code, err = voicepod("phone", "--local", "--port", str(server.port))
    assert code == 2 and one_line(err) == (f"voicepod phone: 127.0.0.1:{server.port} is already in use (another "
                                           "voicepod phone?): stop it or pick another --port")
