"""Prefill for the batched scheduler: one forward over the prompts that join the batch together, each from the
longest cached prefix of it (:mod:`workers.llm.prefix_cache`), into cache rows ready to merge into the batch's.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .cache_rows import CacheRows, pad_left
from .generation import LanguageModel
from .prefix_cache import PrefixCache


def prefill(lm: LanguageModel, prompts: list[torch.Tensor], prefixes: PrefixCache) -> tuple[CacheRows, torch.Tensor]:
    """One forward of ``lm`` over ``prompts`` (each ``[1, n]`` token ids, on ``lm``'s device): ``(rows, logits)``, a
    row each, left-padded, and each row's last logits (``[rows, vocab]``). ``prefixes`` gives each prompt's longest
    cached prefix, and keeps each prompt's keys and values for later ones.

    In the forward each row is its cached prefix left-padded to the longest one, then its new tokens left-padded to
    the longest new part; the mask hides the padding and each row's position ids count only its real tokens.
    """
    found = [prefixes.lookup(ids) for ids in prompts]
    rows = CacheRows.stacked(DynamicCache(config=lm.model.config), [layers for _, layers in found], lm.device)
    news = [ids[:, n:] for ids, (n, _) in zip(prompts, found, strict=True)]
    if len(prompts) == 1:
        rows.mask = torch.ones_like(prompts[0])
        ids, positions = news[0], None
    else:
        cached, new = rows.width, max(ids.shape[1] for ids in news)
        rows.mask = torch.cat([rows.mask, torch.cat([pad_left(torch.ones_like(part), new) for part in news])], dim=1)
        ids = torch.cat([pad_left(part, new) for part in news])
        positions = (rows.mask.cumsum(dim=1) - 1).clamp(min=0)[:, cached:]
    out = lm.model(input_ids=ids, attention_mask=rows.mask, position_ids=positions, past_key_values=rows.cache,
                   use_cache=True)
    if len(prompts) > 1:
        rows.pack()
    for row, prompt in enumerate(prompts):
        prefixes.store(prompt, rows.row(row, prompt.shape[1]))
    return rows, out.logits[:, -1, :]
