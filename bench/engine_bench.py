"""Engine alone: the notebook loop vs the project's step engine, and batched throughput."""
from __future__ import annotations

import time

import torch

from contract.jobs import GenerationParams
from engine.batch import SequenceSpec

from engine.sampling import choose
from engine.step_engine import StepEngine
from bench.notebook import notebook_loop

PROMPT = "The cat sat"


def ms_per_step_notebook(engine: StepEngine, steps: int) -> float:
    """Notebook loop, greedy, `steps` steps: milliseconds per step."""
    start = time.perf_counter()
    notebook_loop(engine.model, engine.tokenizer, PROMPT, steps)
    return (time.perf_counter() - start) * 1000 / steps


def prompt_ids(engine: StepEngine, n: int) -> list[list[int]]:
    """`n` short prompts of a few lengths ("The cat sat", "The cat sat and then", ...), tokenized."""
    return [engine.tokenize(f"{PROMPT} {'and then ' * (i % 4)}".strip()) for i in range(n)]


def aggregate_steps_per_second(engine: StepEngine, jobs: int, steps: int) -> float:
    """`jobs` concurrent jobs stepped together (mixed greedy and sampled): total steps per second."""
    batch = engine.batch(max_batch=max(jobs, 1))
    batch.eos_ids = frozenset()  # random-weight models: every job runs its full length
    for i, ids in enumerate(prompt_ids(engine, jobs)):
        params = GenerationParams(steps=steps, top_k=10, temperature=0.0 if i % 2 == 0 else 0.8, seed=i)
        batch.add(SequenceSpec(str(i), ids, params))
    done = 0
    start = time.perf_counter()
    while len(batch):
        done += len(batch.step())
    return done / (time.perf_counter() - start)


def overhead_ms(engine: StepEngine, rows: int = 32) -> dict[str, float]:
    """Per-step cost outside the model for `rows` jobs: softmax/top-k/sampling + one host transfer."""
    vocab = engine.model.config.vocab_size
    logits = torch.randn(rows, vocab, device=engine.device)
    figures = {}
    for label, top_p in (("choose", 1.0), ("choose_nucleus", 0.9)):  # half the rows greedy, half sampled
        args = dict(temperature=[0.0, 0.8] * (rows // 2), top_p=[top_p] * rows, uniform=[0.5] * rows,
                    top_k=[10] * rows)
        choose(logits, **args)
        start = time.perf_counter()
        for _ in range(20):
            choose(logits, **args)
        figures[label] = (time.perf_counter() - start) * 1000 / 20
    return figures


class FreeLogits(torch.nn.Module):
    """A stand-in causal LM whose forward costs nothing: it returns a slice of logits made once.

    For timing the engine's own host work (BatchEngine.step without the model and without sampling).
    """

    def __init__(self, rows: int, vocab: int, positions: int) -> None:
        super().__init__()
        from transformers import GenerationConfig, PretrainedConfig

        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = PretrainedConfig(vocab_size=vocab, num_hidden_layers=1, max_position_embeddings=positions)
        self.config._attn_implementation = "sdpa"
        self.generation_config = GenerationConfig()
        self.logits = torch.zeros(rows, 1, vocab)

    def forward(self, input_ids, **_):
        return type("Out", (), {"logits": self.logits[: input_ids.shape[0]]})()
