"""The chat-template path and the generation plumbing of the LLM worker, on a tiny random Gemma 3 built from
a config in this test with a template set here: the template and plumbing are checked, never the answer (the
embedded chat model's own template and answers are tested with its real weights in test_llm.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig
from voicepod import JobFailed
from voicepod.local import LocalServer
from voicepod.protocol import CompletionDone, DeltaChunk

from workers.llm.bake import default_model_dir
from workers.llm.generation import (
    GenerationResult,
    LanguageModel,
    SamplingParams,
    load_language_model,
    stream_generate,
)

pytestmark = pytest.mark.slow

HANDLER = Path(__file__).resolve().parents[1] / "workers" / "llm" / "handler.py"
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def tiny_random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_random_gemma3")
    # A real tokenizer (the baked embedded model's) given another chat template: Gemma's turn markup.
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    tokenizer.chat_template = TEMPLATE
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=256,
        sliding_window=64, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(tiny_random_dir: Path) -> Iterator[LocalServer]:
    env = {"MODEL_DIR": str(tiny_random_dir), "DTYPE": "float32", "SERVED_MODEL_NAME": "tiny-random"}
    with LocalServer(endpoints={"llm": HANDLER}, env=env, ready_timeout_s=300) as running:
        yield running


async def run(server: LocalServer, job_input: dict[str, Any]) -> tuple[str, CompletionDone]:
    async with server.endpoint("llm") as endpoint:
        job = await endpoint.run(job_input)
        text = ""
        async for chunk in job.chunks():
            if isinstance(chunk, DeltaChunk):
                assert chunk.chunk["model"] == "tiny-random"
                text += chunk.text
            elif isinstance(chunk, CompletionDone):
                return text, chunk
    raise AssertionError("the stream ended without a done chunk")


async def test_chat_template_prompt_on_tiny_random_gemma3(server: LocalServer, tiny_random_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_random_dir)
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    plain = tokenizer("System: Answer in one word.\nUser: What is the capital of France?\nAssistant:").input_ids
    assert len(ids) != len(plain)

    text, done = await run(server, {"messages": MESSAGES, "max_tokens": 5, "temperature": 0.8, "seed": 7})
    assert done.usage.prompt_tokens == len(ids)
    assert text == done.text
    assert done.usage.completion_tokens <= 5
    # Without the plain template there is no implicit "\nUser:" stop: a random model runs to max_tokens.
    assert (done.finish_reason, done.usage.completion_tokens) == ("length", 5)
    again, _ = await run(server, {"messages": MESSAGES, "max_tokens": 5, "temperature": 0.8, "seed": 7})
    assert again == text


async def test_prompt_over_the_tiny_context_is_refused_tiny_random(server: LocalServer) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(server, {"messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 4})
    assert (failed.value.code, failed.value.field) == ("input_too_large", "messages")
    _, done = await run(server, {"messages": MESSAGES, "max_tokens": 3, "temperature": 0})
    assert done.usage.completion_tokens <= 3


@pytest.fixture(scope="module")
def tiny_random_lm(tiny_random_dir: Path) -> LanguageModel:
    return load_language_model(str(tiny_random_dir), torch.float32, "cpu")


def test_cancel_event_ends_generation_after_one_token_tiny_random(tiny_random_lm: LanguageModel) -> None:
    ids = tiny_random_lm.tokenizer("Hello there", return_tensors="pt").input_ids
    cancel = threading.Event()
    cancel.set()
    result = GenerationResult()
    list(stream_generate(tiny_random_lm, ids, SamplingParams(max_tokens=50, temperature=0), (), cancel, result))
    assert result.completion_tokens == 1


def test_generate_failure_reaches_the_caller_and_frees_the_model_tiny_random(
    tiny_random_lm: LanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = tiny_random_lm.tokenizer("Hello there", return_tensors="pt").input_ids
    params = SamplingParams(max_tokens=3, temperature=0)

    def out_of_memory(**kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(tiny_random_lm.model, "generate", out_of_memory)
        with pytest.raises(torch.OutOfMemoryError):
            list(stream_generate(tiny_random_lm, ids, params, (), threading.Event(), GenerationResult()))
    result = GenerationResult()
    list(stream_generate(tiny_random_lm, ids, params, (), threading.Event(), result))
    assert result.completion_tokens == 3
