"""Engine alone: the notebook loop vs the project's step engine, and batched throughput."""
from __future__ import annotations

import time

import torch

from contract.jobs import GenerationParams
from contract.store import JobStore, StepWrite
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


def aggregate_steps_per_second(engine: StepEngine, jobs: int, steps: int) -> float:
    """`jobs` concurrent jobs stepped together (mixed greedy and sampled): total steps per second."""
    batch = engine.batch(max_batch=max(jobs, 1))
    batch.eos_ids = frozenset()  # random-weight models: every job runs its full length
    prompts = [f"{PROMPT} {'and then ' * (i % 4)}".strip() for i in range(jobs)]
    for i, prompt in enumerate(prompts):
        params = GenerationParams(steps=steps, top_k=10, temperature=0.0 if i % 2 == 0 else 0.8, seed=i)
        batch.add(SequenceSpec(str(i), engine.tokenize(prompt), params))
    done = 0
    start = time.perf_counter()
    while len(batch):
        done += len(batch.step())
    return done / (time.perf_counter() - start)


def overhead_ms(engine: StepEngine, store: JobStore | None, rows: int = 32) -> dict[str, float]:
    """Per-step cost outside the model for `rows` jobs: softmax/top-k/sampling + one host transfer, and the Redis write."""
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
    if store is not None:
        record = {"index": 1, "context": PROMPT * 5, "top": [{"token": " on", "id": 1, "prob": 0.1}] * 10,
                  "chosen": {"token": " on", "id": 1, "prob": 0.1, "rank": 1}, "entropy": 1.0}
        writes = [StepWrite(f"bench{i}", 1, 1, record) for i in range(rows)]
        store.append_steps(writes)
        start = time.perf_counter()
        for _ in range(20):
            store.append_steps(writes)
        figures["redis"] = (time.perf_counter() - start) * 1000 / 20
    return figures
