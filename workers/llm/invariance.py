"""Batch-invariant forwards: a row's logits are bit for bit what the same tokens give alone (``BATCH_INVARIANT=1``).

In bfloat16 a greedy stream decoded beside others can part from the same request run alone, at a near-tied token
(5-6 of 12 streams identical, ``benchmarks/batch_exactness.py``). Traced module by module on the CPU (torch 2.13,
SmolLM2-135M), two operations give a row different last bits when other rows share its forward:

- **Attention.** A batch's rows are left-padded to the longest and masked, so SDPA gets a mask and keys that a lone
  row's call does not have (a lone decode step passes no mask, and grouped-query heads are then handled another
  way), and rounds differently. :func:`rowwise_attention` makes, for each row, the very call a lone request makes:
  the row's own queries and keys, and no mask where a lone forward passes none.
- **A linear layer fed a single row.** One row (a lone decode step) runs a matrix-vector kernel whose sums round
  differently from the same row among two or more: on 2 cores a 1536-input layer like ``down_proj`` gave about 1
  output in 10,000 a different last bit, while batches of 2 to 400 rows agreed with each other exactly.
  :func:`_two_row_linear` computes a single row as two (itself and a zero row), so every step uses the same kernel
  whatever the batch.

Measured with both: 12 of 12 streams identical in bfloat16, with joint prefill and without. Both cost: the two-row
linear layers about 6% of a lone stream's tokens/s on 2 cores, the separate attention call per row and layer (and
the linear layers) about 16% of 8 batched streams' (docs/benchmarks.md). The worker applies it only with batched
decoding, where rows share a forward. What a GPU's kernels do is not measured here:
cuBLAS may split a product differently by batch size, which this does not address.

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

_rows = threading.local()  # the last mask seen in this thread, and its rows' spans: one forward's layers share it


def _real(allowed: torch.Tensor) -> slice | torch.Tensor:
    """The positions where ``allowed`` (1-D, bool) is true: a slice when they are contiguous."""
    where = allowed.nonzero().squeeze(1)
    first, last = int(where[0]), int(where[-1])
    return slice(first, last + 1) if last - first + 1 == where.numel() else where


def _spans(attention_mask: torch.Tensor) -> list[tuple[Any, Any, torch.Tensor | None, bool | None]]:
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


def rowwise_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, called once per row with what that row alone would pass
    (``query``: ``[batch, heads, q, d]``; returns ``[batch, q, heads, d]`` as SDPA attention does)."""
    if attention_mask is None or query.shape[0] == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    out = query.new_zeros((query.shape[0], query.shape[2], query.shape[1], value.shape[-1]))
    for row, (queries, keys, mask, causal) in enumerate(_spans(attention_mask)):
        own = dict(kwargs, is_causal=causal) if causal is not None else kwargs
        attended, _ = sdpa_attention_forward(module, query[row : row + 1, :, queries], key[row : row + 1, :, keys],
                                             value[row : row + 1, :, keys], mask, **own)
        out[row, queries] = attended[0]
    return out, None


def _two_row_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.numel() != x.shape[-1]:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    row = x.reshape(1, -1)
    both = torch.nn.functional.linear(torch.cat([row, torch.zeros_like(row)]), self.weight, self.bias)
    return both[:1].reshape(*x.shape[:-1], -1)


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
