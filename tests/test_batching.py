"""The batched scheduler, :class:`workers.llm.batching.BatchedGenerator`: built directly on the real
SmolLM2-135M-Instruct weights (what only the scheduler can show: how many requests it decoded together, what it still
holds, its prefills and steps, through its :class:`~workers.llm.batching.Observer`), and its cache rows
(:class:`workers.llm.cache_rows.CacheRows`) on tiny tensors against plain concatenation. Many jobs through the local
emulator: ``tests/test_concurrency.py``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import DynamicCache, LlamaConfig
from voicepod.sentences import ends_sentence

from benchmarks.batching_model import question_ids
from tests.test_llm import LONG
from workers.llm.bake import default_model_dir
from workers.llm.batching import BatchedGenerator, Observer, supports_batching
from workers.llm.cache_rows import CacheRows, Layers, pad_left
from workers.llm.generation import GenerationResult, LanguageModel, SamplingParams, load_language_model, stream_generate
from workers.llm.invariance import make_batch_invariant
from workers.llm.prefill import prefill
from workers.llm.prefix_cache import PrefixCache
from workers.llm.prompt import chat_prompt, token_ids

slow = pytest.mark.slow

# Different lengths of prompt and of answer, so requests join and leave the batch at different tokens.
QUESTIONS = ["What is the capital of Spain?", "How do I make tea?", "Tell me a joke.", "Count from 1 to 20.",
             "Why is the sky blue?", "How do plants grow?"]
LONG_ANSWER = 400


# --- cache rows, on tiny tensors: no model -----------------------------------------------------------------------

HEADS, HEAD_SIZE = 2, 3


def _cache() -> DynamicCache:
    """An empty cache with a two-layer model's full-attention layers (built from a config alone)."""
    config = LlamaConfig(num_hidden_layers=2, hidden_size=HEADS * HEAD_SIZE, num_attention_heads=HEADS,
                         num_key_value_heads=HEADS, intermediate_size=8, vocab_size=16)
    return DynamicCache(config=config)


def _row(n: int, seed: int) -> Layers:
    """One row's keys and values at ``n`` positions in each of two layers (``[1, HEADS, n, HEAD_SIZE]``), none 0."""
    draw = torch.Generator().manual_seed(seed)
    return [(torch.rand(1, HEADS, n, HEAD_SIZE, generator=draw) + 1,
             torch.rand(1, HEADS, n, HEAD_SIZE, generator=draw) + 1) for _ in range(2)]


def _zeros_then(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` (``[b, h, n, d]``) after zeros up to ``width`` positions: the plain concatenation."""
    b, h, n, d = tensor.shape
    return torch.cat([torch.zeros(b, h, width - n, d), tensor], dim=2)


def _batch(rows: list[Layers], width: int) -> CacheRows:
    """``rows`` each after zeros up to ``width`` positions, concatenated, with the mask of that layout."""
    cache = _cache()
    for i, layer in enumerate(cache.layers):
        layer.lazy_initialization(rows[0][i][0], rows[0][i][1])
        layer.keys = torch.cat([_zeros_then(row[i][0], width) for row in rows])
        layer.values = torch.cat([_zeros_then(row[i][1], width) for row in rows])
    lengths = [row[0][0].shape[2] for row in rows]
    return CacheRows(cache, torch.tensor([[0] * (width - n) + [1] * n for n in lengths]))


def _same(rows: CacheRows, expected: CacheRows) -> bool:
    return torch.equal(rows.mask, expected.mask) and all(
        torch.equal(layer.keys, want.keys) and torch.equal(layer.values, want.values)
        for layer, want in zip(rows.cache.layers, expected.cache.layers, strict=True))


def test_pad_left_puts_zeros_before_the_positions_of_a_cache_tensor_or_a_mask() -> None:
    keys = _row(2, 1)[0][0]
    assert torch.equal(pad_left(keys, 5), _zeros_then(keys, 5))
    assert torch.equal(pad_left(torch.tensor([[1, 1], [0, 1]]), 4), torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]]))
    assert pad_left(keys, 2) is keys


def test_stacked_rows_are_each_prefix_left_padded_to_the_longest() -> None:
    first, last = _row(3, 1), _row(5, 2)
    stacked = CacheRows.stacked(_cache(), [first, [], last], "cpu")  # the middle row has no cached prefix
    nothing = [(torch.zeros(1, HEADS, 0, HEAD_SIZE), torch.zeros(1, HEADS, 0, HEAD_SIZE))] * 2
    assert _same(stacked, _batch([first, nothing, last], 5))
    assert stacked.mask.tolist() == [[0, 0, 1, 1, 1], [0] * 5, [1] * 5]
    # A lone row is the prefix cache's own tensors (never written into); rows with no prefix leave the cache empty.
    assert CacheRows.stacked(_cache(), [first], "cpu").cache.layers[1].keys is first[1][0]
    empty = CacheRows.stacked(_cache(), [[], []], "cpu")
    assert empty.mask.shape == (2, 0) and not empty.cache.layers[0].is_initialized


def test_extend_adds_rows_after_the_batchs_both_padded_to_the_wider() -> None:
    short, longer, longest = _row(2, 1), _row(3, 2), _row(5, 3)
    batch = _batch([short, longer], 3)
    batch.extend(_batch([longest], 5))
    assert _same(batch, _batch([short, longer, longest], 5))
    batch = _batch([longest], 5)
    batch.extend(_batch([short, longer], 3))
    assert _same(batch, _batch([longest, short, longer], 5))


def test_take_keeps_the_rows_asked_for_in_that_order_padding_and_all() -> None:
    rows = [_row(2, 1), _row(5, 2), _row(3, 3)]
    batch = _batch(rows, 5)
    batch.take([2, 0])
    assert _same(batch, _batch([rows[2], rows[0]], 5))


def test_leave_drops_rows_then_the_padding_every_remaining_row_has() -> None:
    rows = [_row(2, 1), _row(4, 2), _row(3, 3)]
    batch = _batch(rows, 6)
    batch.leave([1])
    assert _same(batch, _batch([rows[0], rows[2]], 3))
    batch.leave([1])
    assert _same(batch, _batch([rows[0]], 2)) and batch.cached_tokens == 2


def test_pack_moves_each_rows_real_positions_in_order_to_its_end() -> None:
    # A joint prefill's layout: each row's cached prefix left-padded to 3, then its new tokens left-padded to 4; the
    # forward leaves values at the padding positions too (none 0 here).
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 1]])
    whole = [_row(7, 1), _row(7, 2)]
    rows = _batch(whole, 7)
    rows.mask = mask
    rows.pack()
    real = [[(keys[..., positions, :], values[..., positions, :]) for keys, values in row]
            for row, positions in zip(whole, (mask[0].nonzero().flatten(), mask[1].nonzero().flatten()), strict=True)]
    assert _same(rows, _batch(real, 6))
    # A row's real positions for the prefix cache: copies, not views of the batch's tensors.
    kept = rows.row(1, 4)
    assert torch.equal(kept[0][0], real[1][0][0]) and torch.equal(kept[1][1], real[1][1][1])
    batch_storage = {tensor.untyped_storage().data_ptr() for layer in rows.cache.layers
                     for tensor in (layer.keys, layer.values)}
    assert not batch_storage & {tensor.untyped_storage().data_ptr() for pair in kept for tensor in pair}
    lone = _batch([real[0]], 6)
    assert lone.row(0, 6)[0][0] is lone.cache.layers[0].keys  # one row, no padding: its own tensors


def test_grow_gives_each_row_its_next_position_and_the_new_slot() -> None:
    batch = _batch([_row(2, 1), _row(3, 2)], 3)
    positions, cache_position = batch.grow()
    assert positions.tolist() == [[2], [3]] and cache_position.tolist() == [3]
    assert batch.mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]


# --- the scheduler on the real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    return load_language_model(str(default_model_dir()), torch.float32, "cpu")


def _run(produce: Any) -> tuple[str, int]:
    result = GenerationResult()
    return "".join(produce(result)), result.completion_tokens


@slow
def test_a_model_whose_generation_config_asks_for_more_than_top_k_and_top_p_is_not_batched(
        lm: LanguageModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # generate would apply a repetition penalty (greedy too) that the scheduler does not: one job at a time.
    assert supports_batching(lm)
    monkeypatch.setattr(lm.model.generation_config, "repetition_penalty", 1.2)
    assert not supports_batching(lm)


@slow
def test_scheduler_never_decodes_more_than_its_slots_and_lets_go_of_the_cache(lm: LanguageModel) -> None:
    assert supports_batching(lm)
    batcher = BatchedGenerator(lm, max_batch=2, prefill_together=False)
    params = SamplingParams(max_tokens=24, temperature=0)
    alone = [_run(lambda r, q=q: stream_generate(lm, question_ids(lm, q), params, (), threading.Event(), r))
             for q in QUESTIONS]
    together: list[tuple[str, int] | None] = [None] * len(QUESTIONS)

    def go(i: int) -> None:
        together[i] = _run(lambda r: batcher.stream(question_ids(lm, QUESTIONS[i]), params, (), threading.Event(), r))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(QUESTIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert together == alone
    # Six requests in flight, two slots: never more than two decoded at once, and once all are done the
    # scheduler holds no KV cache (nothing grows with the number of jobs served).
    assert batcher.peak_batch == 2
    assert batcher.cached_tokens == 0


@slow
def test_a_capped_reply_finishes_its_list_item_past_the_cap_alone_and_in_the_batch(lm: LanguageModel) -> None:
    # Greedy, SmolLM2 answers with a numbered list whose second title the 60th token cuts ("The Nightingale: A Novel
    # of the Night"); allowed 20 more tokens, it stops at that item's line end (71 tokens, float32).
    ids = question_ids(lm, "Recommend three books to read.")
    plain = _run(lambda r: stream_generate(lm, ids, SamplingParams(max_tokens=60, temperature=0), (),
                                           threading.Event(), r))
    capped = SamplingParams(max_tokens=80, temperature=0, sentence_end_after=60)
    alone = _run(lambda r: stream_generate(lm, ids, capped, (), threading.Event(), r))
    batcher = BatchedGenerator(lm, max_batch=2, prefill_together=False)
    together = _run(lambda r: batcher.stream(ids, capped, (), threading.Event(), r))
    assert plain[1] == 60 and not ends_sentence(plain[0]), plain
    assert alone[0].startswith(plain[0]) and ends_sentence(alone[0]) and 60 < alone[1] < 80, alone
    assert together == alone


@slow
def test_each_request_keeps_its_own_seed_stops_and_sampling(lm: LanguageModel) -> None:
    batcher = BatchedGenerator(lm, max_batch=4, prefill_together=False)
    sampled = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=7)
    greedy = SamplingParams(max_tokens=40, temperature=0)
    stops = ("5",)

    def seeded(r: GenerationResult) -> Iterator[str]:
        return batcher.stream(question_ids(lm, "My favourite food is"), sampled, (), threading.Event(), r)

    def counting(r: GenerationResult) -> Iterator[str]:
        return batcher.stream(question_ids(lm, "Count from 1 to 20."), greedy, stops, threading.Event(), r)

    lone_seeded, lone_counting = _run(seeded), _run(counting)
    results: dict[str, tuple[str, int]] = {}
    threads = [threading.Thread(target=lambda n=n, f=f: results.__setitem__(n, _run(f)))
               for n, f in (("seeded", seeded), ("counting", counting), ("other", seeded))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results["seeded"] == results["other"] == lone_seeded
    assert results["counting"] == lone_counting
    # The stop string ended that request early (the handler trims the text at it), not its max_tokens.
    assert "5" in lone_counting[0] and lone_counting[1] < greedy.max_tokens


@slow
def test_cancelling_a_request_frees_its_slot_at_once(lm: LanguageModel) -> None:
    batcher = BatchedGenerator(lm, max_batch=1)
    cancel = threading.Event()
    result = GenerationResult()
    stream = batcher.stream(question_ids(lm, LONG[0]["content"]), SamplingParams(max_tokens=LONG_ANSWER, temperature=0),
                            (), cancel, result)
    next(stream)
    stream.close()  # the consumer left: the request leaves the batch at the next token
    answer = _run(lambda r: batcher.stream(question_ids(lm, "Tell me a joke."),
                                           SamplingParams(max_tokens=5, temperature=0), (), threading.Event(), r))
    # One slot: had the left request stayed, the answer would have waited for it to write all LONG_ANSWER tokens.
    assert answer[1] == 5 and result.completion_tokens < LONG_ANSWER and batcher.cached_tokens == 0


@slow
def test_a_request_that_ends_at_its_first_token_still_ends(lm: LanguageModel) -> None:
    batcher = BatchedGenerator(lm, max_batch=2)
    one = SamplingParams(max_tokens=1, temperature=0)
    alone = _run(lambda r: stream_generate(lm, question_ids(lm, "Tell me a joke."), one, (), threading.Event(), r))
    assert _run(lambda r: batcher.stream(question_ids(lm, "Tell me a joke."), one, (), threading.Event(), r)) == alone
    assert alone[1] == 1 and batcher.cached_tokens == 0


@slow
def test_close_lets_the_running_request_finish_then_stops_the_scheduler_thread(lm: LanguageModel) -> None:
    # A daemon thread left inside torch at interpreter exit aborts the process (SIGABRT, "terminate called without
    # an active exception"); close(), also run at exit, ends the thread first.
    batcher = BatchedGenerator(lm, max_batch=2)
    params = SamplingParams(max_tokens=8, temperature=0)
    stream = batcher.stream(question_ids(lm, "Tell me a joke."), params, (), threading.Event(), GenerationResult())
    first = next(stream)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    rest = "".join(stream)  # the request in the batch is served to its end
    closer.join(timeout=60)
    assert not batcher.running
    alone = _run(lambda r: stream_generate(lm, question_ids(lm, "Tell me a joke."), params, (), threading.Event(), r))
    assert (first + rest, 8) == (alone[0], alone[1])
    with pytest.raises(RuntimeError, match="closed"):
        next(batcher.stream(question_ids(lm, "Hello"), params, (), threading.Event(), GenerationResult()))


@slow
def test_a_prompt_that_starts_like_an_earlier_one_prefills_only_what_is_new_and_streams_the_same(
        lm: LanguageModel) -> None:
    batcher = BatchedGenerator(lm, max_batch=2, prefix_cache_tokens=4096)
    params = SamplingParams(max_tokens=24, temperature=0)
    history = [{"role": "user", "content": "What is the capital of Spain?"},
               {"role": "assistant", "content": "The capital of Spain is Madrid."}]
    turns = [history[:1], [*history, {"role": "user", "content": "And of France?"}],
             [{"role": "user", "content": "How do I make tea?"}], history[:1]]

    def prompt(messages: list[dict[str, str]]) -> torch.Tensor:
        built = chat_prompt(lm.tokenizer, messages)
        return token_ids(lm.tokenizer, built)

    for messages in turns:
        reused_before = batcher.prefixes.reused_tokens
        cached = _run(lambda r, m=messages: batcher.stream(prompt(m), params, (), threading.Event(), r))
        alone = _run(lambda r, m=messages: stream_generate(lm, prompt(m), params, (), threading.Event(), r))
        assert cached == alone  # float32: the same tokens as a full prefill in generate
        if messages is not turns[0]:
            # The second turn repeats the first (and the system prompt); the third shares the system prompt; the
            # last is the first again, all but its last token cached.
            assert batcher.prefixes.reused_tokens - reused_before >= 10
    assert batcher.prefixes.hits == 3
    assert batcher.prefixes.reused_tokens - reused_before == prompt(turns[0]).shape[1] - 1
    assert 0 < batcher.prefixes.cached_tokens <= 4096


@slow
def test_the_prefix_cache_keeps_to_its_budget_and_0_turns_it_off(lm: LanguageModel) -> None:
    budget = int(question_ids(lm, QUESTIONS[0]).shape[1] * 2.5)  # room for two prompts of this size, not three
    batcher = BatchedGenerator(lm, max_batch=2, prefix_cache_tokens=budget)
    off = BatchedGenerator(lm, max_batch=2)
    one = SamplingParams(max_tokens=1, temperature=0)
    for question in QUESTIONS[:4]:
        for generator in (batcher, off):
            _run(lambda r, g=generator, q=question: g.stream(question_ids(lm, q), one, (), threading.Event(), r))
        assert batcher.prefixes.cached_tokens <= budget
    assert len(batcher.prefixes._entries) == 2 and batcher.prefixes.hits == 3
    assert off.prefixes.cached_tokens == 0 and off.prefixes.hits == 0


@slow
def test_requests_that_join_together_prefill_in_one_forward_as_each_would_alone(lm: LanguageModel) -> None:
    # Rows of different lengths, one with a cached prefix (the system prompt and more) beside ones without:
    # each row's last logits and the keys and values kept for it are what a lone prefill computes, up to the
    # rounding that padding changes.
    batcher = BatchedGenerator(lm, max_batch=4, prefix_cache_tokens=4096)
    params = SamplingParams(max_tokens=4, temperature=0)
    _run(lambda r: batcher.stream(question_ids(lm, "What is the capital of Spain?"), params, (), threading.Event(), r))
    prompts = [question_ids(lm, p) for p in
               ("What is the capital of Spain? Answer briefly.", "Why is the sky blue?", "Tell me a joke.")]
    batcher.prefixes.max_tokens = 0  # keep what is cached now; do not store the rows below
    hits = batcher.prefixes.hits
    with torch.inference_mode():
        rows, logits = prefill(lm, prompts, batcher.prefixes)
    assert logits.shape[0] == 3 and batcher.prefixes.hits - hits >= 1  # the first row reused its cached prefix
    for row, ids in enumerate(prompts):
        with torch.inference_mode():
            alone, alone_logits = prefill(lm, [ids], PrefixCache(0))
        assert int(alone_logits.argmax()) == int(logits[row].argmax())
        torch.testing.assert_close(logits[row : row + 1], alone_logits, atol=1e-3, rtol=1e-3)
        real = rows.mask[row].bool()
        assert int(real.sum()) == ids.shape[1]
        assert real[-ids.shape[1]:].all()  # left padding only, none between prefix and new part
        for layer, alone_layer in zip(rows.cache.layers, alone.cache.layers, strict=True):
            torch.testing.assert_close(layer.keys[row : row + 1, :, real, :], alone_layer.keys, atol=1e-3,
                                       rtol=1e-3)


class _Watcher(Observer):
    """Records the scheduler's prefills (``"prefill N"``: N requests together) and decode steps (``"step N"``: N
    requests in the batch); the first of them named by ``hold`` (``"prefill"`` or ``"step"``) waits there until
    :attr:`release` is set (:attr:`held` says it is waiting), so that requests queued meanwhile join together."""

    def __init__(self, hold: str):
        self.hold = hold
        self.events: list[str] = []
        self.held, self.release = threading.Event(), threading.Event()

    @property
    def prefills(self) -> list[int]:
        return [int(event.split()[1]) for event in self.events if event.startswith("prefill")]

    def prefilling(self, requests: int) -> None:
        self._saw("prefill", requests)

    def stepping(self, requests: int) -> None:
        self._saw("step", requests)

    def _saw(self, what: str, requests: int) -> None:
        self.events.append(f"{what} {requests}")
        if what == self.hold and not self.held.is_set():
            self.held.set()
            assert self.release.wait(60)


def _when_queued(batcher: BatchedGenerator, count: int) -> None:
    deadline = time.monotonic() + 60
    while batcher.waiting < count and time.monotonic() < deadline:
        time.sleep(0.01)


def _join_together(batcher: BatchedGenerator, watcher: _Watcher, long_prompt: torch.Tensor,
                   prompts: list[torch.Tensor], params: list[SamplingParams]) -> list[tuple[str, int]]:
    """Run ``long_prompt``, then ``prompts`` queued while ``watcher`` holds its first step, so they join at one
    step."""
    results: dict[int, tuple[str, int]] = {}

    def ask(i: int, ids: torch.Tensor, p: SamplingParams) -> None:
        results[i] = _run(lambda r: batcher.stream(ids, p, (), threading.Event(), r))

    threads = [threading.Thread(target=ask, args=(-1, long_prompt, SamplingParams(max_tokens=40, temperature=0)))]
    threads[0].start()
    assert watcher.held.wait(60)
    threads += [threading.Thread(target=ask, args=(i, ids, p)) for i, (ids, p) in enumerate(zip(prompts, params,
                                                                                                 strict=True))]
    for thread in threads[1:]:
        thread.start()
    _when_queued(batcher, len(prompts))
    watcher.release.set()
    for thread in threads:
        thread.join(timeout=300)
    assert results[-1][1] == 40  # the long request ran on beside them
    return [results[i] for i in range(len(prompts))]


@slow
@pytest.mark.parametrize("prefix_cache_tokens", [4096, 0])
def test_streams_that_joined_together_run_to_their_own_ends(lm: LanguageModel, prefix_cache_tokens: int) -> None:
    watcher = _Watcher(hold="step")
    batcher = BatchedGenerator(lm, max_batch=5, prefix_cache_tokens=prefix_cache_tokens, observer=watcher)
    # Chat prompts (with the cached system prompt, when the cache is on), a bare prompt sharing nothing cached,
    # and one that ends at its first token while the others go on.
    prompts = [question_ids(lm, QUESTIONS[0]), question_ids(lm, QUESTIONS[1]),
               lm.tokenizer("The three primary colours are", return_tensors="pt").input_ids,
               question_ids(lm, QUESTIONS[2])]
    params = [SamplingParams(max_tokens=16, temperature=0)] * 3 + [SamplingParams(max_tokens=1, temperature=0)]
    together = _join_together(batcher, watcher, question_ids(lm, LONG[0]["content"]), prompts, params)
    assert watcher.prefills == [1, 4], watcher.events  # the long request alone, then the four in one forward
    for ids, p, result in zip(prompts, params, together, strict=True):
        alone = _run(lambda r, ids=ids, p=p: stream_generate(lm, ids, p, (), threading.Event(), r))
        # float32: the padded prefill rounds a little differently (see the test above), not enough to change a
        # greedy token of these prompts.
        assert result == alone
    assert together[3][1] == 1
    assert batcher.peak_batch == 4 and batcher.cached_tokens == 0  # the one that ended at once never took a slot


@slow
def test_requests_that_arrive_during_a_prefill_join_before_the_next_step(lm: LanguageModel) -> None:
    # A burst reaches the worker a few ms apart: the first request's prefill is under way when the others come.
    # They are prefilled before the batch steps, instead of waiting a step of the first one alone. Each prefills
    # alone here, so the streams are exactly the lone ones in float32 (a joint prefill's rounding could flip a
    # near-tied token on another CPU).
    watcher = _Watcher(hold="prefill")
    batcher = BatchedGenerator(lm, max_batch=4, prefill_together=False, observer=watcher)
    params = SamplingParams(max_tokens=12, temperature=0)
    results: dict[int, tuple[str, int]] = {}

    def ask(i: int) -> None:
        results[i] = _run(lambda r: batcher.stream(question_ids(lm, QUESTIONS[i]), params, (), threading.Event(), r))

    threads = [threading.Thread(target=ask, args=(0,))]
    threads[0].start()
    assert watcher.held.wait(60)
    threads += [threading.Thread(target=ask, args=(i,)) for i in (1, 2, 3)]
    for thread in threads[1:]:
        thread.start()
    _when_queued(batcher, 3)
    watcher.release.set()
    for thread in threads:
        thread.join(timeout=300)
    assert watcher.events[:5] == ["prefill 1"] * 4 + ["step 4"], watcher.events[:6]
    assert batcher.peak_batch == 4
    for i in range(4):
        assert results[i][1] == 12
        alone = _run(lambda r, i=i: stream_generate(lm, question_ids(lm, QUESTIONS[i]), params, (), threading.Event(),
                                                    r))
        assert results[i] == alone


def _staggered(asks: list[Any]) -> list[tuple[str, int]]:
    """Run each of ``asks`` (a callable giving ``_run``'s result) on its own thread, started 30 ms apart so that they
    join a batch at different steps, beside rows of other lengths; their results in order."""
    results: dict[int, tuple[str, int]] = {}
    threads = [threading.Thread(target=lambda i=i, ask=ask: results.__setitem__(i, ask()))
               for i, ask in enumerate(asks)]
    for thread in threads:
        thread.start()
        time.sleep(0.03)
    for thread in threads:
        thread.join(timeout=300)
    return [results[i] for i in range(len(asks))]


@pytest.fixture(scope="module")
def invariant_lm() -> LanguageModel:
    # bfloat16, the CPU default: without BATCH_INVARIANT, 5-6 of 12 greedy streams stay what they are alone
    # (benchmarks/results/batch_exactness.md).
    lm = load_language_model(str(default_model_dir()), torch.bfloat16, "cpu")
    make_batch_invariant(lm.model)
    return lm


@slow
@pytest.mark.parametrize("prefill_together", [True, False])
def test_batch_invariant_bfloat16_streams_are_bit_for_bit_each_request_alone(invariant_lm: LanguageModel,
                                                                              prefill_together: bool) -> None:
    lm = invariant_lm
    prompts = [*QUESTIONS, "Write a long story about a dragon in Rome.", "Describe a cat."]
    params = SamplingParams(max_tokens=32, temperature=0)

    def answer(batcher: BatchedGenerator, question: str) -> tuple[str, int]:
        return _run(lambda r: batcher.stream(question_ids(lm, question), params, (), threading.Event(), r))

    # Prefix cache on, as deployed: after the first prompt, each prefills after the cached system prompt.
    lone = BatchedGenerator(lm, 1, prefix_cache_tokens=4096, prefill_together=prefill_together)
    alone = [answer(lone, q) for q in prompts]
    lone.close()
    # The MAX_CONCURRENCY=1 path (transformers' generate, one row) writes the same: for the first prompt only, the
    # one the lone scheduler prefilled whole as generate does (the others found the chat template cached).
    first = question_ids(lm, prompts[0])
    assert _run(lambda r: stream_generate(lm, first, params, (), threading.Event(), r)) == alone[0]
    batcher = BatchedGenerator(lm, 8, prefix_cache_tokens=4096, prefill_together=prefill_together)
    together = _staggered([lambda q=q: answer(batcher, q) for q in prompts])
    batcher.close()
    assert batcher.peak_batch >= 4
    assert together == alone


@slow
def test_batch_invariant_bfloat16_seeded_sampling_repeats_itself_beside_others(invariant_lm: LanguageModel) -> None:
    # Each request's logits are what they are alone and it draws from its own generator: the same samples. Without
    # BATCH_INVARIANT 2 of these 6 were (checked). No prefix cache, so that every run prefills each prompt whole (the
    # cache's chunks round differently: README).
    lm = invariant_lm
    questions = ["What is the capital of Spain?", "Why is the sky blue?", "Name three colours.",
                 "Give me a recipe for soup.", "Tell me a joke.", "Describe a cat."]

    def answer(batcher: BatchedGenerator, i: int) -> tuple[str, int]:
        params = SamplingParams(max_tokens=48, temperature=1.0, top_p=0.9, seed=i)
        return _run(lambda r: batcher.stream(question_ids(lm, questions[i]), params, (), threading.Event(), r))

    lone = BatchedGenerator(lm, 1)
    alone = [answer(lone, i) for i in range(len(questions))]
    lone.close()
    batcher = BatchedGenerator(lm, 8)
    together = _staggered([lambda i=i: answer(batcher, i) for i in range(len(questions))])
    batcher.close()
    assert batcher.peak_batch >= 4
    assert together == alone


@slow
def test_a_process_that_exits_with_requests_in_the_batch_ends_cleanly() -> None:
    # Before close() ran at exit, the scheduler thread could be inside torch at finalization: SIGABRT ("terminate
    # called without an active exception") in about one run of `python -m workers.llm` in two.
    script = """
import threading, torch
from workers.llm.bake import default_model_dir
from workers.llm.batching import BatchedGenerator
from workers.llm.generation import GenerationResult, SamplingParams, load_language_model
lm = load_language_model(str(default_model_dir()), torch.bfloat16, "cpu")
batcher = BatchedGenerator(lm, max_batch=2)
ids = lm.tokenizer("Once upon a time", return_tensors="pt").input_ids
streams = [batcher.stream(ids, SamplingParams(max_tokens=400, temperature=0), (), threading.Event(),
                          GenerationResult()) for _ in range(2)]
print(next(streams[0]), flush=True)
"""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip()
