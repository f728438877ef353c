"""Batched decoding: one scheduler thread owns the model and steps every active request together, a token at a time.

Requests join and leave at token boundaries (continuous batching); those that arrive while others prefill join
before the next decode step. The requests that join at one step are prefilled together in one padded forward (or
each alone, its own ``DynamicCache``, exactly what a lone ``generate`` computes, with ``prefill_together=False``),
starting from the longest cached prefix of each prompt (:mod:`workers.llm.prefix_cache`); then their caches are
left-padded into the batch's. Each step feeds one token per request with an attention mask that hides the padding
and each row's own position ids. A request that ends (EOS, ``max_tokens``, a stop string, a sentence's end past its
``sentence_end_after``, cancel) leaves the batch at the next step, and the padding no remaining row needs is cut off.

Why not transformers' own ``ContinuousBatchingManager`` (``model.init_continuous_batching``, transformers 5.23):
it streams per request and cancels one, but ``do_sample`` and the seed belong to the manager (no greedy request
beside a sampled one, no per-request seed), it knows no stop strings, and on this CPU it took 75 s for three
20-token requests that ``generate`` answers in about 1 s each (its paged-attention path is built for GPUs).

Exactness: in float32, each request prefilled alone, a batched greedy stream is token for token the lone request's
(tested). Padding changes rounding: in bfloat16 (the CPU default) a row padded beside a longer prompt is rounded
differently from the same request alone (its SDPA call gets a mask and other keys), and so is a joint prefill's row
in float32, and a lone row's linear layers run a one-row kernel that rounds differently from a batch's; so a
near-tied token can flip, depending on what else is in the batch. ``BATCH_INVARIANT`` (the worker's default on a
CPU; :mod:`workers.llm.invariance`) makes every row's forward the lone request's, bit for bit (tested in bfloat16),
from the same prefix-cache state: a prompt prefilled in other chunks (cached whole, against its first run) rounds
differently in bfloat16 too, batch or not.

Each request keeps its own sampling (temperature, top_p, its own ``torch.Generator`` for its seed:
:mod:`workers.llm.sampling`), stop strings, ``max_tokens`` and cancel event; its text goes out through its own
``TextIteratorStreamer``, as ``generate`` would stream it. Only full-attention ``DynamicLayer`` caches are merged
this way (:func:`supports_batching`); a model with sliding-window or other cache layers is served one job at a time,
as before.

This module is the intake and the lifecycle of requests; the batch's KV cache and mask are
:class:`~workers.llm.cache_rows.CacheRows`, the admission's forward :func:`workers.llm.prefill.prefill`, and a
request's token choice :class:`workers.llm.sampling.Sampler`.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, TextIteratorStreamer
from transformers.cache_utils import DynamicLayer

from .cache_rows import CacheRows
from .generation import COALESCE_S, GenerationResult, LanguageModel, SamplingParams, coalesced, tail_has_stop
from .prefill import prefill
from .prefix_cache import PrefixCache
from .sampling import Sampler
from .stops import sentence_ended

log = logging.getLogger("voicepod.llm")


@dataclass
class _Request:
    prompt_ids: torch.Tensor
    params: SamplingParams
    stops: tuple[str, ...]
    cancel: threading.Event
    result: GenerationResult
    streamer: TextIteratorStreamer
    sampler: Sampler
    tokens: list[int] = field(default_factory=list)
    next_token: int = 0
    failure: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


class Observer:
    """Told what the scheduler does as it does it, on the scheduler's thread (tests watch the scheduler this way; a
    method that blocks holds the scheduler there). This base class ignores everything."""

    def prefilling(self, requests: int) -> None:
        """``requests`` requests are about to be prefilled together (1: one alone)."""

    def stepping(self, requests: int) -> None:
        """A decode step for the ``requests`` in the batch is about to run."""


# Settings of a model's own generation_config that generate applies and this scheduler does not: a model that sets
# one is served one job at a time, so its streams stay what generate makes.
_UNBATCHED_SETTINGS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0,
                       "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None,
                       "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                       "sequence_bias": None}


def supports_batching(lm: LanguageModel) -> bool:
    """Whether ``lm``'s cache is plain full attention in every layer (what this scheduler knows how to merge) and
    its generation_config asks for nothing beyond temperature, top-k and top-p (what it knows how to sample)."""
    config = lm.model.generation_config
    if any(getattr(config, name, neutral) not in (None, neutral) for name, neutral in _UNBATCHED_SETTINGS.items()):
        return False
    cache = DynamicCache(config=lm.model.config)
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


class BatchedGenerator:
    """Decode up to ``max_batch`` requests together on ``lm``; more wait for a free slot.

    :meth:`stream` is called from any number of threads; one daemon thread, started here, runs the model.
    :meth:`close` (also run at interpreter exit) ends that thread once the batch it runs has ended. ``observer`` is
    told of each prefill and decode step (:class:`Observer`).
    """

    def __init__(self, lm: LanguageModel, max_batch: int, prefix_cache_tokens: int = 0,
                 prefill_together: bool = True, observer: Observer | None = None):
        self.lm = lm
        self.max_batch = max(1, max_batch)
        # Requests that join at the same step are prefilled in one padded forward (on 2 CPU cores seven 9-token
        # prefills cost 55 ms together against 28 ms each alone); padding changes float rounding, so a stream is
        # token for token the lone request's only when each prefills alone (in float32) or with BATCH_INVARIANT.
        self.prefill_together = prefill_together
        self.prefixes = PrefixCache(prefix_cache_tokens)
        self.observer = observer or Observer()
        eos = lm.model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._waiting: queue.Queue[_Request | None] = queue.Queue()  # None: close() was called
        self._active: list[_Request] = []
        self._rows: CacheRows | None = None  # the active requests' cache, a row each in their order
        self.peak_batch = 0  # the most requests ever decoded together (tests check it never passes max_batch)
        self._closing = False
        self._closing_lock = threading.Lock()
        self._closed_seen = False  # the scheduler has taken close()'s None: it admits nothing more
        self._thread = threading.Thread(target=self._run, name="voicepod-batcher", daemon=True)
        self._thread.start()
        # A daemon thread still inside torch when the interpreter finalizes (freeing the last request's cache just
        # after its stream ended, say) is killed there, and the C++ runtime aborts the process ("terminate called
        # without an active exception"): `python -m workers.llm` ended with SIGABRT about one run in two.
        atexit.register(self._close_at_exit)

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Let the requests in the batch and those already waiting end, then stop the scheduler thread.

        Idempotent. A :meth:`stream` started after this raises ``RuntimeError``.
        """
        with self._closing_lock:  # nothing is queued behind close()'s None
            if not self._closing:
                self._closing = True
                self._waiting.put(None)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            atexit.unregister(self._close_at_exit)

    def _close_at_exit(self) -> None:
        # Nobody reads the streams any more: end them at the next token instead of decoding them to max_tokens.
        with self._waiting.mutex:
            waiting = [request for request in self._waiting.queue if request is not None]
        for request in [*self._active, *waiting]:
            request.cancel.set()
        self.close()

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is alive (False after :meth:`close`)."""
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now, not yet taken by the scheduler."""
        with self._waiting.mutex:
            return sum(request is not None for request in self._waiting.queue)

    @property
    def cached_tokens(self) -> int:
        """Positions held in the batch's KV cache now, padding included (0 when idle)."""
        return 0 if self._rows is None else self._rows.cached_tokens

    def stream(
        self,
        prompt_ids: torch.Tensor,
        params: SamplingParams,
        stops: Sequence[str],
        cancel: threading.Event,
        result: GenerationResult,
    ) -> Iterator[str]:
        """Like :func:`workers.llm.generation.stream_generate`, decoded in the shared batch. Blocking."""
        streamer = TextIteratorStreamer(self.lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        streamer.next_tokens_are_prompt = False  # only new tokens are ever put
        request = _Request(prompt_ids=prompt_ids.to(self.lm.device), params=params, stops=tuple(stops),
                           cancel=cancel, result=result, streamer=streamer,
                           sampler=Sampler(params, self.lm.model.generation_config, self.lm.device))
        with self._closing_lock:
            if self._closing:
                raise RuntimeError("the batched generator is closed")
            self._waiting.put(request)
        try:
            yield from coalesced(request.streamer, COALESCE_S)
        finally:
            # Reached on the normal end and when the consumer stops early: the request leaves the batch at the
            # next token boundary, and nothing of it is left in the scheduler when this returns.
            cancel.set()
            request.finished.wait()
        if request.failure is not None:
            raise request.failure

    # ------------------------------------------------------------------ the scheduler thread

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopped:
                taken: list[_Request] = []
                try:
                    self._cycle(taken)
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory merging caches: fail the batch, go on
                    # A failed decode step or merge leaves the batch's cache unusable: its requests fail, and so do
                    # those taken from the queue this cycle and not yet in it (they would wait for ever).
                    log.exception("batched decoding failed")
                    self._fail([*self._active, *taken], exc)
                    self._active, self._rows = [], None
        # A request queued behind close()'s None (it raced the check in stream) is failed, not left waiting.
        late = []
        while True:
            try:
                late.append(self._waiting.get_nowait())
            except queue.Empty:
                break
        self._fail([request for request in late if request is not None],
                   RuntimeError("the batched generator is closed"))

    @property
    def _stopped(self) -> bool:
        # close() queued None behind the requests already waiting: stop when it has been taken and all are done.
        return self._closed_seen and not self._active

    def _collect(self, joining: list[_Request], request: _Request | None) -> None:
        if request is None:
            self._closed_seen = True
        elif request.cancel.is_set():
            self._finish(request)
        else:
            joining.append(request)

    def _cycle(self, taken: list[_Request]) -> None:
        """One cycle of the scheduler: admit the waiting requests (prefilled), then one decode step for all.
        ``taken`` gets the requests it takes from the queue."""
        joining: list[_Request] = []
        if not self._active:
            self._collect(joining, self._waiting.get())
        # Requests that arrive while others prefill join before the next step, not after it: calls that start
        # together reach the worker a few ms apart, and stepping the first one alone made the rest wait a whole
        # step more for their first token. A step comes after at most max_batch admissions (the active streams wait
        # that long for their next token: a burst's prefills, once).
        for _ in range(self.max_batch):
            self._collect_waiting(joining)
            if not joining:
                break
            taken.extend(joining)
            self._admit(joining)
            joining = []
        if self._active:
            self.observer.stepping(len(self._active))
            self._step()

    def _collect_waiting(self, joining: list[_Request]) -> None:
        """Move waiting requests into ``joining``, without blocking, while the batch has room."""
        while len(self._active) + len(joining) < self.max_batch and not self._closed_seen:
            try:
                self._collect(joining, self._waiting.get_nowait())
            except queue.Empty:
                return

    def _admit(self, joining: list[_Request]) -> None:
        """Prefill the ``joining`` requests (each from the longest cached prefix of its prompt), emit their first
        tokens, and merge the ones that go on into the batch."""
        if len(joining) > 1 and not self.prefill_together:
            for request in joining:
                self._admit([request])
            return
        self.observer.prefilling(len(joining))
        try:
            rows, logits = prefill(self.lm, [request.prompt_ids for request in joining], self.prefixes)
        except Exception as exc:  # noqa: BLE001 - prefilled one by one, only the request that fails alone fails
            if len(joining) > 1:
                log.exception("prefilling %d requests together failed; prefilling them one by one", len(joining))
                for request in joining:
                    self._admit([request])
                return
            log.exception("prefill failed")
            self._fail(joining, exc)
            return
        going_on = []
        for row, request in enumerate(joining):
            request.result.batch_max = max(request.result.batch_max, len(joining))
            if self._advance(request, logits[row : row + 1]):
                self._finish(request)
            else:
                going_on.append(row)
        if going_on:
            self._merge([joining[row] for row in going_on], rows, going_on)

    def _merge(self, requests: list[_Request], rows: CacheRows, kept: list[int]) -> None:
        """Add ``requests`` (``kept`` of the just-prefilled ``rows``) to the batch."""
        if len(kept) < len(rows):
            rows.take(kept)
        if self._rows is None:
            self._rows = rows
        else:
            self._rows.extend(rows)
        self._active.extend(requests)
        self.peak_batch = max(self.peak_batch, len(self._active))

    def _step(self) -> None:
        """One token for every active request, then drop the ones that ended."""
        assert self._rows is not None
        ended = [row for row, request in enumerate(self._active) if request.cancel.is_set()]
        if len(ended) < len(self._active):
            positions, cache_position = self._rows.grow()
            ids = torch.tensor([[request.next_token] for request in self._active], device=self.lm.device)
            out = self.lm.model(input_ids=ids, attention_mask=self._rows.mask, position_ids=positions,
                                past_key_values=self._rows.cache, use_cache=True, cache_position=cache_position)
            decoding = len(self._active) - len(ended)
            for row, request in enumerate(self._active):
                if row in ended:
                    continue
                request.result.batch_max = max(request.result.batch_max, decoding)
                if self._advance(request, out.logits[row : row + 1, -1, :]):
                    ended.append(row)
        if ended:
            self._leave(sorted(ended))

    def _leave(self, rows: list[int]) -> None:
        """The requests at ``rows`` leave the batch, then end: a caller that sees its stream end finds the cache let
        go."""
        assert self._rows is not None
        leaving = [self._active[row] for row in rows]
        self._active = [request for row, request in enumerate(self._active) if row not in rows]
        if self._active:
            self._rows.leave(rows)
        else:
            self._rows = None
        for request in leaving:
            self._finish(request)

    def _advance(self, request: _Request, logits: torch.Tensor) -> bool:
        """Choose ``request``'s next token from its ``logits`` (``[1, vocab]``) and hand it to its stream; True when
        the request has ended, with that token or by failing to choose one (its own failure, recorded)."""
        try:
            return self._emit(request, request.sampler.choose(logits, request.prompt_ids))
        except Exception as exc:  # noqa: BLE001 - one request's sampling failure is its own
            request.failure = exc
            return True

    def _emit(self, request: _Request, token: int) -> bool:
        """Hand ``token`` to the request's stream; True when the request has ended with it."""
        if not request.tokens:
            request.result.first_token_at = time.perf_counter()
        request.tokens.append(token)
        request.next_token = token
        request.streamer.put(torch.tensor([token]))
        if token in self._eos:
            request.result.ended_on_eos = True
            return True
        if len(request.tokens) >= request.params.max_tokens or request.cancel.is_set():
            return True
        return (tail_has_stop(self.lm.tokenizer, request.tokens, request.stops)
                or sentence_ended(self.lm.tokenizer, request.tokens, request.params.sentence_end_after))

    def _fail(self, requests: list[_Request], exc: BaseException) -> None:
        """End each of ``requests`` not yet ended with ``exc``, which its :meth:`stream` raises."""
        for request in requests:
            if not request.finished.is_set():
                request.failure = exc
                self._finish(request)

    def _finish(self, request: _Request) -> None:
        request.result.completion_tokens = len(request.tokens)
        request.streamer.end()
        request.finished.set()
