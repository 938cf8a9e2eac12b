"""The teaching notebook's loop, as the baseline: re-encode the whole text and run the model without a cache every step."""
from __future__ import annotations

import torch


@torch.no_grad()
def notebook_loop(model, tokenizer, prompt: str, steps: int, top_k: int = 10) -> str:
    """Greedy generation exactly as the notebook does it (string concatenation, no KV cache); returns the text."""
    context = prompt
    device = next(model.parameters()).device
    for _ in range(steps):
        input_ids = tokenizer.encode(context, return_tensors="pt").to(device)
        logits = model(input_ids).logits[0, -1, :]
        probs = torch.softmax(logits.float(), dim=0)
        top_probs, top_indices = torch.topk(probs, top_k)
        tokens = [tokenizer.decode([idx]) for idx in top_indices]
        top_probs.cpu().numpy().tolist()
        context = context + tokens[0]
    return context
