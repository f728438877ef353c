"""A batch's rows of KV cache and their mask: stacked, packed, taken, merged, left and grown, each row left-padded.

The batched scheduler (:mod:`workers.llm.batching`) keeps one ``DynamicCache`` for every request it decodes, a row
each, and a mask over its positions (1 a real token, 0 padding). Rows are left-padded to the longest, so every row's
next token goes into the same last position; the mask and each row's own position ids hide the padding from the
model. ``DynamicLayer`` only ever replaces its tensors (``torch.cat``, slicing), never writes into them, so a row can
share its tensors with a prefix-cache entry. transformers selects a cache's rows (``batch_select_indices``, used here)
but pads, merges and trims none, hence this module. Only full-attention ``DynamicLayer`` caches are handled
(:func:`workers.llm.batching.supports_batching`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

# Per layer, its keys and values (each ``[rows, heads, positions, head_dim]``).
Layers = list[tuple[torch.Tensor, torch.Tensor]]


class CacheRows:
    """The KV cache of a batch's rows, each left-padded to the longest, and the mask of its positions.

    ``cache``: the model's ``DynamicCache`` (``[rows, heads, positions, head_dim]`` per layer); ``mask``: ``[rows,
    positions]``, 1 a real token, 0 padding. The methods change both in place, as the model's forward does.
    """

    def __init__(self, cache: DynamicCache, mask: torch.Tensor):
        self.cache = cache
        self.mask = mask

    @classmethod
    def stacked(cls, cache: DynamicCache, rows: Sequence[Layers], device: str | torch.device) -> CacheRows:
        """Fill ``cache`` (new, with the model's layers, none of them filled) with a row per entry of ``rows``, each
        left-padded to the longest: an entry is a row's keys and values per layer (``[1, h, n, d]``; a prefix found
        in the prefix cache), or an empty list for a row with none. ``device``: where the mask goes."""
        lengths = [layers[0][0].shape[2] if layers else 0 for layers in rows]
        width = max(lengths)
        mask = torch.cat([pad_left(torch.ones((1, n), dtype=torch.long, device=device), width) for n in lengths])
        if not width:
            return cls(cache, mask)
        shaped = next(layers for layers in rows if layers)  # a row with no prefix gets an empty one like it
        empty = [(keys[..., :0, :], values[..., :0, :]) for keys, values in shaped]
        filled = [layers or empty for layers in rows]
        for i, layer in enumerate(cache.layers):
            keys = [pad_left(row[i][0], width) for row in filled]
            values = [pad_left(row[i][1], width) for row in filled]
            layer.lazy_initialization(keys[0], values[0])
            # One row is used as it is: DynamicLayer never writes into its tensors, it replaces them.
            layer.keys, layer.values = (torch.cat(keys), torch.cat(values)) if len(rows) > 1 else (keys[0], values[0])
        return cls(cache, mask)

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        """Positions per row, padding included."""
        return self.mask.shape[1]

    @property
    def cached_tokens(self) -> int:
        """Positions held, padding included."""
        return int(self.mask.numel())

    def row(self, index: int, length: int) -> Layers:
        """Row ``index``'s last ``length`` positions per layer (``[1, h, length, d]``): the cache's own tensors when
        it holds that row alone, unpadded, else copies (a prefix-cache entry must not hold the whole batch's
        tensors)."""
        if len(self) == 1 and length == self.width:
            return [(layer.keys, layer.values) for layer in self.cache.layers]
        start = self.width - length
        return [(layer.keys[index : index + 1, :, start:, :].clone(),
                 layer.values[index : index + 1, :, start:, :].clone()) for layer in self.cache.layers]

    def pack(self) -> None:
        """Move each row's real positions, in order, to its end, left-padded with zeros.

        After a joint prefill a row's padding lies also between its cached prefix and its new part; left there, it
        would stay in the batch (and be attended over) for the row's whole life. One gather per layer tensor: a
        slice, pad and concatenation per row and layer cost 10 ms of a 7-row admission on 2 cores.
        """
        index, packed = _left_packed(self.mask)
        rows_at = torch.arange(len(self), device=self.mask.device)[:, None]
        keep = packed[:, None, :, None].to(self.cache.layers[0].keys.dtype)
        for layer in self.cache.layers:  # [b, h, n, d] -> the rows' real positions, left-padded with zeros
            layer.keys = layer.keys.transpose(1, 2)[rows_at, index].transpose(1, 2).mul_(keep)
            layer.values = layer.values.transpose(1, 2)[rows_at, index].transpose(1, 2).mul_(keep)
        self.mask = packed

    def take(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices, in that order), padding and all."""
        index = torch.tensor(rows, device=self.mask.device)
        self.mask = self.mask[index]
        self.cache.batch_select_indices(index)

    def extend(self, other: CacheRows) -> None:
        """Add ``other``'s rows after these, both left-padded to the wider of the two."""
        width = max(self.width, other.width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([pad_left(mine.keys, width), pad_left(theirs.keys, width)])
            mine.values = torch.cat([pad_left(mine.values, width), pad_left(theirs.values, width)])
        self.mask = torch.cat([pad_left(self.mask, width), pad_left(other.mask, width)])

    def leave(self, rows: list[int]) -> None:
        """Drop ``rows`` (indices; at least one row must stay), then the padding every remaining row has."""
        index = torch.tensor([i for i in range(len(self)) if i not in rows], device=self.mask.device)
        self.mask = self.mask[index]
        # Padding that every remaining row has: cut it, so a long request that left stops costing the others.
        unused = int((self.mask.cumsum(dim=1) == 0).sum(dim=1).min())
        self.mask = self.mask[:, unused:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, unused:, :]
            layer.values = layer.values[index, :, unused:, :]

    def grow(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Add a real position to every row, for a decode step's tokens: ``(position_ids, cache_position)``, each
        row's position for its token (its real tokens so far, ``[rows, 1]``) and the new position's index."""
        positions = self.mask.sum(dim=1, keepdim=True)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        return positions, torch.tensor([self.width - 1], device=self.mask.device)


def pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` with zeros before its sequence axis up to ``width`` positions (dim 2 of a ``[b, h, n, d]`` cache
    tensor, dim 1 of a ``[b, n]`` mask or ids)."""
    axis = 2 if tensor.dim() == 4 else 1
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=axis)


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
