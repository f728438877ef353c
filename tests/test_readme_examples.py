"""The README's copy-paste examples, run as they are written against `voicepod serve-local` started as the README
says (no arguments: the checkout's three workers, named stt, llm and tts), on another port."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import httpx
import pytest
from voicepod.local.process import free_port

from .conftest import REPO

README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


@pytest.fixture(scope="module")
def port():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "voicepod.cli", "serve-local", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while True:
            assert process.poll() is None, "serve-local exited"
            try:
                ready = [httpx.get(f"http://127.0.0.1:{port}/v2/{name}/health", timeout=2).json()["workers"]["ready"]
                         for name in ("stt", "llm", "tts")]
                if all(ready):
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            assert time.monotonic() < deadline, "serve-local not ready"
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def on(port: int, text: str) -> str:
    return text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def test_the_readme_starts_serve_local_with_no_arguments():
    assert ".venv/bin/voicepod serve-local\n" in blocks("sh")[1]


def test_the_curl_example_answers(port):
    [curl] = [block for block in blocks("sh") if block.startswith("curl")]
    command = shlex.split(on(port, curl).replace("\\\n", " "))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    status = json.loads(result.stdout)
    assert status["status"] == "COMPLETED" and "paris" in status["output"][-1]["text"].lower()


def test_the_official_sdk_example_prints_the_reply(port):
    [sdk] = [block for block in blocks("python") if "import runpod" in block]
    result = subprocess.run([sys.executable, "-c", on(port, sdk)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()  # the reply's text, from the done chunk


def test_the_voice_agent_example_speaks_its_reply(port, tmp_path):
    [agent] = [block for block in blocks("python") if "VoiceAgent(" in block]
    subprocess.run(["espeak-ng", "-w", str(tmp_path / "question.wav"), "What is the capital of France?"], check=True)
    env = {**os.environ, "RUNPOD_ENDPOINT_BASE_URL": f"http://127.0.0.1:{port}/v2"}
    result = subprocess.run([sys.executable, "-c", agent], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    samples = int(re.search(r"(\d+) samples; history", result.stdout).group(1))
    assert samples > 8000 and "'role': 'assistant'" in result.stdout


def test_the_openai_route_the_readme_names_answers(port):
    from openai import OpenAI

    base_url = re.search(r'OpenAI\(base_url=\s*"([^"]+)"', README).group(1)
    client = OpenAI(base_url=on(port, base_url), api_key="any")
    answer = client.chat.completions.create(model="any", max_tokens=20, temperature=0,
                                            messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "paris" in answer.choices[0].message.content.lower()
