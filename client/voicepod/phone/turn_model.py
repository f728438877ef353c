"""The end-of-turn model: Smart Turn v3.2 (Pipecat's, BSD-2-Clause) on onnxruntime, which reads the last 8 s of a
caller's audio and gives the probability that they have finished their turn.

The model is a Whisper-tiny encoder with a classifier head, trained on speech at 16 kHz; it hears prosody (a
falling, drawn-out end against a clause cut short), not words. Its CPU ONNX file (8.7 MB) is taken from the
hash-pinned pipecat-ai wheel by ``make models`` (:mod:`voicepod.phone.turn_model_bake`) and stored at
:func:`default_model_path`; nothing is downloaded at run time. Pipecat asks it after 0.2 s of silence; so does
the call here (a :class:`voicepod.phone.vad.Pause`'s audio ends that far into the silence).

    model = TurnModel.load()
    done = model.probability(line_audio_16k(pause.audio, "mulaw", 8000)) > 0.5
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..audio import mulaw_decode, pcm16_to_float, resample
from ..cli_errors import UsageError
from .log_mel import SAMPLE_RATE, log_mel

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
WINDOW_S = 8  # the model reads this much audio, the latest, zero-padded in front when there is less


def default_model_path() -> Path:
    """Where ``make models`` puts the model: ``${VOICEPOD_CACHE:-~/.cache/voicepod}/models/<MODEL_FILE>``."""
    cache = os.environ.get("VOICEPOD_CACHE") or Path.home() / ".cache" / "voicepod"
    return Path(cache) / "models" / MODEL_FILE


class TurnModelMissing(UsageError, FileNotFoundError):
    """The model file is not there: it is baked by ``make models`` (``python -m voicepod.phone.turn_model_bake``).
    A :class:`~voicepod.cli_errors.UsageError`, so a command that loads the model ends in that one line."""


def line_audio_16k(audio: bytes, encoding: str, sample_rate: int) -> np.ndarray:
    """A line's audio bytes as the model takes them: float32 mono samples at 16 kHz.

    Args:
        audio: Raw samples, headerless (a phone's mu-law, a browser's PCM16).
        encoding: ``mulaw`` (G.711) or ``pcm16`` (little-endian signed 16-bit).
        sample_rate: Their rate in Hz (a phone's mu-law: 8000); resampled to 16 kHz with soxr when different.
    """
    if encoding == "mulaw":
        samples = mulaw_decode(audio)
    elif encoding == "pcm16":
        samples = pcm16_to_float(audio)
    else:
        raise ValueError(f"encoding must be 'mulaw' or 'pcm16', not {encoding!r}")
    return resample(samples, sample_rate, SAMPLE_RATE)


def model_input(samples: np.ndarray) -> np.ndarray:
    """The model's input tensor, shape ``(1, 80, 800)``: log-mel features of the last 8 s of ``samples``
    (16 kHz float32), zero-padded in front when shorter, as Pipecat's own analyser does."""
    window = SAMPLE_RATE * WINDOW_S
    samples = np.asarray(samples, dtype=np.float32)[-window:]
    if samples.size < window:
        samples = np.concatenate([np.zeros(window - samples.size, dtype=np.float32), samples])
    return log_mel(samples)[None]


class TurnModel:
    """Smart Turn v3.2 in an onnxruntime session. One is enough for a server: a session runs calls from several
    threads at once."""

    def __init__(self, session: object):
        self._session = session

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 1) -> TurnModel:
        """Load the ONNX file ``path`` (default: :func:`default_model_path`).

        Args:
            path: The model file.
            threads: CPU threads of one decision. One, as Pipecat runs it: a decision takes tens of milliseconds
                and shares the machine with the call's other work.
        """
        import onnxruntime

        path = Path(path) if path is not None else default_model_path()
        if not path.is_file():
            raise TurnModelMissing(f"no turn model at {path}: run `make models` "
                                   "(python -m voicepod.phone.turn_model_bake) to bake it")
        options = onnxruntime.SessionOptions()
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        return cls(session)

    def probability(self, samples: np.ndarray) -> float:
        """The probability (0 to 1) that the speaker has finished, from their audio so far.

        Args:
            samples: Float32 mono audio at 16 kHz (:func:`line_audio_16k` converts a line's bytes), the turn
                from its start to now, including the silence after its last word; only the last 8 s is read.
        """
        [output] = self._session.run(None, {"input_features": model_input(samples)})
        return float(np.asarray(output).reshape(-1)[0])
