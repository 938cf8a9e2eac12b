"""A static slot KV cache: K/V preallocated per layer for `slots` jobs x `length` positions.

Each job owns one slot (a row of every layer's K/V) and sits at its own position in it. A
joining job is prefilled straight into a free slot; a leaving job just frees its slot. Nothing
is concatenated, re-padded or copied when jobs join or leave, and the decode step has fixed
shapes per (rows, keys) bucket, so a CUDA graph can capture it.

The model sees the cache through the transformers `Cache` interface: each layer's `update`
writes the new keys/values at every row's own position and returns the slot rows; the
attention mask (built here, per row, with sliding windows where the model has them) hides
every position a row has not reached.
"""
from __future__ import annotations

import heapq

import numpy as np
import torch
from transformers.cache_utils import Cache, CacheLayerMixin



class Unsupported(Exception):
    """The slot cache cannot serve this model; the engine falls back to the left-padded cache."""


class SlotLayer(CacheLayerMixin):
    """One layer's K/V: (slots, heads, length, head_dim) each, allocated on first use."""

    is_sliding = False

    def __init__(self, owner: "SlotCache") -> None:
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        o = self.owner
        shape = (o.slots, key_states.shape[1], o.length)
        self.keys = key_states.new_zeros(*shape, key_states.shape[-1])
        self.values = value_states.new_zeros(*shape, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write (b, H, q, D) new K/V at each row's positions; return its rows' K/V up to `width`."""
        if self.keys is None:
            self.lazy_initialization(key_states, value_states)
        o = self.owner
        self.keys[o.rows[:, None], :, o.write] = key_states.transpose(1, 2)  # (b, q, H, D) at (slot, position)
        self.values[o.rows[:, None], :, o.write] = value_states.transpose(1, 2)
        if o.leading:  # rows are slots 0..b-1: a view, no copy
            b = o.rows.shape[0]
            return self.keys[:b, :, : o.width], self.values[:b, :, : o.width]
        return self.keys[o.rows, :, : o.width], self.values[o.rows, :, : o.width]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.width, 0

    def get_seq_length(self) -> int:
        return self.owner.width

    def get_max_length(self) -> int:
        return self.owner.length


class SlotCache(Cache):
    """Every layer's slot K/V, and the rows, write positions and width of the forward in progress."""

    def __init__(self, model: torch.nn.Module, slots: int, length: int) -> None:
        config = model.config
        super().__init__(layers=[SlotLayer(self) for _ in range(config.num_hidden_layers)])
        self.slots, self.length = slots, length
        self.rows = self.write = None
        self.width, self.leading = length, True
        self.style = _mask_style(model)
        self.dtype = next(model.parameters()).dtype

    def prepare(self, rows: torch.Tensor, write: torch.Tensor, width: int, leading: bool) -> None:
        """Set up the next forward: rows (b,) slots, write (b, q) positions, keys seen up to `width`."""
        self.rows, self.write, self.width, self.leading = rows, write, width, leading

    def masks(self, query: torch.Tensor, width: int):
        """Attention masks for queries at positions (b, q) over key positions [0, width), as the model takes them."""
        kv = torch.arange(width, device=query.device)[None, None, :]
        q = query[:, :, None]
        causal = kv <= q  # (b, q, width): a row sees its own past only
        built = {}
        for kind, window in self.style["layers"].items():
            allowed = causal if window is None else causal & (kv > q - window)
            allowed = allowed[:, None]  # (b, 1, q, width)
            if self.style["additive"]:
                zero = torch.zeros((), dtype=self.dtype, device=query.device)
                allowed = torch.where(allowed, zero, torch.finfo(self.dtype).min)
            built[kind] = allowed
        return built if self.style["mapping"] else built["all"]


def _mask_style(model: torch.nn.Module) -> dict:
    """How this model takes its mask: one tensor or a mapping per layer type, bool (sdpa) or additive (eager)."""
    config = model.config
    attention = getattr(config, "_attn_implementation", None) or "eager"
    if attention not in ("sdpa", "eager"):
        raise Unsupported(f"attention implementation {attention!r}")
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types:
        unknown = set(types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise Unsupported(f"layer types {sorted(unknown)}")
        if "sliding_attention" in types:
            layers = {t: (window if t == "sliding_attention" else None) for t in set(types)}
            return {"mapping": True, "layers": layers, "additive": attention == "eager"}
        return {"mapping": False, "layers": {"all": None}, "additive": attention == "eager"}
    return {"mapping": False, "layers": {"all": window}, "additive": attention == "eager"}


class SlotBackend:
    """The model over a SlotCache: prefill joining jobs into free slots, decode every slot in use.

    Attributes:
        slots: most jobs at once (MAX_BATCH).
        length: longest context a slot holds (prompt + steps), capped by the model's positions.
    """

    kind = "static"

    def __init__(self, model: torch.nn.Module, slots: int, length: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        limit = getattr(model.config, "max_position_embeddings", None)
        self.length = min(length, limit) if limit else length
        self.slots = slots
        self.cache = SlotCache(model, slots, self.length)
        self._free = list(range(slots))  # a heap: the lowest free slot first keeps the decode batch short
        self._used: set[int] = set()

    def take(self) -> int:
        """A free slot (the lowest)."""
        slot = heapq.heappop(self._free)
        self._used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        """Free a slot; its stale K/V are overwritten before any later job can see them."""
        self._used.discard(slot)
        heapq.heappush(self._free, slot)

    @property
    def span(self) -> int:
        """Slots 0..span-1 cover every slot in use (the decode batch)."""
        return max(self._used) + 1 if self._used else 0

    def prefill(self, slots: list[int], contexts: list[list[int]]) -> torch.Tensor:
        """Run joining contexts into their slots in one left-padded forward; returns (n, V) next-token logits.

        A padding column is written at a position its row has not reached yet (len + column), where the
        mask hides it until the row's own token overwrites it, so padding never needs clearing.
        """
        longest = max(len(c) for c in contexts)
        if longest > self.length:
            raise ValueError(f"a context of {longest} tokens does not fit a slot of {self.length}")
        ids = np.zeros((len(contexts), longest), dtype=np.int64)
        for row, context in zip(ids, contexts):
            row[longest - len(context):] = context
        pads = torch.tensor([longest - len(c) for c in contexts], device=self.device)
        # (n, T): each column's position in its own row; padding column c sits at len + c = c - pad + T
        query_t = (torch.arange(longest, device=self.device)[None, :] - pads[:, None]) % longest
        rows = torch.tensor(slots, device=self.device)
        self.cache.prepare(rows, query_t, longest, leading=False)
        out = self.model(input_ids=torch.from_numpy(ids).to(self.device), position_ids=query_t,
                         attention_mask=self.cache.masks(query_t, longest), cache=self.cache, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1, :]

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, width: int) -> torch.Tensor:
        """One token for each of slots 0..b-1 at its own position; tokens, positions (b,) -> (b, V) logits.

        Unused slots in that range run a dummy token at position 0 (their K/V are rewritten on prefill).
        """
        b = tokens.shape[0]
        query = positions[:, None]
        self.cache.prepare(torch.arange(b, device=self.device), query, width, leading=True)
        out = self.model(input_ids=tokens[:, None], position_ids=query, attention_mask=self.cache.masks(query, width),
                         cache=self.cache, use_cache=True)
        return out.logits[:, -1, :]
