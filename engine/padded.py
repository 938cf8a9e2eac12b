"""The fallback cache: one left-padded DynamicCache for the whole batch (for models the slot cache can't serve).

Joining jobs are prefilled together (left-padded) and spliced in by padding whichever cache is
shorter; leaving jobs are cut out and all-padding columns trimmed. Each row knows its padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache


class PaddedBackend:
    """Rows in cache order; `pads[i]` left padding columns of row i."""

    kind = "padded"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.pads: list[int] = []
        self.cache: DynamicCache | None = None

    def decode(self, tokens: list[int]) -> torch.Tensor:
        """Feed each row (in cache order) its pending token; returns (B, V) next-token logits."""
        width = self.cache.get_seq_length()
        pads = torch.tensor(self.pads, device=self.device)
        columns = torch.arange(width + 1, device=self.device)
        attention_mask = (columns[None, :] >= pads[:, None]).long()  # (B, T + 1), 0 on left padding
        position_ids = (width - pads)[:, None]  # (B, 1): real tokens before the new one
        out = self.model(input_ids=torch.tensor(tokens, device=self.device)[:, None], attention_mask=attention_mask,
                         position_ids=position_ids, cache=self.cache, use_cache=True)
        return out.logits[:, -1, :]

    def prefill(self, contexts: list[list[int]]) -> torch.Tensor:
        """Run new contexts in one left-padded forward and append them after the current rows; returns (n, V)."""
        longest = max(len(c) for c in contexts)
        pads = [longest - len(c) for c in contexts]
        input_ids = torch.tensor([[0] * p + c for p, c in zip(pads, contexts)], device=self.device)
        attention_mask = torch.tensor([[0] * p + [1] * len(c) for p, c in zip(pads, contexts)], device=self.device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # each row counts from its first real token
        cache = DynamicCache()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, logits_to_keep=1)
        if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            raise NotImplementedError("the padded cache supports full-attention layers only (no sliding windows)")
        if any(pads):  # padding slots hold junk; zero them so they can never leak through a mask
            keep = attention_mask[:, None, :, None].to(cache.layers[0].keys.dtype)
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys * keep, layer.values * keep
        self._splice(pads, cache)
        return out.logits[:, -1, :]

    def _splice(self, pads: list[int], cache: DynamicCache) -> None:
        """Append new rows (and their cache), left-padding whichever cache is shorter."""
        if self.cache is None:
            self.cache, self.pads = cache, pads
            return
        width, length = self.cache.get_seq_length(), cache.get_seq_length()
        self.pads = [p + max(length - width, 0) for p in self.pads] + [p + max(width - length, 0) for p in pads]
        for main, new in zip(self.cache.layers, cache.layers):
            main.keys = torch.cat([_left_pad(main.keys, length - width), _left_pad(new.keys, width - length)])
            main.values = torch.cat([_left_pad(main.values, length - width), _left_pad(new.values, width - length)])

    def keep(self, rows: list[int]) -> None:
        """Keep only the rows at `rows`, then drop left columns that are padding in every row."""
        self.pads = [self.pads[i] for i in rows]
        if not rows:
            self.cache = None
            return
        index = torch.tensor(rows, device=self.device)
        trim = min(self.pads)
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, trim:]
            layer.values = layer.values.index_select(0, index)[:, :, trim:]
        self.pads = [p - trim for p in self.pads]


def _left_pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """Pad (B, H, T, D) with n zero columns on the left of T (no-op for n <= 0)."""
    return F.pad(x, (0, 0, n, 0)) if n > 0 else x
