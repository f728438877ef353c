"""Batch-invariant attention (:mod:`workers.llm.invariance`) against transformers' own SDPA attention, and when the
worker turns it on. No model weights: random float32 tensors, where the two must agree to rounding.

The exactness tests in ``tests/test_batching.py`` and ``tests/test_concurrency.py`` compare a row beside others
with the same row alone, and both go through :func:`~workers.llm.invariance.rowwise_attention`: a mistake it made
the same way both times (a wrong head grouping, causal pattern or scale) would pass them. These compare it with
transformers' computation instead.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from workers.llm.invariance import invariance_wanted, make_batch_invariant, rowwise_attention

HEADS, KV_HEADS, DIM = 6, 2, 16
MODULE = SimpleNamespace(num_key_value_groups=HEADS // KV_HEADS, is_causal=True, training=False)
SCALING = 0.3  # not SDPA's default (DIM**-0.5): a scale left out would show


def _mask(rows: list[tuple[list[int], int]], q: int, k: int) -> torch.Tensor:
    """A ``[batch, 1, q, k]`` boolean mask: per row, its cached key positions and how many new tokens it has (its
    last queries, at the last key positions, each attending the cached keys and the new ones up to itself), as
    the batched scheduler lays out a joint prefill or a decode step; padding elsewhere."""
    mask = torch.zeros(len(rows), 1, q, k, dtype=torch.bool)
    for row, (cached, new) in enumerate(rows):
        for i in range(q - new, q):
            mask[row, 0, i, cached] = True
            mask[row, 0, i, k - q + (q - new) : k - q + i + 1] = True
    return mask


def _inputs(batch: int, q: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(batch * 100 + q * 10 + k)
    return (torch.randn(batch, HEADS, q, DIM), torch.randn(batch, KV_HEADS, k, DIM),
            torch.randn(batch, KV_HEADS, k, DIM))


def _reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
               ) -> torch.Tensor:
    out, _ = sdpa_attention_forward(MODULE, query, key, value, mask, dropout=0.0, scaling=SCALING)  # type: ignore[arg-type]
    return out


CASES = {
    # A decode step: rows of 5, 9 and 12 real keys, left-padded to 12.
    "decode step, left-padded": [([*range(7, 11)], 1), ([*range(3, 11)], 1), ([*range(0, 11)], 1)],
    # A joint prefill: a row from scratch, a row after a cached prefix with padding between prefix and new part,
    # and a row whose only new token is its last (one real query in a forward of five).
    "joint prefill": [([], 5), ([2, 3, 4, 5], 3), ([*range(0, 6)], 1), ([], 2)],
}


@pytest.mark.parametrize("case", CASES)
def test_rowwise_attention_computes_what_transformers_sdpa_attention_does(case: str) -> None:
    rows = CASES[case]
    q = max(new for _, new in rows)
    k = 12
    mask = _mask(rows, q, k)
    query, key, value = _inputs(len(rows), q, k)
    got, _ = rowwise_attention(MODULE, query, key, value, mask, dropout=0.0, scaling=SCALING)  # type: ignore[arg-type]
    assert got.shape == (len(rows), q, HEADS, DIM)
    for row, (_, new) in enumerate(rows):
        alone = _reference(query[row : row + 1], key[row : row + 1], value[row : row + 1], mask[row : row + 1])
        torch.testing.assert_close(got[row, q - new :], alone[0, q - new :])
        assert not got[row, : q - new].any()  # padding queries stay zero


@pytest.mark.parametrize(("batch", "q"), [(1, 1), (1, 7), (3, 1), (3, 7)])
def test_rowwise_attention_without_a_mask_is_causal_attention_over_every_key(batch: int, q: int) -> None:
    query, key, value = _inputs(batch, q, 7 if q > 1 else 9)
    got, _ = rowwise_attention(MODULE, query, key, value, None, dropout=0.0, scaling=SCALING)  # type: ignore[arg-type]
    torch.testing.assert_close(got, _reference(query, key, value, None))


@pytest.mark.parametrize(("setting", "device", "attention", "expected"), [
    (None, "cpu", "sdpa", True),  # the default on a CPU
    ("", "cpu", "sdpa", True),
    (None, "cuda", "sdpa", False),  # not measured on a GPU: off unless asked for
    (None, "cuda:1", "sdpa", False),
    (None, "mps", "sdpa", False),
    ("1", "cuda", "sdpa", True),
    ("0", "cpu", "sdpa", False),
    (None, "cpu", "eager", False),  # a model SDPA cannot serve keeps its attention by default
    ("1", "cpu", "eager", True),  # asked for: make_batch_invariant then refuses it clearly
])
def test_batch_invariance_is_on_by_default_on_a_cpu_only(setting: str | None, device: str, attention: str,
                                                          expected: bool) -> None:
    assert invariance_wanted(setting, device, attention) is expected


def test_a_batch_invariant_setting_other_than_0_or_1_is_refused() -> None:
    with pytest.raises(ValueError, match="BATCH_INVARIANT"):
        invariance_wanted("yes", "cpu", "sdpa")


def test_batch_invariance_refuses_a_model_that_does_not_run_sdpa_attention() -> None:
    eager = SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager"))
    with pytest.raises(ValueError, match="SDPA"):
        make_batch_invariant(eager)  # type: ignore[arg-type]
