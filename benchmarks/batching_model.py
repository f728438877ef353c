"""The LLM that the scheduler and exactness benchmarks load: the embedded SmolLM2-135M, or a model's shape with
random weights where the weights cannot go (a lent GPU machine: ``benchmarks/device_check.sh``)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

# What ``--random-weights-like`` reads from a baked model folder: everything but the weights.
SHAPE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja")


def copy_shape(model_dir: str | Path, out: str | Path) -> Path:
    """Copy a baked model's :data:`SHAPE_FILES` from ``model_dir`` into ``out`` (made if missing); return ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHAPE_FILES:
        shutil.copy(Path(model_dir) / name, out / name)
    return out


def _missing(folder: Path) -> list[str]:
    return [name for name in SHAPE_FILES if not (folder / name).is_file()]


def _shape_dir(value: str) -> Path:
    if missing := _missing(Path(value)):
        raise argparse.ArgumentTypeError(f"{value} lacks {', '.join(missing)} (make device-kit copies them)")
    return Path(value)


def random_weights_option(parser: argparse.ArgumentParser) -> None:
    """``--random-weights-like DIR`` for the LLM benchmarks that :func:`llm_for_benchmark` loads."""
    parser.add_argument("--random-weights-like", type=_shape_dir, metavar="DIR",
                        help="a folder with a model's config.json and tokenizer (no weights): that model with random "
                             "weights, for a machine the embedded weights cannot reach (its speed is the real one's)")


def llm_for_benchmark(dtype_name: str, random_weights_like: Path | None = None) -> Any:
    """The embedded SmolLM2-135M (baked first if needed) in ``dtype_name``, on CUDA when present, else the CPU.

    ``random_weights_like``: the model of that folder's ``config.json``, with its tokenizer, random weights (seeded)
    and no end-of-sequence token, so that every stream writes its ``max_tokens``.
    """
    import torch

    from workers.llm.generation import LanguageModel, load_language_model, load_tokenizer, parse_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = parse_dtype(dtype_name)
    if random_weights_like is None:
        from workers.llm.bake import default_model_dir, ensure_embedded

        return load_language_model(str(ensure_embedded(default_model_dir())), dtype, device)
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(random_weights_like)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    model.generation_config.eos_token_id = None
    return LanguageModel(model=model, tokenizer=load_tokenizer(str(random_weights_like)),
                         name=f"random-{random_weights_like.name}", context_length=config.max_position_embeddings,
                         device=device)


def question_ids(lm: Any, question: str) -> Any:
    """The token ids of ``question`` as one user message in ``lm``'s chat template, as the LLM worker builds them."""
    from workers.llm.prompt import chat_prompt, token_ids

    return token_ids(lm.tokenizer, chat_prompt(lm.tokenizer, [{"role": "user", "content": question}]))


if __name__ == "__main__":
    # What ``make device-kit`` copies.
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batching_model",
                                     description="copy a baked model's shape files")
    parser.add_argument("model_dir", type=Path, help="a baked model folder")
    parser.add_argument("out", type=Path, help="where to copy its config and tokenizer")
    args = parser.parse_args()
    if missing := _missing(args.model_dir):
        parser.error(f"{args.model_dir} lacks {', '.join(missing)}: bake the model first (make models)")
    copy_shape(args.model_dir, args.out)
