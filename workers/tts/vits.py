"""VITS checkpoints in transformers format (MMS-TTS and others), run with torch (on the GPU when there is one).

An opt-in engine (``ENGINE=transformers``, or a ``MODEL_NAME``): the default everywhere is a Piper voice
(:mod:`workers.tts.piper`). Asked for with no model named, it loads ``facebook/mms-tts-eng`` (Meta's Massively
Multilingual Speech English voice, licence CC-BY-NC 4.0: not for commercial use, which the worker logs). Any
``VitsModel`` checkpoint with its ``VitsTokenizer`` loads the same way; multi-speaker checkpoints name their voices
by speaker index ("0", "1", ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_MODEL = "facebook/mms-tts-eng"


class VitsEngine:
    """A transformers ``VitsModel`` with its tokenizer, on CUDA when there is one."""

    name = "transformers"

    def __init__(self, model, tokenizer, model_name: str, default_voice: str | None = None):
        self._model = model
        self._tokenizer = tokenizer
        self.sample_rate = int(model.config.sampling_rate)
        speakers = int(model.config.num_speakers)
        self._voices = tuple(str(i) for i in range(speakers)) if speakers > 1 else (model_name,)
        if default_voice is not None and default_voice not in self._voices:
            raise ValueError(f"VOICE {default_voice!r} is not one of this model's voices: {list(self._voices)}")
        self.default_voice = default_voice or self._voices[0]

    @classmethod
    def load(cls, source: str, default_voice: str | None = None, device: str | None = None) -> VitsEngine:
        """Load a checkpoint from a folder or a hub name.

        Args:
            source: Folder holding the model and tokenizer, or a hub name such as ``facebook/mms-tts-eng``.
            default_voice: Voice used when a request names none.
            device: torch device; default ``cuda`` when available, else ``cpu``.
        """
        import torch
        from transformers import VitsModel, VitsTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = VitsModel.from_pretrained(source).to(device).eval()
        tokenizer = VitsTokenizer.from_pretrained(source)
        name = Path(source).name if Path(source).is_dir() else source.rsplit("/", 1)[-1]
        return cls(model, tokenizer, name, default_voice)

    @property
    def voices(self) -> tuple[str, ...]:
        return self._voices

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Speak one sentence; returns (float32 mono samples, sample rate), empty if nothing to say.

        Args:
            text: The sentence.
            voice: One of :attr:`voices` (default :attr:`default_voice`).
            speed: Speaking rate relative to the model's (2.0 is twice as fast).
        """
        import torch

        voice = voice or self.default_voice
        ids = self._tokenizer(text, return_tensors="pt").input_ids
        if not bool((ids != self._tokenizer.pad_token_id).any()):  # every character was outside the vocab
            return np.zeros(0, dtype=np.float32), self.sample_rate
        speaker = int(voice) if self._model.config.num_speakers > 1 else None
        # No lock: an eval-mode forward changes no module state, so concurrent jobs synthesize in parallel.
        with torch.inference_mode():
            output = self._model(
                input_ids=ids.to(self._model.device),
                speaker_id=speaker,
                speaking_rate=self._model.config.speaking_rate * speed,
            )
        waveform = output.waveform[0].float().cpu().numpy()
        return np.clip(waveform, -1.0, 1.0).astype(np.float32), self.sample_rate
