"""Host work per job-step: everything a worker does around the model, at 256 jobs, on real Redis.

A stand-in model returns logits at no cost and sampling hands back ready results, so what is left
is the worker's own work: admitting and finishing the jobs, the engine's per-row bookkeeping,
encoding each step's record, and the fenced Redis write of the whole batch step (real server,
really claimed jobs). Token texts are tables made once, as a worker makes them at boot. Measured
twice: through the real BatchRunner and its StepWriter (the headline: wall time per job-step, each
write stored by Redis while the next step is computed), and stage by stage (the split, decode steps only).
"""
from __future__ import annotations

import gc
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import redis
import torch

from bench.engine_bench import FreeLogits
from contract.jobs import GenerationParams, JobRequest
from contract.store import JobStore
from engine.batch import BatchEngine, SequenceSpec
from engine.sampling import six_digits
from engine.text import Decoder
from stack.redis_server import RedisServer
from worker.handle import JobHandle
from worker.records import StepEncoder
from worker.runtime import prepare_collector
from worker.runner import BatchRunner

TOP_K = 10
RUNS = 3  # through the runner: this machine's speed wanders by up to 2x, so the median of three is reported


@contextmanager
def free_sampling(rows: int, vocab: int):
    """Sampling replaced by ready results (what the device would send back), so only host work is timed."""
    gen = torch.Generator().manual_seed(0)
    packed = torch.zeros(rows, 2 * TOP_K + 5, dtype=torch.float64)
    probs = torch.rand(rows, TOP_K, generator=gen, dtype=torch.float64).sort(descending=True).values
    packed[:, :TOP_K] = six_digits(probs)  # reported probabilities are rounded on the device
    packed[:, TOP_K:2 * TOP_K] = torch.randint(0, vocab, (rows, TOP_K), generator=gen).double()
    packed[:, 2 * TOP_K] = torch.randint(0, vocab, (rows,), generator=gen).double()
    packed[:, 2 * TOP_K + 1:2 * TOP_K + 4] = torch.tensor([0.123457, 3.0, 2.51234], dtype=torch.float64)  # as reported
    with mock.patch("engine.batch.pack_choices", lambda logits, *args: packed[: logits.shape[0]]):
        yield


def _jobs(store: JobStore, tokenizer, rows: int, context: int, steps: int) -> list[tuple[str, int, SequenceSpec]]:
    """`rows` jobs created and claimed in Redis: (job id, fence, spec with a `context`-token prompt)."""
    gen = torch.Generator().manual_seed(1)
    jobs = []
    for i in range(rows):
        job_id = f"host-bench-{i:04d}-{time.monotonic_ns()}"
        params = GenerationParams(steps=steps, top_k=TOP_K, temperature=0.0 if i % 2 == 0 else 0.8, seed=i)
        store.create(job_id, JobRequest("bench", params), owner=f"o{i}", model="bench", queue="bench", seed=i,
                     max_queued=10 * rows, max_active=10, active_window=600)
        fence = store.claim(job_id, "bench-worker", "bench", max_queue_age=600).fence
        ids = torch.randint(0, len(tokenizer), (context,), generator=gen).tolist()
        jobs.append((job_id, fence, SequenceSpec(job_id, ids, params)))
    return jobs


def _batch(decoder: Decoder, rows: int, positions: int) -> BatchEngine:
    batch = BatchEngine(FreeLogits(rows, 128256, positions), decoder.tokenizer, max_batch=rows, max_length=positions,
                        cache="static", graphs=False, decoder=decoder)
    batch.eos_ids = frozenset()
    return batch


def host_work(tokenizer, redis_dir: Path, rows: int = 256, context: int = 200, steps: int = 40) -> dict:
    """Microseconds per job-step: `total` through the real runner (median of `runs`), then each stage alone.

    `redis_dir` is the bench's own server's: it starts empty, since jobs an earlier run left there would grow
    its dataset and AOF from run to run and fill the bench owners' caps.
    """
    shutil.rmtree(redis_dir, ignore_errors=True)
    server = RedisServer(redis_dir).start()
    client = redis.Redis.from_url(server.url)
    store = JobStore(client, ttl_seconds=600)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the few tiny tensor ops left only lose to thread wake-ups on more
    decoder = Decoder(tokenizer)  # a worker's, shared by its batches: token texts are tables made once, at boot
    decoder.candidates()
    collector = gc.get_threshold()
    prepare_collector(rows)  # as a worker does once its model is loaded
    try:
        with free_sampling(rows, len(tokenizer)):
            runs = sorted(_through_the_runner(store, decoder, rows, context, steps) for _ in range(RUNS))
            figures = {"total": runs[len(runs) // 2], "runs": runs}
            figures.update(_stage_by_stage(store, decoder, rows, context, steps))
    finally:
        gc.set_threshold(*collector)
        torch.set_num_threads(threads)
        client.close()
        server.stop()
    return figures


def _through_the_runner(store: JobStore, decoder: Decoder, rows: int, context: int, steps: int) -> float:
    jobs = _jobs(store, decoder.tokenizer, rows, context, steps)
    batch = _batch(decoder, rows, context + steps + 8)
    runner = BatchRunner(lambda size: batch, store, worker="bench-worker", model="bench", max_batch=rows,
                         on_fatal=print)
    records = {job_id: store.get(job_id) for job_id, _, _ in jobs}  # a worker reads each job before running it
    handles = [JobHandle(job_id, fence, spec, time.monotonic() + 3600, owner=records[job_id].owner,
                         address=records[job_id].extra.get("address", "")) for job_id, fence, spec in jobs]
    runner.start()
    start = time.perf_counter()
    for handle in handles:
        runner.submit(handle)
    for handle in handles:
        handle.wait(600)
    elapsed = time.perf_counter() - start
    runner.stop()
    runner.join(10)
    done = sum(store.get(job_id).steps_done for job_id, _, _ in jobs)
    if done != rows * steps:
        raise RuntimeError(f"the runner stored {done} of {rows * steps} steps")
    return elapsed / done * 1e6


def _stage_by_stage(store: JobStore, decoder: Decoder, rows: int, context: int, steps: int) -> dict[str, float]:
    jobs = _jobs(store, decoder.tokenizer, rows, context, steps)
    fences = {job_id: fence for job_id, fence, _ in jobs}
    batch = _batch(decoder, rows, context + steps + 8)
    for _, _, spec in jobs:
        batch.add(spec)
    encoder = StepEncoder(batch.token_text, decoder.candidates(), batch.vocab_size)
    store.add_texts("bench", encoder.whole_vocabulary())
    spent = {"engine step": 0.0, "encode records": 0.0, "Redis write": 0.0}
    count = 0
    for _ in range(steps):
        t0 = time.perf_counter()
        results = batch.step()
        t1 = time.perf_counter()
        writes, texts = encoder.writes([fences[r.key] for r in results], results, t1)
        t2 = time.perf_counter()
        store.append_steps(writes, "bench", texts)
        t3 = time.perf_counter()
        if results and results[0].index > 1:  # the first step includes admission (prefill): not a decode step
            spent["engine step"] += t1 - t0
            spent["encode records"] += t2 - t1
            spent["Redis write"] += t3 - t2
            count += len(results)
    return {name: seconds / count * 1e6 for name, seconds in spent.items()}


def report(figures: dict, rows: int = 256) -> str:
    """The headline line (the median run) and the split per stage."""
    runs = ", ".join(f"{r:.1f}" for r in figures["runs"])
    lines = [f"host work per job-step at {rows} jobs: {figures['total']:.1f} us",
             f"  through the batch runner, median of {len(figures['runs'])} runs ({runs} us)"]
    lines += [f"  {name}: {figures[name]:.1f} us (stage alone, one thread)"
              for name in ("engine step", "encode records", "Redis write")]
    return "\n".join(lines)
