"""StepEngine: a loaded model and its tokenizer, and the predict -> append -> predict loop."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import torch

from contract.jobs import GenerationParams
from engine.batch import BatchEngine, SequenceSpec, StepResult, pick_cache
from engine.attention import prefer_attention_kernels
from engine.head import use_fp32_head
from engine.text import Decoder

log = logging.getLogger(__name__)


@dataclass
class StepEngine:
    """The model side of the service, free of Celery, Redis and Flask.

    Attributes:
        model: a Hugging Face causal LM in eval mode.
        tokenizer: its tokenizer (with a pad token).
        name: the model's id as clients see it.
        fingerprint: what its files are (engine.fingerprint), "" when not loaded from files.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str = "model"
    fingerprint: str = ""
    _cache_kind: str | None = field(default=None, repr=False)
    _decoder: Decoder | None = field(default=None, repr=False)
    logits: str = field(default="", init=False)  # how the logits are made (engine.head), said at load

    def __post_init__(self) -> None:
        # a half-precision model's logits come out in fp32 where the device can (engine.head)
        self.logits = use_fp32_head(self.model)
        log.info("%s: %s", self.name, self.logits)
        log.info("%s: %s", self.name, prefer_attention_kernels(self.device))

    @property
    def cache_kind(self) -> str:
        """"static" (slot KV cache) or "padded" (left-padded fallback), probed once and logged."""
        if self._cache_kind is None:
            self._cache_kind, why = pick_cache(self.model)
            log.info("%s: batch cache %s (%s)", self.name, self._cache_kind, why)
        return self._cache_kind

    @property
    def decoder(self) -> Decoder:
        """The tokenizer's decode, incremental where that is exact (checked once)."""
        if self._decoder is None:
            self._decoder = Decoder(self.tokenizer)
        return self._decoder

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
        """Token ids of a prompt, with the tokenizer's special tokens (e.g. BOS) as the model expects; special-token
        text typed in the prompt ("<|endoftext|>") is read as text, never as the control token."""
        return list(self.tokenizer(prompt, split_special_tokens=True)["input_ids"])

    def pieces(self, ids: list[int]) -> list[dict[str, object]]:
        """Each token id with its text, for showing students what a token is."""
        return [{"id": i, "token": self.decoder.candidate(i)} for i in ids]

    def batch(self, max_batch: int, max_length: int | None = None, graphs=None,
              cache_kind: str | None = None, max_top_k: int = 50) -> BatchEngine:
        """A fresh batch for stepping many sequences together.

        Args:
            max_batch: most sequences at once (slots).
            max_length: longest context + steps a sequence may reach (e.g. MAX_PROMPT_TOKENS + MAX_STEPS);
                default: the model's positions, at most 2048.
            graphs: see BatchEngine (None: CUDA graphs on CUDA, after their self-check).
            cache_kind: "static" or "padded" to override the choice made at load.
            max_top_k: most candidates a step may report (MAX_TOP_K).
        """
        return BatchEngine(self.model, self.tokenizer, max_batch=max_batch, max_length=max_length,
                           cache=cache_kind or self.cache_kind, graphs=graphs, decoder=self.decoder,
                           max_top_k=max_top_k)

    def steps(
        self, prompt: str, params: GenerationParams, forced_ids: tuple[int, ...] = ()
    ) -> Iterator[StepResult]:
        """Generate from `prompt` (then `forced_ids`) one step at a time; the last result carries finish_reason and text.

        A missing seed is taken as 0, so a call is reproducible. Draws continue after the forced ids, as a worker's.
        """
        if params.seed is None:
            params = GenerationParams(**(params.to_dict() | {"seed": 0}))
        batch = self.batch(1)
        batch.add(SequenceSpec("job", self.tokenize(prompt) + list(forced_ids), params, draw_offset=len(forced_ids)))
        while len(batch):
            yield from batch.step()
