"""Baking the end-of-turn model (voicepod.phone.turn_model_bake): the ONNX file is taken out of a pipecat-ai wheel
only when it is the pinned file, byte for byte, and a refused bake leaves nothing a server would load. No download:
the wheels here are built from the file pipecat-ai installed in the dev environment."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from voicepod.phone import turn_model_bake
from voicepod.phone.turn_model_bake import MEMBER, SHA256, BakeError, bake, extract


@pytest.fixture(scope="module")
def real_model() -> bytes:
    import pipecat.audio.turn.smart_turn.data as data

    return (Path(data.__file__).parent / turn_model_bake.MODEL_FILE).read_bytes()


def wheel_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "pipecat_ai-1.14.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_the_pinned_file_is_taken_out_of_the_wheel(tmp_path, real_model):
    out = extract(wheel_with(tmp_path, {MEMBER: real_model, "pipecat/__init__.py": b""}), tmp_path / "m" / "st.onnx")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == SHA256
    assert out.stat().st_mode & 0o444 == 0o444


def test_a_file_that_is_not_the_pinned_one_is_refused_and_nothing_is_written(tmp_path, real_model):
    tampered = bytearray(real_model)
    tampered[len(tampered) // 2] ^= 0xFF  # one byte changed
    out = tmp_path / "st.onnx"
    with pytest.raises(BakeError, match="not the pinned"):
        extract(wheel_with(tmp_path, {MEMBER: bytes(tampered)}), out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_a_wheel_without_the_file_is_refused(tmp_path):
    with pytest.raises(BakeError, match="has no"):
        extract(wheel_with(tmp_path, {"pipecat/__init__.py": b""}), tmp_path / "st.onnx")


def test_a_baked_file_is_kept_and_a_wrong_one_is_baked_again(tmp_path, real_model, monkeypatch):
    def no_download(into):
        raise AssertionError("downloaded a wheel")

    monkeypatch.setattr(turn_model_bake, "download_wheel", no_download)
    out = tmp_path / "st.onnx"
    out.write_bytes(real_model)
    assert bake(out) == out  # already the pinned file: nothing to download
    out.write_bytes(b"not a model")
    with pytest.raises(AssertionError, match="downloaded"):
        bake(out)
    assert bake(out, wheel_with(tmp_path, {MEMBER: real_model})) == out
    assert out.read_bytes() == real_model


def test_the_command_line_ends_in_one_line_on_a_refused_wheel(tmp_path):
    with pytest.raises(SystemExit, match="turn model not baked: .*has no"):
        turn_model_bake.main(["--out", str(tmp_path / "st.onnx"), "--wheel", str(wheel_with(tmp_path, {}))])
