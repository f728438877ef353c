"""The client as users install it: ``pip install voicepod`` with no extras, in a fresh venv.

Nothing of the workers' or the emulator's packages may be needed to import the client, build a VoiceAgent or run
the client's commands; a command that needs an extra says which one instead of failing with a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

SCRIPT = """
import importlib.util, voicepod
from voicepod import Endpoint, VoiceAgent
agent = VoiceAgent(Endpoint("a", api_key="k"), Endpoint("b", api_key="k"), Endpoint("c", api_key="k"))
assert agent.llm_options["max_tokens"] > 0
heavy = [m for m in ("aiohttp", "runpod", "torch", "transformers", "faster_whisper", "onnxruntime")
         if importlib.util.find_spec(m) is not None]
print("heavy:", heavy)
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    # A copy of the package's sources (not the checkout): what an sdist or a wheel of it would hold.
    root = tmp_path_factory.mktemp("thin")
    source = root / "voicepod"
    shutil.copytree(REPO / "client", source / "client", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    # pip's cache (and its registry) as the rest of the set-up uses; --no-build-isolation would need setuptools in
    # the fresh venv, so let pip build in its own isolated env.
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(source)], check=True, timeout=600)
    return root / "venv" / "bin"


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RUNPOD_"))}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=120,
                          cwd=bin_dir)


def test_the_client_imports_and_builds_an_agent_without_any_extra(venv):
    result = run(venv, "python", "-c", SCRIPT)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout  # the thin install really is thin


@pytest.mark.parametrize("args", [["--help"], ["turn", "--help"], ["cost", "--help"], ["deploy", "--help"]])
def test_the_commands_start(venv, args):
    result = run(venv, "voicepod", *args)
    assert result.returncode == 0, result.stderr
    assert "usage: voicepod" in result.stdout


def test_cost_runs(venv):
    result = run(venv, "voicepod", "cost", "--stt", "0.4", "--llm", "2", "--tts", "0.7", "--gpu", "4090")
    assert result.returncode == 0, result.stderr
    assert "| RTX 4090 (24 GB) |" in result.stdout


@pytest.mark.parametrize("command, args, extra", [
    ("serve-local", ["x=handler.py"], "local"),
    ("demo", [], "workers"),
    ("phone", ["--stt", "a", "--llm", "b", "--tts", "c", "--api-key", "k"], "phone"),
    ("call", ["ws://127.0.0.1:9/media", "question.wav"], "phone"),
])
def test_a_command_whose_extra_is_missing_says_which_to_install(venv, command, args, extra):
    import numpy as np
    from voicepod.audio import write_wav

    # A real question (16 kHz), so that `call` gets as far as needing its extra.
    (venv / "question.wav").write_bytes(write_wav(np.zeros(8000, dtype=np.float32), 16000))
    result = run(venv, "voicepod", command, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"voicepod {command}: ") and f"pip install 'voicepod[{extra}]'" in lines[0]
