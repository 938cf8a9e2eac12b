"""StepEncoder: a step result to the JSON record the store keeps, built from per-token fragments.

The record is the API's step without `context` (the store keeps the context edit beside it).
Each token's `{"token": ..., "id": ...` prefix is built once per token id and reused, so a step
costs a few string joins instead of a json.dumps of nested objects.
"""
from __future__ import annotations

from json.encoder import encode_basestring
from typing import Callable

from contract.store import StepWrite, context_edit
from engine.batch import StepResult


class _Fragments(dict):
    """token id -> '{"token":"<text>","id":<id>,"prob":', built on first use."""

    def __init__(self, token_text: Callable[[int], str]) -> None:
        super().__init__()
        self.token_text = token_text

    def __missing__(self, token_id: int) -> str:
        piece = self[token_id] = f'{{"token":{encode_basestring(self.token_text(token_id))},"id":{token_id},"prob":'
        return piece


class StepEncoder:
    """Encodes step results; `token_text` gives a token id's display text."""

    def __init__(self, token_text: Callable[[int], str]) -> None:
        self.fragments = _Fragments(token_text)

    def record(self, r: StepResult, computed_at: str) -> str:
        """The step's JSON record (index, top, chosen with rank, entropy, computed_at, forced when set)."""
        fragments = self.fragments
        top = ",".join([f"{fragments[t]}{p!r}}}" for t, p in zip(r.top_ids, r.top_probs)])
        forced = ',"forced":true' if r.forced else ""
        return (f'{{"index":{r.index},"top":[{top}],"chosen":{fragments[r.chosen_id]}{r.chosen_prob!r},'
                f'"rank":{r.chosen_rank}}},"entropy":{r.entropy!r},"computed_at":{computed_at}{forced}}}')

    def write(self, r: StepResult, fence: int, computed_at: str) -> StepWrite:
        """The store write for one result of the attempt holding `fence`; `computed_at` is a JSON number."""
        keep, tail = r.context_edit
        return StepWrite(r.key, fence, r.index, self.record(r, computed_at), context_edit(keep, tail))
