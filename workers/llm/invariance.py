"""Batch-invariant forwards: a row's logits are bit for bit what the same tokens give alone (``BATCH_INVARIANT``).

In bfloat16 a greedy stream decoded beside others can part from the same request run alone, at a near-tied token
(5-6 of 12 streams identical, ``benchmarks/batch_exactness.py``). Traced module by module on the CPU (torch 2.13,
SmolLM2-135M), two operations give a row different last bits when other rows share its forward:

- **Attention.** A batch's rows are left-padded to the longest and masked, so SDPA gets a mask and keys that a lone
  row's call does not have (a lone decode step passes no mask, and grouped-query heads are then handled another
  way), and rounds differently. :func:`rowwise_attention` makes one SDPA call per row over the row's own queries
  and keys, lone rows included, so that a row makes the very same call beside others as alone.
- **A linear layer fed a single row.** One row (a lone decode step) runs a matrix-vector kernel whose sums round
  differently from the same row among two or more: on 2 cores a 1536-input layer like ``down_proj`` gave about 1
  output in 10,000 a different last bit, while batches of 2 to 400 rows agreed with each other exactly.
  :func:`_two_row_linear` computes a single row as two (itself and a zero row), so every step uses the same kernel
  whatever the batch.

Measured with both: 12 of 12 streams identical in bfloat16, with joint prefill and without. On 2 cores an 8-row
decode step costs 11% more (the per-row attention calls), a lone one 5% (the two-row linear layers); batched
streams write 3-8% fewer tokens/s through the worker, 12-18% at 4-16 streams on the scheduler alone
(docs/benchmarks.md). The worker applies it only with batched decoding, where rows share a forward, and by default
only on a CPU (:func:`invariance_wanted`). What a GPU's kernels do is not measured here: cuBLAS may split a
product differently by batch size, which this does not address. Nor does it make a prompt's logits independent of
how it was prefilled: positions prefilled in one chunk or in two (part of the prompt found in the prefix cache)
round differently in bfloat16, alone or not.

transformers has no setting for either, so this registers an attention function (its ``AttentionInterface``) and
replaces the ``forward`` of the model's ``nn.Linear`` modules; nothing of transformers is copied.
"""

from __future__ import annotations

import threading
import types
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "voicepod_rowwise"

# Per row: its real query and key positions (slices, or index tensors where not contiguous), and the mask and
# ``is_causal`` a lone forward of that row would pass.
_Span = tuple[Any, Any, torch.Tensor | None, bool | None]

_rows = threading.local()  # the last mask seen in this thread, and its rows' spans: one forward's layers share it


def _real(allowed: torch.Tensor) -> slice | torch.Tensor:
    """The positions where ``allowed`` (1-D, bool) is true: a slice when they are contiguous."""
    where = allowed.nonzero().squeeze(1)
    first, last = int(where[0]), int(where[-1])
    return slice(first, last + 1) if last - first + 1 == where.numel() else where


def _spans(attention_mask: torch.Tensor) -> list[_Span]:
    """Per row: its real query and key positions, and the mask and ``is_causal`` a lone forward would pass."""
    if getattr(_rows, "mask", None) is attention_mask:
        return _rows.spans
    allowed = attention_mask[:, 0] if attention_mask.dtype == torch.bool else attention_mask[:, 0] == 0
    spans = []
    for row in allowed:  # [q, k]: which keys each query attends to
        q, k = row.shape
        # A query is real where its own position is a real key (a padding query may still see a cached prefix).
        queries, keys = _real(row[:, k - q :].diagonal()), _real(row.any(dim=0))
        own = row[queries][:, keys]
        q, k = own.shape
        if q == 1 and bool(own.all()):
            spans.append((queries, keys, None, None))  # a lone decode step: no mask
        elif q == k and torch.equal(own, torch.ones_like(own).tril()):
            spans.append((queries, keys, None, True))  # a lone prefill from the start: causal, no mask
        else:
            spans.append((queries, keys, own[None, None], None))  # a lone prefill after a cached prefix: a mask
    _rows.mask, _rows.spans = attention_mask, spans
    return spans


def _row_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                   scaling: float | None) -> torch.Tensor:
    """One row's attention over its own queries and keys (``query``: ``[1, heads, q, d]``, ``key``/``value``:
    ``[1, kv_heads, k, d]``; ``mask``: ``[1, 1, q, k]`` or None, causal when ``q`` > 1); returns ``[1, q, heads, d]``.

    SDPA called as transformers calls it, except where a faster call computes the same: a single query (a decode
    step) gets the query heads that share a key head packed as that head's queries (on 2 cores 22 µs a call against
    56 µs with every head its own, 110 keys: an 8-row step makes 240 of them), and a masked prefill keeps the key heads
    shared (``enable_gqa``, 34 µs) where transformers copies them per query head first (52 µs). Lone and batched rows
    both come here, so each makes the very same call either way."""
    heads, kv_heads, q_len = query.shape[1], key.shape[1], query.shape[2]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if q_len == 1 and mask is None:
        packed = query.reshape(1, kv_heads, heads // kv_heads, query.shape[-1])
        return sdpa(packed, key, value, scale=scaling).reshape(1, heads, 1, value.shape[-1]).transpose(1, 2)
    attended = sdpa(query, key, value, attn_mask=mask, is_causal=mask is None, scale=scaling,
                    enable_gqa=heads != kv_heads)
    return attended.transpose(1, 2)


def _plain(kwargs: dict[str, Any]) -> bool:
    """Whether transformers' SDPA attention would make a plain call: no dropout, soft cap, window or bias."""
    return not kwargs.get("dropout") and all(kwargs.get(name) is None
                                             for name in ("softcap", "sliding_window", "position_bias"))


def rowwise_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA attention called once per row with that row's own queries and keys, the call a lone row makes
    (``query``: ``[batch, heads, q, d]``; returns ``[batch, q, heads, d]`` as SDPA attention does), by
    :func:`_row_attention`; with dropout or another extra, by transformers' SDPA attention."""
    batch, heads, q_len, _ = query.shape
    if attention_mask is None:
        spans: list[_Span] = [(slice(None), slice(None), None, None)] * batch  # every query and key real
    else:
        spans = _spans(attention_mask)
    out = query.new_zeros((batch, q_len, heads, value.shape[-1]))
    for row, (queries, keys, mask, causal) in enumerate(spans):
        own_query = query[row : row + 1, :, queries]
        own_key, own_value = key[row : row + 1, :, keys], value[row : row + 1, :, keys]
        if _plain(kwargs):
            attended = _row_attention(own_query, own_key, own_value, mask, kwargs.get("scaling"))
        else:
            own = dict(kwargs, is_causal=causal) if causal is not None else kwargs
            attended, _ = sdpa_attention_forward(module, own_query, own_key, own_value, mask, **own)
        out[row, queries] = attended[0]
    return out, None


def _two_row_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.numel() != x.shape[-1]:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    row = x.reshape(1, -1)
    both = torch.nn.functional.linear(torch.cat([row, torch.zeros_like(row)]), self.weight, self.bias)
    return both[:1].reshape(*x.shape[:-1], -1)


def invariance_wanted(setting: str | None, device: str, attention: str | None) -> bool:
    """Whether the worker makes its batched model batch-invariant. ``setting``: ``BATCH_INVARIANT`` as given
    (``"1"``, ``"0"``, or ``None``/empty for the default); ``device``: the model's device (``"cpu"``,
    ``"cuda:0"``...); ``attention``: the model's attention implementation (``config._attn_implementation``).

    The default is on for a CPU model that runs SDPA attention, where exactness is measured and costs 3-8% of
    batched streams' tokens/s through the worker (12-18% on the scheduler alone), and off on any other device,
    where it is not measured (on a GPU a batch of 16 would make 16 attention calls per layer, and a masked call with
    shared key heads may leave SDPA's fast kernels). An explicit ``"1"`` asks for it whatever the model
    (:func:`make_batch_invariant` then refuses one that does not run SDPA, with a clear error)."""
    choice = (setting or "").strip()
    if choice not in ("", "0", "1"):
        raise ValueError(f"BATCH_INVARIANT={setting!r}: use 1 (on) or 0 (off)")
    if choice:
        return choice == "1"
    return torch.device(device).type == "cpu" and attention == "sdpa"


def make_batch_invariant(model: torch.nn.Module) -> None:
    """Make ``model``'s forwards batch-invariant (see the module's docstring): row-wise attention, and linear layers
    that never run a single row alone. Changes ``model`` in place.

    Raises ``ValueError`` for a model that does not run SDPA attention: the row-wise calls are SDPA's, and a model
    transformers runs another way (eager, for one that SDPA cannot serve) would change what it computes."""
    current = getattr(model.config, "_attn_implementation", None)
    if current != "sdpa":
        raise ValueError(f"BATCH_INVARIANT needs a model that runs SDPA attention; this one runs {current!r}")
    AttentionInterface.register(ATTENTION, rowwise_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA gets; rowwise_attention cuts them per row
    model.set_attn_implementation(ATTENTION)
    for module in model.modules():
        if type(module) is torch.nn.Linear:  # not subclasses: a quantised layer's weight is not for F.linear
            module.forward = types.MethodType(_two_row_linear, module)
