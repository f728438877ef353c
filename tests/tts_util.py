"""Helpers for the TTS tests: a tiny random VITS checkpoint and decoding of streamed audio chunks."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from voicepod.audio import mulaw_decode, pcm16_to_float, read_wav
from voicepod.protocol import AudioChunk


def build_tiny_vits(folder: Path, num_speakers: int = 1) -> Path:
    """Save a randomly initialised, very small VitsModel and a character VitsTokenizer into ``folder``.

    Its speech is noise: tests use it for shapes, rates and plumbing, never for what it says.
    """
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate("_ abcdefghijklmnopqrstuvwxyz'.,?!-")}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    VitsTokenizer(str(folder / "vocab.json"), pad_token="_", unk_token="_", phonemize=False).save_pretrained(folder)
    torch.manual_seed(0)
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
        flow_size=16, spectrogram_bins=33, upsample_initial_channel=16, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]],
        prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1, duration_predictor_filter_channels=16, depth_separable_num_layers=1,
        sampling_rate=16000, num_speakers=num_speakers, speaker_embedding_size=8 if num_speakers > 1 else 0,
        noise_scale_duration=0.0,  # deterministic durations, so speed comparisons are exact
    )
    VitsModel(config).save_pretrained(folder)
    return folder


def decode_stream(chunks: list[AudioChunk]) -> tuple[np.ndarray, int]:
    """Concatenate a job's audio chunks the way a client would and decode them to (samples, rate)."""
    assert chunks, "no audio chunks"
    formats = {c.format for c in chunks}
    rates = {c.sample_rate for c in chunks}
    assert len(formats) == 1 and len(rates) == 1, (formats, rates)
    data = b"".join(base64.b64decode(c.audio) for c in chunks)
    fmt, rate = formats.pop(), rates.pop()
    if fmt == "wav":
        samples, header_rate = read_wav(data)
        assert header_rate == rate
        return samples, rate
    if fmt == "mulaw":
        return mulaw_decode(data), rate
    return pcm16_to_float(data), rate

