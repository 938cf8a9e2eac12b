"""The loop, plainly: one sequence, no batching, a plain KV cache (the tests' oracle).

    ids (T,) -> model -> logits (1, T, V) -> probs (V,) -> token -> ids (T + 1,) -> ...

The batch engine must give exactly these steps for every job, alone or batched.
"""
from __future__ import annotations

import torch

from engine.sampling import step_uniform


@torch.no_grad()
def generate(model, ids: list[int], steps: int, temperature: float = 0.0, seed: int = 0) -> list[tuple[int, torch.Tensor]]:
    """Run `steps` steps from context `ids` (T,); returns each step's (chosen id, probs (V,)), in order.

    Greedy at temperature 0; otherwise inverse-CDF sampling of softmax(logits / T) over the whole
    vocabulary (top_p = 1), driven by the same (seed, step) uniform draw as the engine.
    """
    x = torch.tensor([ids])  # (1, T): the whole prompt goes in at the first step
    cache, out = None, []
    for index in range(1, steps + 1):
        result = model(input_ids=x, cache=cache, use_cache=True)  # logits (1, T or 1, V)
        cache = result.cache  # keys/values of every token seen so far
        logits = result.logits[0, -1].float()  # (V,): the next token's scores
        probs = torch.softmax(logits / (temperature or 1.0), dim=-1)  # (V,): the distribution students see
        if temperature == 0:
            token = int(logits.argmax())  # greedy: the most likely token (the lowest id among ties)
        else:
            cdf = probs.cumsum(0)  # (V,): running mass in vocabulary order
            token = int(torch.searchsorted(cdf, step_uniform(seed, index) * cdf[-1], right=True).clamp_max(len(cdf) - 1))
        out.append((token, probs))  # the step: what was chosen, from which distribution
        x = torch.tensor([[token]])  # (1, 1): only the new token goes in next time
    return out
