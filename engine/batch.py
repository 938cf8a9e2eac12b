"""BatchEngine: advance many independent generations by one token per batched forward pass.

Continuous batching over a left-padded KV cache: new sequences are prefilled together
(left-padded) and join the batch at the next step; a finished or dropped one leaves at once. Each row has
its own sampling parameters and its own (seed, step)-keyed random draws, so a sequence's
steps do not depend on what else shares the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from contract.jobs import FinishReason, GenerationParams, Step, TokenProb
from engine.sampling import choose, step_uniform


@dataclass(frozen=True)
class SequenceSpec:
    """A generation to run.

    Attributes:
        key: caller's id for it (the job id).
        ids: context token ids so far (prompt, forced ids, and on resume the tokens already generated).
        params: sampling parameters; `seed` must be set.
        first_index: number of the next step (1, or n + 1 when resuming after n stored steps).
        forced_next: when set, forced_next[j] is the token taken at step j + 1 instead of a choice (scoring a
            text); the step reports its probability and rank, and the sequence ends after len(forced_next) steps.
    """

    key: str
    ids: list[int]
    params: GenerationParams
    first_index: int = 1
    forced_next: tuple[int, ...] = ()


@dataclass(frozen=True)
class StepResult:
    """One step of one sequence; `finish_reason` and `text` are set on its last step; `forced` for a forced token."""

    key: str
    step: Step
    finish_reason: FinishReason | None = None
    text: str | None = None
    forced: bool = False


@dataclass
class _Row:
    spec: SequenceSpec
    ids: list[int]
    index: int  # number of the step this row computes next
    pad: int = 0  # left padding columns in the batch cache
    pending: int | None = None  # token chosen last step, not yet fed to the model


@dataclass
class BatchEngine:
    """Holds one batch; not thread safe (one owner thread calls add, drop and step).

    Attributes:
        model: a Hugging Face causal LM in eval mode, already on `device`.
        tokenizer: its tokenizer.
        max_batch: most sequences stepped together; extra ones wait in `waiting`.
    """

    model: torch.nn.Module
    tokenizer: object
    max_batch: int = 32
    waiting: list[SequenceSpec] = field(default_factory=list)
    _rows: list[_Row] = field(default_factory=list)
    _cache: DynamicCache | None = None
    _token_text: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = next(self.model.parameters()).device
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos_ids)

    def __len__(self) -> int:
        return len(self._rows) + len(self.waiting)

    def add(self, spec: SequenceSpec) -> None:
        """Queue a sequence; it joins the batch at the next step with room."""
        if spec.params.seed is None:
            raise ValueError("SequenceSpec.params.seed must be set")
        if not spec.ids:
            raise ValueError("a sequence needs at least one token of context")
        self.waiting.append(spec)

    def drop(self, key: str) -> None:
        """Remove a sequence now (cancelled, timed out, superseded)."""
        self.waiting = [s for s in self.waiting if s.key != key]
        keep = [i for i, r in enumerate(self._rows) if r.spec.key != key]
        if len(keep) != len(self._rows):
            self._keep_rows(keep)

    @torch.no_grad()
    def step(self) -> list[StepResult]:
        """Advance every sequence in the batch by one token; admit waiting ones first."""
        logits = []
        if self._rows:
            logits.append(self._decode())
        room = self.max_batch - len(self._rows)
        if self.waiting and room > 0:
            joining, self.waiting = self.waiting[:room], self.waiting[room:]
            logits.append(self._prefill(joining))
        if not self._rows:
            return []
        rows = self._rows
        choices = choose(
            torch.cat(logits),
            temperature=[r.spec.params.temperature for r in rows],
            top_p=[r.spec.params.top_p for r in rows],
            uniform=[step_uniform(r.spec.params.seed, r.index) for r in rows],
            top_k=[r.spec.params.top_k for r in rows],
            forced=[_forced(r) for r in rows],
        )
        results, keep = [], []
        for i, (row, choice) in enumerate(zip(rows, choices)):
            step = Step(
                index=row.index,
                context=self.decode(row.ids),
                top=tuple(TokenProb(self.token_text(t), t, p) for t, p in zip(choice.top_ids, choice.top_probs)),
                chosen=TokenProb(self.token_text(choice.chosen_id), choice.chosen_id, choice.chosen_prob),
                chosen_rank=choice.chosen_rank,
                entropy=choice.entropy,
            )
            row.ids.append(choice.chosen_id)
            row.pending = choice.chosen_id
            reason = None
            if choice.chosen_id in self.eos_ids:
                reason = FinishReason.EOS
            elif row.index >= row.spec.params.steps or 0 < len(row.spec.forced_next) <= row.index:
                reason = FinishReason.LENGTH
            forced = row.index <= len(row.spec.forced_next)
            row.index += 1
            if reason is None:
                keep.append(i)
            results.append(StepResult(row.spec.key, step, reason, self.decode(row.ids) if reason else None, forced))
        if len(keep) != len(rows):
            self._keep_rows(keep)
        return results

    def text_of(self, key: str) -> str:
        """Current text of a sequence in the batch ("" when it is not there)."""
        return next((self.decode(r.ids) for r in self._rows if r.spec.key == key), "")

    def decode(self, ids: list[int]) -> str:
        """Text of a token sequence, special tokens left out."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """Text of one token, memoised (students see each candidate as text)."""
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.tokenizer.decode([token_id])
        return text

    # -- cache management ------------------------------------------------------------------

    def _decode(self) -> torch.Tensor:
        """Feed each row its pending token; returns (B, V) next-token logits."""
        width = self._cache.get_seq_length()
        pads = torch.tensor([r.pad for r in self._rows], device=self.device)
        columns = torch.arange(width + 1, device=self.device)
        attention_mask = (columns[None, :] >= pads[:, None]).long()  # (B, T + 1), 0 on left padding
        position_ids = (width - pads)[:, None]  # (B, 1): real tokens before the new one
        input_ids = torch.tensor([[r.pending] for r in self._rows], device=self.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=self._cache,
            use_cache=True,
        )
        return out.logits[:, -1, :]

    def _prefill(self, specs: list[SequenceSpec]) -> torch.Tensor:
        """Run new sequences' contexts in one left-padded forward, splice them into the batch; returns (n, V)."""
        longest = max(len(spec.ids) for spec in specs)
        rows = [_Row(spec=spec, ids=list(spec.ids), index=spec.first_index, pad=longest - len(spec.ids))
                for spec in specs]
        input_ids = torch.tensor([[0] * r.pad + r.ids for r in rows], device=self.device)
        attention_mask = torch.tensor([[0] * r.pad + [1] * len(r.ids) for r in rows], device=self.device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # each row counts from its first real token
        cache = DynamicCache()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, logits_to_keep=1)
        _check_dynamic(cache)
        if any(r.pad for r in rows):  # padding slots hold junk; zero them so they can never leak through a mask
            keep = attention_mask[:, None, :, None].to(cache.layers[0].keys.dtype)
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys * keep, layer.values * keep
        self._splice(rows, cache)
        return out.logits[:, -1, :]

    def _splice(self, rows: list[_Row], cache: DynamicCache) -> None:
        """Append new rows (and their cache) to the batch, left-padding whichever cache is shorter."""
        if not self._rows:
            self._cache, self._rows = cache, rows
            return
        width, length = self._cache.get_seq_length(), cache.get_seq_length()
        for r in self._rows:
            r.pad += max(length - width, 0)
        for r in rows:
            r.pad += max(width - length, 0)
        for main, new in zip(self._cache.layers, cache.layers):
            main.keys = torch.cat([_left_pad(main.keys, length - width), _left_pad(new.keys, width - length)])
            main.values = torch.cat([_left_pad(main.values, length - width), _left_pad(new.values, width - length)])
        self._rows.extend(rows)

    def _keep_rows(self, keep: list[int]) -> None:
        """Keep only the rows at `keep`, then drop left columns that are padding in every row."""
        self._rows = [self._rows[i] for i in keep]
        if not self._rows:
            self._cache = None
            return
        index = torch.tensor(keep, device=self.device)
        trim = min(r.pad for r in self._rows)
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, trim:]
            layer.values = layer.values.index_select(0, index)[:, :, trim:]
        for r in self._rows:
            r.pad -= trim


def _forced(row: _Row) -> int:
    """The token this row must take at its next step, or -1 to choose one."""
    forced = row.spec.forced_next
    return forced[row.index - 1] if row.index <= len(forced) else -1


def _left_pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """Pad (B, H, T, D) with n zero columns on the left of T (no-op for n <= 0)."""
    return F.pad(x, (0, 0, n, 0)) if n > 0 else x


def _check_dynamic(cache: DynamicCache) -> None:
    if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
        raise NotImplementedError("batching supports full-attention caches only (no sliding-window layers)")
