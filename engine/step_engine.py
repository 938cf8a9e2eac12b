"""StepEngine: a loaded model and its tokenizer, and the predict -> append -> predict loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from contract.jobs import GenerationParams
from engine.batch import BatchEngine, SequenceSpec, StepResult


@dataclass
class StepEngine:
    """The model side of the service, free of Celery, Redis and Flask.

    Attributes:
        model: a Hugging Face causal LM in eval mode.
        tokenizer: its tokenizer (with a pad token).
        name: the model's id as clients see it.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str = "model"

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return next(self.model.parameters()).device

    @property
    def max_positions(self) -> int | None:
        """Longest context the model accepts, when its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding: every token id the model can take (may exceed the tokenizer's)."""
        return self.model.get_input_embeddings().num_embeddings

    def tokenize(self, prompt: str) -> list[int]:
        """Token ids of a prompt, with the tokenizer's special tokens (e.g. BOS) as the model expects."""
        return list(self.tokenizer(prompt)["input_ids"])

    def pieces(self, ids: list[int]) -> list[dict[str, object]]:
        """Each token id with its text, for showing students what a token is."""
        return [{"id": i, "token": self.tokenizer.decode([i])} for i in ids]

    def batch(self, max_batch: int) -> BatchEngine:
        """A fresh batch for stepping many sequences together."""
        return BatchEngine(self.model, self.tokenizer, max_batch=max_batch)

    def steps(
        self, prompt: str, params: GenerationParams, forced_ids: tuple[int, ...] = ()
    ) -> Iterator[StepResult]:
        """Generate from `prompt` one step at a time; the last result carries finish_reason and text.

        A missing seed is taken as 0, so a call is reproducible.
        """
        if params.seed is None:
            params = GenerationParams(**(params.to_dict() | {"seed": 0}))
        batch = self.batch(1)
        batch.add(SequenceSpec("job", self.tokenize(prompt) + list(forced_ids), params))
        while len(batch):
            yield from batch.step()
