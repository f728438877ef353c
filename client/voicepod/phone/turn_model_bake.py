"""Bake the end-of-turn model: take Smart Turn v3.2's CPU ONNX file out of the hash-pinned pipecat-ai wheel.

``python -m voicepod.phone.turn_model_bake [--out FILE] [--wheel WHEEL]`` (``make models`` runs it).

The file ships only inside pipecat-ai's wheel, and the phone extra must not install all of Pipecat for one file,
so it is taken at bake time as the embedded models are: ``pip download --no-deps --require-hashes`` of the wheel
pinned here (:data:`WHEEL`, :data:`WHEEL_SHA256`) into a temporary folder, the ONNX file read out of it, its own
sha256 checked, and written to :func:`voicepod.phone.turn_model.default_model_path` (or ``--out``). ``--wheel`` reads a
wheel already here instead of downloading one (its file is checked all the same).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .turn_model import MODEL_FILE, default_model_path

# The wheel, pinned by hash; pinned here rather than in a requirements file so that an installed voicepod (no
# checkout) bakes too.
WHEEL = "pipecat-ai==1.14.0"
WHEEL_SHA256 = "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44"
# Where the file sits in the wheel, and what it must be.
MEMBER = f"pipecat/audio/turn/smart_turn/data/{MODEL_FILE}"
SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
SIZE = 8_679_182


class BakeError(RuntimeError):
    """The model could not be baked: the wheel lacks the file, or the file is not the pinned one."""


def extract(wheel: Path, out: Path, sha256: str = SHA256) -> Path:
    """Write the model file from ``wheel`` (a zip) to ``out``, refusing a file whose sha256 is not ``sha256``.

    Written beside ``out`` and renamed into place, so a failed or interrupted bake never leaves a file that a
    server would load.
    """
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(MEMBER)
        except KeyError:
            raise BakeError(f"{wheel.name} has no {MEMBER}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise BakeError(f"{MEMBER} in {wheel.name} has sha256 {digest} ({len(data)} bytes), "
                        f"not the pinned {sha256}: refusing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    partial.chmod(0o644)
    partial.replace(out)
    return out


def download_wheel(into: Path) -> Path:
    """``pip download`` the hash-pinned :data:`WHEEL` into ``into`` and return its path."""
    requirements = into / "requirements.txt"
    requirements.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
               "--only-binary=:all:", "-r", str(requirements), "-d", str(into)]
    subprocess.run(command, check=True)
    [wheel] = into.glob("pipecat_ai-*.whl")
    return wheel


def bake(out: Path | None = None, wheel: Path | None = None) -> Path:
    """Bake the model into ``out`` (default: where :class:`~voicepod.phone.turn_model.TurnModel` looks) from
    ``wheel``, or from a freshly downloaded pinned wheel. Kept if ``out`` already holds the pinned file."""
    out = out or default_model_path()
    if out.is_file() and out.stat().st_size == SIZE and _sha256(out) == SHA256:
        return out
    if wheel is not None:
        return extract(wheel, out)
    with tempfile.TemporaryDirectory(prefix="voicepod-turn-model-") as tmp:
        return extract(download_wheel(Path(tmp)), out)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m voicepod.phone.turn_model_bake",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=f"file to write (default {default_model_path()})")
    parser.add_argument("--wheel", type=Path, default=None, help="a pipecat-ai wheel already here, not downloaded")
    args = parser.parse_args(argv)
    try:
        path = bake(args.out, args.wheel)
    except (BakeError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"turn model not baked: {exc}") from None
    print(f"turn model {MODEL_FILE} (sha256 {SHA256[:12]}...) is baked at {path}")


if __name__ == "__main__":
    main()
