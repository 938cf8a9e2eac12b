"""StepEncoder: a batch step's results to store writes, cut from the device's packed rows at once.

Each record is the row's numbers in the layout of contract.steprecord, built for all rows of a
part with a few array operations: no text is formatted per step. Token texts go to the model's
vocabulary table once: the tokenizer's whole table before the first step, and any id past it
the first time a record mentions it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from contract.steprecord import FORCED, HEAD
from contract.store import StepWrites, checkpoint_before, context_edit
from engine.batch import StepResult


class StepEncoder:
    """Encodes step results.

    Args:
        token_text: a token id's display text.
        vocabulary: the texts of ids 0..n-1 (the tokenizer's), published all at once by `whole_vocabulary`.
        vocab_size: every id a step can show is below it (a model may have more ids than its tokenizer).
    """

    def __init__(self, token_text: Callable[[int], str], vocabulary: Sequence[str], vocab_size: int) -> None:
        self.token_text = token_text
        self.vocabulary = vocabulary
        self.published = np.zeros(max(vocab_size, len(vocabulary)), dtype=bool)
        self.published_count = 0

    def whole_vocabulary(self) -> dict[int, str]:
        """Every text of the vocabulary, marked published: what a writer sends before its first step."""
        self.published[:len(self.vocabulary)] = True
        self.published_count = int(self.published.sum())
        return dict(enumerate(self.vocabulary))

    def writes(self, fences: list[int], results: list[StepResult],
               computed_at: float) -> tuple[StepWrites, dict[int, str]]:
        """Store writes for results (each with its attempt's fence), in order, and the token texts not published yet."""
        texts: dict[int, str] = {}
        blobs: list[bytes] = []
        widths: list[int] = []
        start = 0
        while start < len(results):  # results of one part share one packed array: encode them together
            packed = results[start].packed
            end = start + 1
            while end < len(results) and results[end].packed is packed:
                end += 1
            blob, part_widths = self._part(results[start:end], computed_at, texts)
            blobs.append(blob)
            widths += part_widths
            start = end
        # a checkpoint step stores its whole context, so reads need no edit before it (contract.store)
        edits = [context_edit(0, r.context) if checkpoint_before(r.index) == r.index else context_edit(*r.context_edit)
                 for r in results]
        return StepWrites([r.key for r in results], fences, [r.index for r in results], widths, b"".join(blobs),
                          edits), texts

    def forget_published(self) -> None:
        """The vocabulary table was lost (Redis restarted empty): publish every text again as it is met."""
        self.published[:] = False
        self.published_count = 0

    def _part(self, results: list[StepResult], computed_at: float, texts: dict[int, str]) -> tuple[bytes, list[int]]:
        """The records of one part's results back to back, and the length of each."""
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
        if (shown == k).all():
            blob = records.tobytes()
        else:  # rows showing fewer candidates keep only theirs
            blob = records[np.arange(HEAD + 2 * k)[None, :] < (HEAD + 2 * shown)[:, None]].tobytes()
        ids = rows[:, k:2 * k + 1]  # candidates and the chosen one
        if ids.max() >= len(self.vocabulary):  # ids past the tokenizer's (rare): their texts go when first met
            self._collect_texts(ids, texts)
        return blob, ((HEAD + 2 * shown) * 8).tolist()

    def _collect_texts(self, ids: np.ndarray, texts: dict[int, str]) -> None:
        """Add the texts of ids not published yet to `texts`, and mark them published."""
        unique = np.unique(ids.astype(np.int64))
        new = unique[~self.published[unique]]
        if new.size:
            self.published[new] = True
            self.published_count += int(new.size)
            for token_id in new.tolist():
                texts[token_id] = self.token_text(token_id)
