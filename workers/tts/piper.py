"""Piper voices: VITS models exported to ONNX, run with onnxruntime on espeak-ng phonemes.

A voice is a pair of files, ``<name>.onnx`` and ``<name>.onnx.json``; the JSON carries the sample rate, the
espeak-ng voice, the inference scales and the ``phoneme_id_map``. The piper-tts package itself is GPL, so
this module reimplements the small part of it a worker needs: phonemes to ids, and one ONNX call per
sentence.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .espeak import check_espeak, phonemize

log = logging.getLogger("voicepod.tts")

PAD, BOS, EOS = "_", "^", "$"


@dataclass(frozen=True)
class PiperConfig:
    """What a voice's ``.onnx.json`` says about running it.

    ``length_scale`` stretches durations (above 1 is slower speech); ``noise_scale`` and ``noise_w`` set
    how much the voice and the phoneme durations vary.
    """

    sample_rate: int
    espeak_voice: str
    phoneme_id_map: dict[str, list[int]]
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8
    num_speakers: int = 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PiperConfig:
        inference = data.get("inference", {})
        return cls(
            sample_rate=int(data["audio"]["sample_rate"]),
            espeak_voice=data["espeak"]["voice"],
            phoneme_id_map=data["phoneme_id_map"],
            noise_scale=float(inference.get("noise_scale", 0.667)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", 0.8)),
            num_speakers=int(data.get("num_speakers", 1)),
        )


def phoneme_ids(phonemes: str, id_map: dict[str, list[int]]) -> list[int]:
    """Ids for a phoneme string as Piper builds them: BOS, then each phoneme followed by PAD, then EOS.

    Args:
        phonemes: NFD-normalized IPA; each code point is one phoneme. Ones the map lacks are dropped.
        id_map: The voice's ``phoneme_id_map``.
    """
    ids = [*id_map[BOS], *id_map[PAD]]
    missing = set()
    for phoneme in phonemes:
        if phoneme not in id_map:
            missing.add(phoneme)
            continue
        ids.extend(id_map[phoneme])
        ids.extend(id_map[PAD])
    ids.extend(id_map[EOS])
    if missing:
        log.debug("phonemes missing from the voice's id map, dropped: %s", sorted(missing))
    return ids


class PiperVoice:
    """One Piper voice loaded into an onnxruntime session."""

    def __init__(self, model_path: Path, config: PiperConfig):
        import onnxruntime

        self.name = model_path.name.removesuffix(".onnx")
        self.config = config
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self._session = onnxruntime.InferenceSession(str(model_path), providers=providers)
        self._inputs = {i.name for i in self._session.get_inputs()}
        # onnxruntime's CPU arena keeps the most memory its runs ever needed at once, and a long sentence's run
        # needs hundreds of MiB: the worker's memory stepped up with each new peak and never came down (1.2 GB held
        # after 400 sentences of 3-40 words, 4 at a time). Shrunk at the end of each run, what no run holds goes
        # back to the system: 470 MiB over the last third. benchmarks/tts_memory.py tells the steps apart.
        self._run_options = onnxruntime.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @classmethod
    def load(cls, model_path: str | Path) -> PiperVoice:
        """Load ``<name>.onnx`` and the ``<name>.onnx.json`` beside it."""
        model_path = Path(model_path)
        config_path = model_path.with_name(model_path.name + ".json")
        config = PiperConfig.from_json(json.loads(config_path.read_text(encoding="utf-8")))
        return cls(model_path, config)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        """Speak one sentence; float32 mono samples at :attr:`sample_rate` (empty if nothing to say).

        Args:
            text: The sentence.
            speed: Speaking rate relative to the voice's own (2.0 is twice as fast): divides length_scale.
        """
        ids = phoneme_ids(phonemize(text, self.config.espeak_voice), self.config.phoneme_id_map)
        if len(ids) <= 3:  # BOS, PAD, EOS only
            return np.zeros(0, dtype=np.float32)
        feeds = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array(
                [self.config.noise_scale, self.config.length_scale / speed, self.config.noise_w],
                dtype=np.float32,
            ),
        }
        if self.config.num_speakers > 1 and "sid" in self._inputs:
            feeds["sid"] = np.array([0], dtype=np.int64)  # the first speaker of a multi-speaker voice
        audio = self._session.run(None, feeds, self._run_options)[0]
        return np.clip(audio.reshape(-1), -1.0, 1.0).astype(np.float32)


class PiperEngine:
    """Every Piper voice in a folder (or one ``.onnx`` file); voices are named after their files."""

    name = "piper"

    def __init__(self, voices: dict[str, PiperVoice], default_voice: str | None = None):
        if not voices:
            raise ValueError("no Piper voice found (want <name>.onnx with <name>.onnx.json beside it)")
        if default_voice is not None and default_voice not in voices:
            raise ValueError(f"VOICE {default_voice!r} is not among the voices found: {sorted(voices)}")
        self._voices = voices
        self.default_voice = default_voice or sorted(voices)[0]

    @classmethod
    def load(cls, path: str | Path, default_voice: str | None = None) -> PiperEngine:
        """Load the voice file ``path`` or every ``*.onnx`` voice in the folder ``path``."""
        check_espeak()
        path = Path(path)
        files = [path] if path.is_file() else sorted(path.glob("*.onnx"))
        voices = {}
        for file in files:
            voice = PiperVoice.load(file)
            voices[voice.name] = voice
        return cls(voices, default_voice)

    @property
    def voices(self) -> tuple[str, ...]:
        return tuple(sorted(self._voices))

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Speak one sentence with ``voice`` (default: :attr:`default_voice`); returns (samples, rate)."""
        chosen = self._voices[voice or self.default_voice]
        # No lock: an onnxruntime session runs calls from several threads at once, and concurrent jobs should.
        # On 2 cores, 4 sentences in 4 threads took 0.73 s against 2.3 s one after another (one run does not keep
        # both cores busy: much of a Piper run is small sequential ops).
        return chosen.synthesize(text, speed), chosen.sample_rate
