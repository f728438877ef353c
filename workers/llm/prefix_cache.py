"""Prefix caching: a new prompt that starts like a recent one reuses that prompt's keys and values.

A voice agent's prompts share long beginnings: every call's system prompt, and each turn of a call repeats the
turns before it. Prefill is what a caller waits for before the first token, and on a CPU it is compute-bound, so
prefilling only the part of a prompt that is new cuts the time to first token of every turn after the first (vLLM's
automatic prefix caching does the same on its paged cache; transformers has nothing like it for a
``DynamicCache``, hence this small module).

Entries are whole prompts' caches after their prefill, matched token by token (the longest common prefix wins),
kept newest first up to a budget of cached positions. ``DynamicLayer`` only ever replaces its tensors (``torch.cat``,
slicing), never writes into them, so an entry can share its tensors with the batch that goes on decoding from it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class PrefixCache:
    """The prefill caches of recent prompts, up to ``max_tokens`` cached positions in all (0 turns it off)."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max(0, max_tokens)
        self._entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.hits = 0  # prompts that reused a cached prefix (the tests and benchmarks read these)
        self.reused_tokens = 0

    @property
    def cached_tokens(self) -> int:
        return sum(len(key) for key in self._entries)

    def lookup(self, ids: torch.Tensor) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``(n, layers)``: each layer's keys and values for the first ``n`` positions of ``ids`` (shape
        ``[1, len]``), taken from the entry that shares the longest prefix with it; ``(0, [])`` when none does.
        ``n`` stays below the prompt's length: the last prompt token is always prefilled, since its logits choose the
        first new token."""
        wanted = ids[0].tolist()
        best, best_key = 0, None
        for key in self._entries:
            shared = _common_prefix(key, wanted)
            if shared > best:
                best, best_key = shared, key
        best = min(best, len(wanted) - 1)
        if best <= 0 or best_key is None:
            return 0, []
        self._entries.move_to_end(best_key, last=False)
        self.hits += 1
        self.reused_tokens += best
        return best, [(keys[..., :best, :], values[..., :best, :]) for keys, values in self._entries[best_key]]

    def store(self, ids: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep ``layers`` (each layer's keys and values just after prefilling ``ids``, no padding) for later prompts
        that start the same way."""
        key = tuple(ids[0].tolist())
        if not self.max_tokens or len(key) > self.max_tokens:
            return
        self._entries.pop(key, None)
        # A prompt that is a prefix of the new one adds nothing the new entry does not hold.
        for older in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
            del self._entries[older]
        self._entries[key] = layers
        self._entries.move_to_end(key, last=False)
        while self.cached_tokens > self.max_tokens:
            self._entries.popitem(last=True)


def _common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # prompts of different lengths
        if x != y:
            break
        n += 1
    return n
