"""CUDA graphs of the decode step, one per bucket, turned on only after a self-check.

A bucket is (rows, keys): the decode of slots 0..rows-1 attending to key positions 0..keys-1. Rows
are powers of two up to MAX_BATCH; keys are powers of two from 64 up to the slot length, so jobs
with short contexts read a short slice of the KV cache, not the whole slot (on an H200, the full
stack's 256 jobs got a step every 12.6 ms when each decode attended to all 1,224 positions of a
worker's slots, and every 6.7 ms with key buckets).

The captured step is the whole device side of a decode: the forward over those slots, the
choice (engine.sampling.pack_choices_fixed, keyed by the same (seed, step) uniforms) and the
packing into one tensor, copied without blocking into pinned host memory. Before any job runs,
`self_check` replays each bucket on test inputs and compares it with the same step run eagerly;
any difference or error keeps the engine eager, and says why, unless the error left the GPU
unusable (a device-side assert does): then nothing can run on it and the engine stops with that
error. A graph that was never checked never serves a step.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch


Bucket = tuple[int, int]  # (rows b, keys w)
Step = Callable[[Bucket], tuple]  # (b, w) -> (packed (b, W), logits (b, V)) device tensors, from the staged inputs

SHORTEST_KEYS = 64  # the smallest key bucket


class GraphRunner(Protocol):
    """Runs the decode step of bucket (b, w) from the staged inputs: `launch` starts it, `wait` returns its
    packed (b, W) host tensor, which the next launch of that bucket overwrites.

    `logits[bucket]` is the (b, V) device tensor that bucket's last run wrote its logits to.
    """

    logits: dict[Bucket, torch.Tensor]

    def launch(self, bucket: Bucket) -> None: ...

    def wait(self, bucket: Bucket) -> torch.Tensor: ...


def buckets(limit: int, smallest: int = 1) -> list[int]:
    """Sizes that get a graph: powers of two from `smallest` below `limit`, and `limit`."""
    out, b = [], smallest
    while b < limit:
        out.append(b)
        b *= 2
    return out + [limit]


def bucket_for(n: int, sizes: list[int]) -> int:
    """The smallest bucket holding n."""
    return next(b for b in sizes if b >= n)


class CudaGraphs:
    """One captured CUDAGraph per bucket, sharing one memory pool; results land in pinned host buffers."""

    def __init__(self, step: Step, grid: list[Bucket], width: int) -> None:
        self.graphs: dict[Bucket, torch.cuda.CUDAGraph] = {}
        self.host: dict[Bucket, torch.Tensor] = {}
        self.logits: dict[Bucket, torch.Tensor] = {}  # each graph's own output buffer, rewritten by every replay
        self.done = torch.cuda.Event()
        pool = None
        for bucket in sorted(grid, reverse=True):  # largest first: smaller graphs reuse its pool
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up off the capture (lazy inits, autotuning)
                for _ in range(2):
                    step(bucket)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            host = torch.empty((bucket[0], width), dtype=torch.float64, pin_memory=True)
            with torch.cuda.graph(graph, pool=pool):
                packed, self.logits[bucket] = step(bucket)
                host.copy_(packed, non_blocking=True)
            pool = graph.pool()
            self.graphs[bucket], self.host[bucket] = graph, host

    def launch(self, bucket: Bucket) -> None:
        """Replay a bucket's graph; its results reach pinned memory while the host goes on."""
        self.graphs[bucket].replay()
        self.done.record()

    def wait(self, bucket: Bucket) -> torch.Tensor:
        """A bucket's results, once the replay launched last has put them in pinned memory."""
        self.done.synchronize()
        return self.host[bucket]


def device_error(device: torch.device) -> str | None:
    """Why `device` can run no more work, or None. A device-side assert poisons a CUDA context for good."""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(device)
    except Exception as exc:  # the sticky error of an earlier kernel surfaces here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def self_check(runner: GraphRunner, eager: Step, stage: Callable[[Bucket, int], None], grid: list[Bucket],
               k: int) -> str | None:
    """Replay every bucket twice on staged test inputs and compare with the eager step; None if all agree, else why.

    `stage(bucket, trial)` writes test inputs for a bucket; `eager(bucket)` runs the same step without a graph.
    """
    for b in grid:
        for trial in range(2):
            stage(b, trial)
            want = eager(b)[0].cpu()
            runner.launch(b)
            got = runner.wait(b).clone()
            if got.shape != want.shape:
                return f"bucket {b}: graph gave shape {tuple(got.shape)}, eager {tuple(want.shape)}"
            if not torch.equal(got[:, k:2 * k], want[:, k:2 * k]) or not torch.equal(got[:, 2 * k], want[:, 2 * k]):
                return f"bucket {b}: graph chose different tokens than the eager step"
            if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                worst = (got - want).abs().max().item()
                return f"bucket {b}: graph probabilities differ from the eager step by {worst:.3g}"
    return None
