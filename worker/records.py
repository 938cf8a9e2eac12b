"""StepEncoder: a batch step's results to store writes, cut from the device's packed rows at once.

Each record is the row's numbers in the layout of contract.steprecord, built for all rows of a
part with a few array operations: no text is formatted per step. Token texts are published once
per token id into the model's vocabulary table, the first time a record mentions the id.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from contract.steprecord import FORCED, HEAD
from contract.store import StepWrite, context_edit
from engine.batch import StepResult


class StepEncoder:
    """Encodes step results; `token_text` gives a token id's display text, ids are below `vocab_size`."""

    def __init__(self, token_text: Callable[[int], str], vocab_size: int) -> None:
        self.token_text = token_text
        self.published = np.zeros(vocab_size, dtype=bool)
        self.published_count = 0

    def writes(self, items: list[tuple[int, StepResult]], computed_at: float) -> tuple[list[StepWrite], dict[int, str]]:
        """Store writes for (fence, result) pairs, in order, and the token texts not published yet."""
        writes: list[StepWrite] = []
        texts: dict[int, str] = {}
        start = 0
        while start < len(items):  # results of one part share one packed array: encode them together
            packed = items[start][1].packed
            end = start + 1
            while end < len(items) and items[end][1].packed is packed:
                end += 1
            writes += self._part(items[start:end], computed_at, texts)
            start = end
        return writes, texts

    def forget_published(self) -> None:
        """The vocabulary table was lost (Redis restarted empty): publish every text again as it is met."""
        self.published[:] = False
        self.published_count = 0

    def _part(self, items: list[tuple[int, StepResult]], computed_at: float, texts: dict[int, str]) -> list[StepWrite]:
        results = [r for _, r in items]
        first = results[0]
        k = first.k
        rows = first.packed[[r.row for r in results]]  # (n, 2k + 5)
        shown = np.array([r.shown for r in results])
        records = np.empty((len(results), HEAD + 2 * k))
        records[:, 0] = shown
        records[:, 1] = [FORCED if r.forced else 0 for r in results]
        records[:, 2] = computed_at
        records[:, 3:7] = rows[:, 2 * k:2 * k + 4]  # chosen id, its prob, its rank, entropy
        records[:, HEAD::2] = rows[:, :k]  # probabilities
        records[:, HEAD + 1::2] = rows[:, k:2 * k]  # ids
        widths = (HEAD + 2 * shown) * 8
        if (shown == k).all():
            blob = records.tobytes()
        else:  # rows showing fewer candidates keep only theirs
            blob = records[np.arange(HEAD + 2 * k)[None, :] < (HEAD + 2 * shown)[:, None]].tobytes()
        self._collect_texts(rows[:, k:2 * k + 1], texts)
        out, offset = [], 0
        for (fence, r), width in zip(items, widths.tolist()):
            keep, tail = r.context_edit
            out.append(StepWrite(r.key, fence, r.index, blob[offset:offset + width], context_edit(keep, tail)))
            offset += width
        return out

    def _collect_texts(self, ids: np.ndarray, texts: dict[int, str]) -> None:
        """Add the texts of ids not published yet (candidates and chosen) to `texts`, and mark them published."""
        unique = np.unique(ids.astype(np.int64))
        new = unique[~self.published[unique]]
        if new.size:
            self.published[new] = True
            self.published_count += int(new.size)
            for token_id in new.tolist():
                texts[token_id] = self.token_text(token_id)
