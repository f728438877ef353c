"""The LLM worker reads its tokenizer from tokenizer.json alone (seconds faster than the model's own tokenizer
class): it must give the same token ids and text as the class transformers would pick for the baked model."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from workers.llm.bake import default_model_dir
from workers.llm.generation import load_tokenizer
from workers.llm.prompt import chat_prompt

TEXTS = [
    "What is the capital of France?",
    "  leading spaces\n\nblank lines\tand a tab",
    "Ünïcödé, 日本語 and an emoji 🎉",
    "Numbers 3.14159 and 1,000,000; code: def f(x): return x**2",
    "a" * 80,
]


@pytest.mark.slow
def test_the_fast_tokenizer_matches_the_models_own_on_the_baked_model():
    folder = default_model_dir()
    if not (folder / "tokenizer.json").exists():
        pytest.skip(f"no baked LLM in {folder} (python -m workers.llm.bake)")
    fast, own = load_tokenizer(str(folder)), AutoTokenizer.from_pretrained(str(folder))
    chat = chat_prompt(own, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}])
    assert chat_prompt(fast, [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Hi there!"}]) == chat
    for text in [*TEXTS, chat.text]:
        for special in (True, False):
            ids = own(text, add_special_tokens=special).input_ids
            assert fast(text, add_special_tokens=special).input_ids == ids, (text, special)
            for skip in (True, False):
                assert fast.decode(ids, skip_special_tokens=skip) == own.decode(ids, skip_special_tokens=skip)
    assert (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (own.bos_token_id, own.eos_token_id,
                                                                         own.pad_token_id)
    assert sorted(fast.all_special_ids) == sorted(own.all_special_ids)
