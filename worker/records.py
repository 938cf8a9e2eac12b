"""StepEncoder: a step result to the JSON record the store keeps, built from per-token fragments.

The record is the API's step without `context` (the store keeps the context edit beside it).
Each token's `{"token": ..., "id": ...` prefix is built once per token id and reused, so a step
costs a few string joins instead of a json.dumps of nested objects.
"""
from __future__ import annotations

import json
from typing import Callable

from contract.store import StepWrite, context_edit
from engine.batch import StepResult


class StepEncoder:
    """Encodes step results; `token_text` gives a token id's display text."""

    def __init__(self, token_text: Callable[[int], str]) -> None:
        self.token_text = token_text
        self._fragments: dict[int, str] = {}

    def fragment(self, token_id: int) -> str:
        """'{"token":"<text>","id":<id>,"prob":' for one token, memoised."""
        piece = self._fragments.get(token_id)
        if piece is None:
            text = json.dumps(self.token_text(token_id), ensure_ascii=False)
            piece = self._fragments[token_id] = f'{{"token":{text},"id":{token_id},"prob":'
        return piece

    def record(self, r: StepResult, computed_at: float) -> str:
        """The step's JSON record (index, top, chosen with rank, entropy, computed_at, forced when set)."""
        fragment = self.fragment
        top = ",".join([fragment(t) + repr(p) + "}" for t, p in zip(r.top_ids, r.top_probs)])
        forced = ',"forced":true' if r.forced else ""
        return (f'{{"index":{r.index},"top":[{top}],"chosen":{fragment(r.chosen_id)}{r.chosen_prob!r},'
                f'"rank":{r.chosen_rank}}},"entropy":{r.entropy!r},"computed_at":{computed_at!r}{forced}}}')

    def write(self, r: StepResult, fence: int, computed_at: float) -> StepWrite:
        """The store write for one result of the attempt holding `fence`."""
        keep, tail = r.context_edit
        return StepWrite(r.key, fence, r.index, self.record(r, computed_at), context_edit(keep, tail))
