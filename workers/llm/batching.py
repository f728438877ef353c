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

Each request keeps its own sampling (temperature, top_p, its own ``torch.Generator`` for its seed), stop strings,
``max_tokens`` and cancel event; its text goes out through its own ``TextIteratorStreamer``, as ``generate`` would
stream it. Only full-attention ``DynamicLayer`` caches are merged this way (:func:`supports_batching`); a model with
sliding-window or other cache layers is served one job at a time, as before.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TextIteratorStreamer,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer

from .generation import COALESCE_S, GenerationResult, LanguageModel, SamplingParams, coalesced, tail_has_stop
from .prefix_cache import PrefixCache
from .stops import sentence_ended

log = logging.getLogger("voicepod.llm")

# generate's default top_k when the model's generation_config leaves it unset (transformers'
# GenerationConfig._get_default_generation_params); kept so a batched sampled request draws from the same
# distribution a lone one does.
DEFAULT_TOP_K = 50


@dataclass
class _Request:
    prompt_ids: torch.Tensor
    params: SamplingParams
    stops: tuple[str, ...]
    cancel: threading.Event
    result: GenerationResult
    streamer: TextIteratorStreamer
    processors: LogitsProcessorList
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    next_token: int = 0
    failure: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


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
    :meth:`close` (also run at interpreter exit) ends that thread once the batch it runs has ended.
    """

    def __init__(self, lm: LanguageModel, max_batch: int, prefix_cache_tokens: int = 0,
                 prefill_together: bool = True):
        self.lm = lm
        self.max_batch = max(1, max_batch)
        # Requests that join at the same step are prefilled in one padded forward (on 2 CPU cores seven 9-token
        # prefills cost 55 ms together against 28 ms each alone); padding changes float rounding, so a stream is
        # token for token the lone request's only when each prefills alone (in float32) or with BATCH_INVARIANT.
        self.prefill_together = prefill_together
        self.prefixes = PrefixCache(prefix_cache_tokens)
        eos = lm.model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._waiting: queue.Queue[_Request | None] = queue.Queue()  # None: close() was called
        self._active: list[_Request] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [batch, cached length]: 1 real token, 0 left padding
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
    def cached_tokens(self) -> int:
        """Positions held in the batch's KV cache now, padding included (0 when idle)."""
        return 0 if self._mask is None else int(self._mask.numel())

    def stream(
        self,
        prompt_ids: torch.Tensor,
        params: SamplingParams,
        stops: Sequence[str],
        cancel: threading.Event,
        result: GenerationResult,
    ) -> Iterator[str]:
        """Like :func:`workers.llm.generation.stream_generate`, decoded in the shared batch. Blocking."""
        request = self._request(prompt_ids, params, tuple(stops), cancel, result)
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

    def _request(self, prompt_ids: torch.Tensor, params: SamplingParams, stops: tuple[str, ...],
                 cancel: threading.Event, result: GenerationResult) -> _Request:
        processors = LogitsProcessorList()
        generator = None
        if params.temperature > 0:
            processors.append(TemperatureLogitsWarper(params.temperature))
            top_k = getattr(self.lm.model.generation_config, "top_k", None)
            top_k = DEFAULT_TOP_K if top_k is None else top_k
            if top_k:  # as generate does: the model's own top_k, else its default 50; none when it says 0
                processors.append(TopKLogitsWarper(top_k))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
            generator = torch.Generator(device=self.lm.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        streamer = TextIteratorStreamer(self.lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        streamer.next_tokens_are_prompt = False  # only new tokens are ever put
        return _Request(prompt_ids=prompt_ids.to(self.lm.device), params=params, stops=stops, cancel=cancel,
                        result=result, streamer=streamer, processors=processors, generator=generator)

    # ------------------------------------------------------------------ the scheduler thread

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopped:
                try:
                    self._cycle()
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory merging caches: fail the batch, go on
                    log.exception("batched decoding failed")
                    for request in self._active:
                        request.failure = exc
                        self._finish(request)
                    self._active, self._cache, self._mask = [], None, None
        # A request queued behind close()'s None (it raced the check in stream) is failed, not left waiting.
        while True:
            try:
                late = self._waiting.get_nowait()
            except queue.Empty:
                return
            if late is not None:
                late.failure = RuntimeError("the batched generator is closed")
                self._finish(late)

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

    def _cycle(self) -> None:
        """One cycle of the scheduler: admit the waiting requests (prefilled), then one decode step for all."""
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
            self._admit(joining)
            joining = []
        if self._active:
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
            self._admit_each(joining)
            return
        try:
            cache, mask, logits = self._prefill(joining)
        except Exception:  # noqa: BLE001 - prefilled one by one, only the request that fails alone fails
            if len(joining) > 1:
                log.exception("prefilling %d requests together failed; prefilling them one by one", len(joining))
                self._admit_each(joining)
                return
            log.exception("prefill failed")
            joining[0].failure = sys.exc_info()[1]
            self._finish(joining[0])
            return
        going_on = []
        for row, request in enumerate(joining):
            request.result.batch_max = max(request.result.batch_max, len(joining))
            try:
                ended = self._emit(request, self._choose(request, logits[row : row + 1]))
            except Exception as exc:  # noqa: BLE001 - one request's sampling failure is its own
                request.failure, ended = exc, True
            if ended:
                self._finish(request)
            else:
                going_on.append(row)
        if going_on:
            try:
                self._merge([joining[row] for row in going_on], cache, mask, going_on)
            except Exception as exc:
                # A merge that failed half way leaves the batch's cache unusable: the scheduler fails them all.
                for row in going_on:
                    joining[row].failure = exc
                    self._finish(joining[row])
                raise

    def _admit_each(self, joining: list[_Request]) -> None:
        for index, request in enumerate(joining):
            try:
                self._admit([request])
            except Exception as exc:
                # A failed merge broke the batch (the scheduler fails the active requests): the ones not yet
                # admitted fail with it rather than wait for ever.
                for rest in joining[index + 1 :]:
                    rest.failure = exc
                    self._finish(rest)
                raise

    def _prefill(self, joining: list[_Request]) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """One forward over the joining prompts: ``(cache, mask, last logits)``, a row each, left-padded.

        In the forward each row is its cached prefix left-padded to the longest one, then its new tokens left-padded
        to the longest new part; the mask hides the padding and each row's position ids count only its real tokens.
        """
        found = [self.prefixes.lookup(request.prompt_ids) for request in joining]
        widths = [n for n, _ in found]
        news = [request.prompt_ids[:, n:] for request, (n, _) in zip(joining, found, strict=True)]
        cached, new = max(widths), max(ids.shape[1] for ids in news)
        device = self.lm.device
        if cached:
            shaped = next(layers for n, layers in found if n)  # a row with no cached prefix gets an empty one like it
            empty = [(keys[..., :0, :], values[..., :0, :]) for keys, values in shaped]
            cache = self._stacked([layers if n else empty for n, layers in found], cached)
        else:
            cache = DynamicCache(config=self.lm.model.config)
        if len(joining) == 1:
            mask = torch.ones_like(joining[0].prompt_ids)
            ids, positions = news[0], None
        else:
            mask = torch.cat([torch.cat([_pad_left(torch.ones((1, n), dtype=torch.long, device=device), cached),
                                         _pad_left(torch.ones_like(ids), new)], dim=1)
                              for n, ids in zip(widths, news, strict=True)])
            ids = torch.cat([_pad_left(part, new) for part in news])
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, cached:]
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True)
        if len(joining) == 1:
            self.prefixes.store(joining[0].prompt_ids, [(layer.keys, layer.values) for layer in cache.layers])
            return cache, mask, out.logits[:, -1, :]
        # Each row's real positions only, left-padded again: padding between a row's cached prefix and its new part
        # would otherwise stay in the batch (and be attended over) for the row's whole life. One gather per layer
        # tensor: a slice, pad and concatenation per row and layer cost 10 ms of a 7-row admission on 2 cores.
        index, packed_mask = _left_packed(mask)
        width = packed_mask.shape[1]
        rows_at = torch.arange(len(joining), device=device)[:, None]
        keep = packed_mask[:, None, :, None].to(cache.layers[0].keys.dtype)
        for layer in cache.layers:  # [b, h, n, d] -> the rows' real positions, left-padded with zeros
            layer.keys = layer.keys.transpose(1, 2)[rows_at, index].transpose(1, 2).mul_(keep)
            layer.values = layer.values.transpose(1, 2)[rows_at, index].transpose(1, 2).mul_(keep)
        for row, request in enumerate(joining):
            start = width - request.prompt_ids.shape[1]  # copies: an entry must not hold the whole batch's tensors
            self.prefixes.store(request.prompt_ids, [(layer.keys[row : row + 1, :, start:, :].clone(),
                                                      layer.values[row : row + 1, :, start:, :].clone())
                                                     for layer in cache.layers])
        return cache, packed_mask, out.logits[:, -1, :]

    def _stacked(self, rows: list[list[tuple[torch.Tensor, torch.Tensor]]], width: int) -> DynamicCache:
        """A cache of one row per entry of ``rows`` (each a ``[1, h, n, d]`` keys/values pair per layer), each
        left-padded to ``width`` positions."""
        cache = DynamicCache(config=self.lm.model.config)
        for i, layer in enumerate(cache.layers):
            keys = [_pad_left(row[i][0], width) for row in rows]
            values = [_pad_left(row[i][1], width) for row in rows]
            layer.lazy_initialization(keys[0], values[0])
            # One row is used as it is: DynamicLayer never writes into its tensors, it replaces them.
            layer.keys, layer.values = (torch.cat(keys), torch.cat(values)) if len(rows) > 1 else (keys[0], values[0])
        return cache

    def _merge(self, requests: list[_Request], cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> None:
        """Add ``requests`` (``rows`` of the just-prefilled ``cache`` and ``mask``) to the batch."""
        if len(rows) < mask.shape[0]:
            index = torch.tensor(rows, device=self.lm.device)
            mask = mask[index]
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            for batch_layer, own_layer in zip(self._cache.layers, cache.layers, strict=True):
                batch_layer.keys = torch.cat([_pad_left(batch_layer.keys, width), _pad_left(own_layer.keys, width)])
                batch_layer.values = torch.cat([_pad_left(batch_layer.values, width),
                                                _pad_left(own_layer.values, width)])
            self._mask = torch.cat([_pad_left(self._mask, width), _pad_left(mask, width)])
        self._active.extend(requests)
        self.peak_batch = max(self.peak_batch, len(self._active))

    def _step(self) -> None:
        """One token for every active request, then drop the ones that ended."""
        assert self._cache is not None and self._mask is not None
        gone = [i for i, request in enumerate(self._active) if request.cancel.is_set()]
        if len(gone) < len(self._active):
            positions = self._mask.sum(dim=1, keepdim=True)  # each row's next position: its real tokens so far
            self._mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
            ids = torch.tensor([[request.next_token] for request in self._active], device=self.lm.device)
            try:
                out = self.lm.model(input_ids=ids, attention_mask=self._mask, position_ids=positions,
                                    past_key_values=self._cache, use_cache=True,
                                    cache_position=torch.tensor([self._mask.shape[1] - 1], device=self.lm.device))
            except Exception as exc:  # noqa: BLE001 - a failed forward fails the requests in it, not the worker
                log.exception("batched decode step failed")
                for request in self._active:
                    request.failure = exc
                    self._finish(request)
                self._active, self._cache, self._mask = [], None, None
                return
            decoding = len(self._active) - len(gone)
            for row, request in enumerate(self._active):
                if row in gone:
                    continue
                request.result.batch_max = max(request.result.batch_max, decoding)
                try:
                    token = self._choose(request, out.logits[row : row + 1, -1, :])
                except Exception as exc:  # noqa: BLE001 - one request's sampling failure is its own
                    request.failure = exc
                    gone.append(row)
                    continue
                if self._emit(request, token):
                    gone.append(row)
        if gone:
            rows = sorted(set(gone))
            ended = [self._active[row] for row in rows]
            self._leave(rows)  # before they are finished: a caller that sees its stream end finds the cache let go
            for request in ended:
                self._finish(request)

    def _leave(self, rows: list[int]) -> None:
        assert self._cache is not None and self._mask is not None
        keep = [i for i in range(len(self._active)) if i not in rows]
        self._active = [self._active[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, device=self.lm.device)
        self._mask = self._mask[index]
        # Padding that every remaining row has: cut it, so a long request that left stops costing the others.
        unused = int((self._mask.cumsum(dim=1) == 0).sum(dim=1).min())
        self._mask = self._mask[:, unused:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, unused:, :]
            layer.values = layer.values[index, :, unused:, :]

    def _choose(self, request: _Request, logits: torch.Tensor) -> int:
        # float32 as generate does, then the request's own warpers and generator (none of the warpers reads the
        # ids so far, so the prompt stands in for them).
        scores = logits.to(copy=True, dtype=torch.float32)
        if request.generator is None:
            return int(torch.argmax(scores, dim=-1))
        scores = request.processors(request.prompt_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=request.generator))

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

    def _finish(self, request: _Request) -> None:
        request.result.completion_tokens = len(request.tokens)
        request.streamer.end()
        request.finished.set()


def _left_packed(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a ``[b, n]`` mask with padding anywhere: ``(index, packed)``, where ``index[r]`` lists row ``r``'s real
    positions in order, left-padded to the longest row's count (the padding slots repeat the row's first real
    position: finite values, which the caller zeroes), and ``packed`` is the mask of that layout (1 real, 0
    padding)."""
    real = mask.bool()
    counts = real.sum(dim=1)
    width = int(counts.max())
    order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # each row's real positions first, in order
    slots = torch.arange(width, device=mask.device)[None, :]
    padding = width - counts[:, None]
    index = order.gather(1, (slots - padding).clamp(min=0))
    return index, (slots >= padding).to(mask.dtype)


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` with zeros before its sequence axis (dim 2 of a ``[b, h, n, d]`` cache, dim 1 of a mask)."""
    axis = 2 if tensor.dim() == 4 else 1
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=axis)
