"""CUDA graphs of the decode step, one per batch-size bucket, turned on only after a self-check.

The captured step is the whole device side of a decode: the forward over slots 0..b-1, the
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


Step = Callable[[int], tuple]  # bucket b -> (packed (b, W), logits (b, V)) device tensors, from the staged inputs


class GraphRunner(Protocol):
    """Runs the decode step of bucket b from the staged inputs: `launch` starts it, `wait` returns its packed
    (b, W) host tensor, which the next launch of that bucket overwrites.

    `logits[b]` is the (b, V) device tensor that bucket's last run wrote its logits to.
    """

    logits: dict[int, torch.Tensor]

    def launch(self, b: int) -> None: ...

    def wait(self, b: int) -> torch.Tensor: ...


def buckets(slots: int) -> list[int]:
    """Batch sizes that get a graph: powers of two below `slots`, and `slots`."""
    out, b = [], 1
    while b < slots:
        out.append(b)
        b *= 2
    return out + [slots]


def bucket_for(n: int, sizes: list[int]) -> int:
    """The smallest bucket holding n rows."""
    return next(b for b in sizes if b >= n)


class CudaGraphs:
    """One captured CUDAGraph per bucket, sharing one memory pool; results land in pinned host buffers."""

    def __init__(self, step: Step, sizes: list[int], width: int) -> None:
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.host: dict[int, torch.Tensor] = {}
        self.logits: dict[int, torch.Tensor] = {}  # each graph's own output buffer, rewritten by every replay
        self.done = torch.cuda.Event()
        pool = None
        for b in sorted(sizes, reverse=True):  # largest first: smaller graphs reuse its pool
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up off the capture (lazy inits, autotuning)
                for _ in range(2):
                    step(b)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            host = torch.empty((b, width), dtype=torch.float64, pin_memory=True)
            with torch.cuda.graph(graph, pool=pool):
                packed, self.logits[b] = step(b)
                host.copy_(packed, non_blocking=True)
            pool = graph.pool()
            self.graphs[b], self.host[b] = graph, host

    def launch(self, b: int) -> None:
        """Replay bucket b; its results reach pinned memory while the host goes on."""
        self.graphs[b].replay()
        self.done.record()

    def wait(self, b: int) -> torch.Tensor:
        """Bucket b's results, once the replay launched last has put them in pinned memory."""
        self.done.synchronize()
        return self.host[b]


def device_error(device: torch.device) -> str | None:
    """Why `device` can run no more work, or None. A device-side assert poisons a CUDA context for good."""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(device)
    except Exception as exc:  # the sticky error of an earlier kernel surfaces here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def self_check(runner: GraphRunner, eager: Step, stage: Callable[[int, int], None], sizes: list[int],
               k: int) -> str | None:
    """Replay every bucket twice on staged test inputs and compare with the eager step; None if all agree, else why.

    `stage(b, trial)` writes test inputs for bucket b; `eager(b)` runs the same step without a graph.
    """
    for b in sizes:
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
