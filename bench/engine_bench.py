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


def host_us_per_row(tokenizer, rows: int = 256, vocab: int = 128256, context: int = 200, steps: int = 50) -> float:
    """Microseconds of BatchEngine.step host work per row-step: a free forward, sampling replaced by ready results.

    Runs on one torch thread: the few tiny tensor ops left (inputs, masks) only lose to thread wake-ups on more.
    """
    from unittest import mock

    from engine.batch import BatchEngine

    k = 10
    model = FreeLogits(rows, vocab, context + steps + 8)
    gen = torch.Generator().manual_seed(0)
    text_vocab = len(tokenizer)
    packed = torch.zeros(rows, 2 * k + 5, dtype=torch.float64)  # what the device would send back: k probs, k ids, ...
    packed[:, :k] = torch.rand(rows, k, generator=gen).sort(descending=True).values
    packed[:, k:2 * k] = torch.randint(0, text_vocab, (rows, k), generator=gen).double()
    packed[:, 2 * k] = torch.randint(0, text_vocab, (rows,), generator=gen).double()
    packed[:, 2 * k + 1:2 * k + 4] = torch.tensor([0.1, 3.0, 2.5], dtype=torch.float64)
    batch = BatchEngine(model, tokenizer, max_batch=rows, max_length=context + steps + 8, cache="static", graphs=False)
    batch.eos_ids = frozenset()
    for i in range(rows):
        ids = torch.randint(0, text_vocab, (context,), generator=gen).tolist()
        params = GenerationParams(steps=steps, top_k=k, temperature=0.0 if i % 2 == 0 else 0.8, seed=i)
        batch.add(SequenceSpec(str(i), ids, params))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with mock.patch("engine.batch.pack_choices", lambda logits, *args: packed[: logits.shape[0]]):
        batch.step()  # admission (prefill) is not a decode step
        start = time.perf_counter()
        for _ in range(steps - 2):
            batch.step()
        elapsed = time.perf_counter() - start
    torch.set_num_threads(threads)
    return elapsed / (steps - 2) / rows * 1e6
