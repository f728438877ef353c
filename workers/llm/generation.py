"""Load a causal LM and stream its text: ``generate`` in a thread feeding a ``TextIteratorStreamer``.

Generation stops early when a stop string appears, when a sentence ends past ``sentence_end_after`` tokens, or when
the caller sets a cancel event (the job was cancelled, the client went away), all checked by a stopping criterion
after every token.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from .stops import contains_stop, sentence_ended

# Pieces the streamer hands over within this window go out as one delta: on a GPU tokens come every few ms,
# and one stream chunk per token would be mostly envelope.
COALESCE_S = float(os.environ.get("COALESCE_MS", "5")) / 1000

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
           "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}

# One generate at a time per process: the model is shared, and a seed must govern only its own job.
_generate_lock = threading.Lock()


@dataclass
class LanguageModel:
    """A loaded model with what the handler needs to know about it."""

    model: Any
    tokenizer: Any
    name: str
    context_length: int
    device: str


@dataclass(frozen=True)
class SamplingParams:
    """``max_tokens`` new tokens at most; ``temperature`` 0 means greedy; ``seed`` makes sampling repeatable;
    ``sentence_end_after``: from that many new tokens on, the generation ends as soon as its text ends a sentence or
    list item (a reply cap with an allowance to finish the sentence in progress: ``max_tokens`` is cap plus
    allowance)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    sentence_end_after: int | None = None


@dataclass
class GenerationResult:
    """Filled in as a generation goes: how many tokens it produced, whether it ended on EOS; from the batched
    scheduler also the most requests in one forward with it, a joint prefill or a decode step (1: alone), and when
    its first token was chosen (``time.perf_counter()``: its text may leave later, once a word is complete)."""

    completion_tokens: int = 0
    ended_on_eos: bool = False
    batch_max: int = 1
    first_token_at: float | None = None


def parse_dtype(name: str) -> torch.dtype:
    """Map a ``DTYPE`` setting (``bfloat16``/``bf16``, ``float16``/``fp16``, ``float32``/``fp32``)."""
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"DTYPE must be one of {sorted(_DTYPES)}, got {name!r}") from None


def load_tokenizer(location: str) -> Any:
    """The tokenizer of ``location``; from its ``tokenizer.json`` alone when it has one.

    transformers 5 rebuilds a model-specific tokenizer class (GemmaTokenizer...) from the vocabulary it parses out
    of tokenizer.json in Python, then builds it again in Rust: 2-3 s for Gemma's 262k-token vocabulary, where the
    generic ``PreTrainedTokenizerFast`` reads the same file once, in Rust, to the same token ids. An empty
    ``added_tokens_decoder`` skips a second, legacy parse of tokenizer.json for its added tokens, which the file
    itself already gives the Rust tokenizer.
    """
    if (Path(location) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(location, added_tokens_decoder={})
    return AutoTokenizer.from_pretrained(location)


def load_language_model(location: str, dtype: torch.dtype, device: str, name: str | None = None) -> LanguageModel:
    """Load the tokenizer and model from ``location`` (a folder or a hub id) onto ``device``.

    ``name`` is the model name reported to OpenAI clients (default: the folder's name or the hub id).
    The tokenizer loads in a second thread meanwhile: its Rust parser releases the GIL, and the model's load is
    mostly transformers importing its modelling code. The weights go straight from the memory-mapped safetensors
    into ``dtype`` on ``device`` (``device_map``); transformers builds the model on the meta device first, so
    nothing is randomly initialised.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="voicepod-tokenizer") as pool:
        tokenizer_loaded = pool.submit(load_tokenizer, location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, device_map=device).eval()
        tokenizer = tokenizer_loaded.result()
    text_config = model.config.get_text_config()
    context = getattr(text_config, "max_position_embeddings", None) or tokenizer.model_max_length
    served = name or (Path(location).name if Path(location).exists() else location)
    return LanguageModel(model=model, tokenizer=tokenizer, name=served, context_length=int(context), device=device)


def _stop_window(stops: Sequence[str]) -> int:
    # A stop that just completed lies within the last tokens; a character may take up to 4 byte tokens.
    return 4 * max((len(stop) for stop in stops if stop), default=0) + 8


def tail_has_stop(tokenizer: Any, new_ids: Sequence[int], stops: Sequence[str]) -> bool:
    """Whether the text of the last new tokens holds one of ``stops`` (checked after every token)."""
    if not any(stops):
        return False
    tail = list(new_ids[-_stop_window(stops) :])
    return contains_stop(tokenizer.decode(tail, skip_special_tokens=True), stops)


class _StopWhen(StoppingCriteria):
    """Ends generation once ``cancel`` is set, the new text holds one of ``stops``, or a sentence ends past
    ``sentence_end_after`` new tokens."""

    def __init__(self, tokenizer: Any, prompt_len: int, stops: Sequence[str], cancel: threading.Event,
                 sentence_end_after: int | None = None):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stops = [stop for stop in stops if stop]
        self.cancel = cancel
        self.window = _stop_window(self.stops)
        self.sentence_end_after = sentence_end_after

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = self.cancel.is_set()
        if not done and self.stops:
            tail = input_ids[0, max(self.prompt_len, input_ids.shape[1] - self.window) :]
            done = contains_stop(self.tokenizer.decode(tail, skip_special_tokens=True), self.stops)
        written = input_ids.shape[1] - self.prompt_len
        if not done and self.sentence_end_after is not None and written >= self.sentence_end_after:
            done = sentence_ended(self.tokenizer, input_ids[0, self.prompt_len :].tolist(), self.sentence_end_after)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def stream_generate(
    lm: LanguageModel,
    prompt_ids: torch.Tensor,
    params: SamplingParams,
    stops: Sequence[str],
    cancel: threading.Event,
    result: GenerationResult,
) -> Iterator[str]:
    """Generate from ``prompt_ids`` (shape ``[1, n]``) and yield the new text in pieces as it comes.

    Blocking; meant to run in a worker thread. ``stops`` end generation (the caller still trims them from
    the text, see :mod:`workers.llm.stops`); setting ``cancel`` ends it after the current token. ``result``
    is filled in once the generation has ended.
    """
    prompt_ids = prompt_ids.to(lm.device)
    prompt_len = prompt_ids.shape[1]
    streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs: dict[str, Any] = {
        "input_ids": prompt_ids,
        "attention_mask": torch.ones_like(prompt_ids),
        "max_new_tokens": params.max_tokens,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList(
            [_StopWhen(lm.tokenizer, prompt_len, stops, cancel, params.sentence_end_after)]
        ),
        "pad_token_id": lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None
        else lm.tokenizer.eos_token_id,
    }
    if params.temperature > 0:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with _generate_lock, torch.inference_mode():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                output = lm.model.generate(**kwargs)
            new = output[0, prompt_len:]
            result.completion_tokens = int(new.shape[0])
            eos = lm.model.generation_config.eos_token_id
            eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
            result.ended_on_eos = bool(new.shape[0]) and int(new[-1]) in eos_ids
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, name="voicepod-generate", daemon=True)
    thread.start()
    try:
        yield from coalesced(streamer, COALESCE_S)
    finally:
        # Reached on the normal end and when the consumer stops early; either way generate must be over
        # before this returns, so the next job never finds the model still busy with this one.
        cancel.set()
        thread.join()
    if failure:
        raise failure[0]


def coalesced(streamer: TextIteratorStreamer, window_s: float) -> Iterator[str]:
    pieces: queue.Queue[Any] = streamer.text_queue
    end = streamer.stop_signal
    while True:
        first = pieces.get()
        if first is end:
            return
        parts = [first]
        deadline = time.monotonic() + window_s
        ended = False
        while (left := deadline - time.monotonic()) > 0:
            try:
                piece = pieces.get(timeout=left)
            except queue.Empty:
                break
            if piece is end:
                ended = True
                break
            parts.append(piece)
        text = "".join(parts)
        if text:
            yield text
        if ended:
            return
