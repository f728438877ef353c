"""The Dockerfiles, checked without a Docker engine: hadolint, layer order, and one source of truth with the
local setup (the same pinned extra, the same bake entry) so an image build installs what the tests install."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from voicepod.registry import NAMES
from voicepod.registry import WORKERS as REGISTRY

from workers.common import bake as bake_module
from workers.common.extras import extra_requirements
from workers.llm import bake as llm_bake
from workers.stt import bake as stt_bake

from .conftest import REPO

WORKERS = NAMES
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(worker: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    text = (REPO / f"Dockerfile.{worker}").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def index_of(steps: list[tuple[str, str]], keyword: str, needle: str) -> int:
    matches = [i for i, (kw, args) in enumerate(steps) if kw == keyword and needle in args]
    assert len(matches) == 1, f"expected one {keyword} containing {needle!r}, found {len(matches)}"
    return matches[0]


@pytest.mark.parametrize("worker", WORKERS)
def test_dockerfile_lints_clean_with_hadolint(worker):
    result = subprocess.run([str(HADOLINT), str(REPO / f"Dockerfile.{worker}")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("worker", WORKERS)
def test_dockerfile_installs_exactly_its_extra_then_bakes_then_copies_code(worker):
    steps = instructions(worker)
    base = next(args for kw, args in steps if kw == "FROM")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base

    deps = index_of(steps, "RUN", "workers/common/extras.py")
    assert f"python workers/common/extras.py {worker} > /tmp/requirements.txt" in steps[deps][1]
    assert "pip install -r /tmp/requirements.txt" in steps[deps][1]
    if "torch==2.13.0" in extra_requirements(worker):
        assert "\"$(grep '^torch==' /tmp/requirements.txt)\"" in steps[deps][1]
    else:
        assert "torch" not in steps[deps][1]

    bake = index_of(steps, "RUN", "workers.common.bake")
    assert shlex.split(steps[bake][1].split("python ", 1)[1]) == [
        "-m", "workers.common.bake", "--worker", worker, "--out", f"/models/{worker}",
        "--model", "$MODEL_NAME", "--revision", "$MODEL_REVISION",
    ]
    assert steps[bake][1].startswith("--mount=type=secret,id=hf_token,env=HF_TOKEN ")
    assert any(kw == "ARG" and args.startswith("MODEL_NAME=") for kw, args in steps[:bake])
    assert ("ARG", "MODEL_REVISION=") in steps[:bake]

    code = index_of(steps, "COPY", "workers ./workers")
    install = index_of(steps, "RUN", "pip install \".[")
    # Bytecode of the worker's modules is compiled at build time: the worker's user cannot write /app to cache it.
    assert steps[install][1] == f'pip install ".[{worker}]" && python -m compileall -q workers'
    assert deps < bake < code < install

    env = " ".join(args for kw, args in steps[install:] if kw == "ENV")
    assert f"MODEL_DIR=/models/{worker}" in env and "HF_HUB_OFFLINE=1" in env
    assert not any("HF_TOKEN" in args for kw, args in steps if kw in ("ENV", "ARG"))
    assert steps[-1] == ("CMD", f'["python", "-m", "workers.{worker}.handler"]')


def copied_before(worker: str, step: int) -> list[str]:
    sources = []
    for kw, args in instructions(worker)[:step]:
        if kw == "COPY":
            sources += args.split()[:-1]
    return sources


@pytest.mark.parametrize("worker", WORKERS)
def test_files_copied_before_the_bake_are_enough_to_bake_and_nothing_more(worker, tmp_path):
    steps = instructions(worker)
    sources = copied_before(worker, index_of(steps, "RUN", "workers.common.bake"))
    # Only the bake's own modules: any other code edit must leave the dependency and model layers cached.
    allowed = {"pyproject.toml", "workers/common/extras.py", "workers/__init__.py", "workers/common/__init__.py",
               "workers/common/bake.py", f"workers/{worker}/__init__.py", f"workers/{worker}/bake.py"}
    if worker == "tts":  # the embedded Piper voice's hash-pinned package, the image's default voice
        allowed.add("requirements/models.txt")
    assert set(sources) <= allowed
    for source in sources:
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / source, tmp_path / source)
    # What the bake command imports: the dispatcher, then the worker's own bake module through it.
    # voicepod itself is installed only after the bake (its sources come later), so it must not be needed.
    load = (f"import sys; sys.modules['voicepod'] = None; import workers.common.bake as b; "
            f"b.worker_baker({worker!r}); print(b.__file__)")
    check = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert Path(check.stdout.strip()).is_relative_to(tmp_path)
    printed = subprocess.run([sys.executable, "workers/common/extras.py", worker], cwd=tmp_path,
                             capture_output=True, text=True, check=True)
    assert printed.stdout.split() == extra_requirements(worker)


@pytest.mark.parametrize("worker", WORKERS)
def test_the_image_pins_are_the_versions_the_tests_run_on(worker):
    pins = [req for req in extra_requirements(worker) if "==" in req]
    assert pins
    for req in pins:
        name, pinned = req.split("==")
        # This machine has torch's CPU build (2.13.0+cpu); the image takes the CUDA build of the same version.
        assert version(name).split("+")[0] == pinned, req


def test_extras_expand_self_references_and_keep_the_core_dependencies():
    workers = extra_requirements("workers")
    for extra in ("local", "stt", "llm", "tts"):
        assert set(extra_requirements(extra)) <= set(workers)
    assert workers[:3] == ["httpx>=0.27,<1", "pydantic>=2.7,<3", "numpy>=1.26"]
    assert len(workers) == len(set(workers)) and not any(req.startswith("voicepod") for req in workers)
    with pytest.raises(KeyError):
        extra_requirements("gpu")


def test_dockerignore_sends_only_what_the_images_copy():
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for worker in WORKERS:
        for source in copied_before(worker, len(instructions(worker))):
            assert source.split("/")[0] in kept, source


def test_bake_embedded_whisper_loads_offline_from_the_folder(tmp_path):
    from faster_whisper import WhisperModel

    out = bake_module.bake("stt", tmp_path / "stt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    model = WhisperModel(str(out), device="cpu", compute_type="int8", local_files_only=True)
    assert not model.model.is_multilingual  # tiny.en


@pytest.mark.slow
def test_bake_embedded_whisper_base_joins_its_two_halves_and_loads_offline(tmp_path):
    from faster_whisper import WhisperModel

    out = bake_module.bake("stt", tmp_path / "stt", embedded="base")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    assert (out / "model.bin").stat().st_size == stt_bake.BASE_SIZE
    model = WhisperModel(str(out), device="cpu", compute_type="int8", local_files_only=True)
    assert model.model.is_multilingual  # base, not tiny.en


def test_bake_refuses_a_joined_whisper_base_that_is_not_the_pinned_file(tmp_path, monkeypatch):
    monkeypatch.setattr(stt_bake, "BASE_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="not the pinned"):
        bake_module.bake("stt", tmp_path / "stt", embedded="base")
    assert sorted(p.name for p in (tmp_path / "stt").iterdir()) == ["config.json", "tokenizer.json",
                                                                      "vocabulary.txt"]


def test_bake_embedded_piper_voice_is_what_the_piper_engine_loads(tmp_path):
    from workers.tts.piper import PiperEngine

    bake_module.main(["--worker", "tts", "--out", str(tmp_path / "tts"), "--model", "", "--revision", ""])
    engine = PiperEngine.load(str(tmp_path / "tts"))
    samples, rate = engine.synthesize("Hello.")
    assert rate == 22050 and len(samples) > rate // 4


def test_bake_llm_keeps_a_hub_snapshot_with_safetensors_as_is(tmp_path, monkeypatch):
    # No hub here: the snapshot is a folder of the files a download would give, the weights a stand-in.
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (snapshot / name).write_text(name)
    calls = []

    def fake_snapshot(model, revision, into):
        calls.append((model, revision))
        return snapshot

    monkeypatch.setattr(llm_bake, "snapshot", fake_snapshot)
    out = bake_module.bake("llm", tmp_path / "llm", "org/model", "v1.0")
    assert calls == [("org/model", "v1.0")]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in out.iterdir())


def test_bake_refuses_a_revision_without_a_model_and_an_unknown_worker(tmp_path):
    with pytest.raises(ValueError, match="--revision needs --model"):
        bake_module.bake("stt", tmp_path, None, "main")
    with pytest.raises(ValueError, match="worker must be one of"):
        bake_module.bake("asr", tmp_path)


def test_bake_refuses_an_unknown_embedded_model_and_embedded_with_a_hub_model(tmp_path):
    with pytest.raises(ValueError, match=r"embedded models are \['smollm2', 'gemma'\], not 'llama'"):
        bake_module.bake("llm", tmp_path, embedded="llama")
    with pytest.raises(ValueError, match="not both"):
        bake_module.bake("llm", tmp_path, "org/model", embedded="gemma")
    with pytest.raises(ValueError, match="tts worker's embedded models"):
        bake_module.bake("tts", tmp_path, embedded="gemma")
    with pytest.raises(ValueError, match=r"embedded models are \['tiny.en', 'base'\], not 'small'"):
        bake_module.bake("stt", tmp_path, embedded="small")


def test_the_bake_dispatcher_imports_no_worker_module_until_asked():
    # The circle this replaced: common imported workers.llm.bake, which imported common.
    code = ("import sys, workers.common.bake as b; assert not [m for m in sys.modules if m.startswith(("
            "'workers.stt', 'workers.llm', 'workers.tts'))], sorted(sys.modules); b.worker_baker('llm'); "
            "assert 'workers.llm.bake' in sys.modules and 'workers.llm.handler' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_bake_knows_the_workers_of_the_registry():
    from voicepod.registry import NAMES

    from workers.common.bake import WORKERS as BAKED

    assert BAKED == NAMES


@pytest.mark.parametrize("info", REGISTRY, ids=NAMES)
def test_each_registered_worker_has_its_image_extra_and_handler(info):
    # One row of voicepod.registry is the whole of a worker's identity: its Dockerfile installs its extra and
    # starts its handler's module.
    steps = dict((kw, args) for kw, args in instructions(info.name) if kw == "CMD")
    assert f"workers.{info.name}.handler" in steps["CMD"] and info.handler(REPO).is_file()
    assert (REPO / info.dockerfile).is_file()
    installs = [args for kw, args in instructions(info.name) if kw == "RUN" and "pip install" in args]
    assert any(f'".[{info.extra}]"' in args or f"extras.py {info.extra}" in args for args in installs), installs
