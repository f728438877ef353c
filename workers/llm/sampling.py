"""One request's token choice in the batched scheduler: greedy, or sampled as ``generate`` samples it.

Each request keeps its own temperature, top-k and top-p (transformers' own logits warpers) and its own
``torch.Generator`` for its seed, so a batched request draws what it would draw alone, whatever is beside it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from .generation import SamplingParams

# generate's default top_k when the model's generation_config leaves it unset (transformers'
# GenerationConfig._get_default_generation_params); kept so a batched sampled request draws from the same
# distribution a lone one does.
DEFAULT_TOP_K = 50


class Sampler:
    """Chooses one request's tokens: ``params`` its sampling (temperature 0: greedy), ``generation_config`` the
    model's (its ``top_k``), ``device`` the model's (where the seeded generator draws)."""

    def __init__(self, params: SamplingParams, generation_config: Any, device: str):
        self.processors = LogitsProcessorList()
        self.generator: torch.Generator | None = None
        if not params.temperature > 0:  # greedy
            return
        self.processors.append(TemperatureLogitsWarper(params.temperature))
        top_k = getattr(generation_config, "top_k", None)
        top_k = DEFAULT_TOP_K if top_k is None else top_k
        if top_k:  # as generate does: the model's own top_k, else its default 50; none when it says 0
            self.processors.append(TopKLogitsWarper(top_k))
        if params.top_p < 1.0:
            self.processors.append(TopPLogitsWarper(params.top_p))
        self.generator = torch.Generator(device=device)
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def choose(self, logits: torch.Tensor, prompt_ids: torch.Tensor) -> int:
        """The next token from ``logits`` (``[1, vocab]``, the request's row); ``prompt_ids`` stand in for the ids so
        far, which none of the warpers reads."""
        # float32 as generate does, then the request's own warpers and generator.
        scores = logits.to(copy=True, dtype=torch.float32)
        if self.generator is None:
            return int(torch.argmax(scores, dim=-1))
        scores = self.processors(prompt_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=self.generator))
