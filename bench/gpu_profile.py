"""Where a decode step's device time goes: the model's forward and the choice, kernel by kernel (torch profiler).

    python -m bench.gpu_profile                      on a machine with CUDA (bench/gpu.sh runs it)
    python -m bench.gpu_profile --tiny --device cpu  anywhere: a tiny shape, to check the script itself

For each batch size: the summed kernel time of one forward over the slots (at the slot length a
graph uses) and of one fixed-shape choice (engine.sampling.pack_choices_fixed), then the kernels
that take most of it. Compare the sum with the graph step's ms/step from bench.gpu_engine: what
is left over is time the device sat idle.

Then the eager step on the host (what a prefill of joining jobs and a graph-less worker run): the
engine's eager step against a plain Hugging Face cached forward of the same model and batch (one
token, greedy to the host), the host waits for the device in one engine step, and the operators
that take the host's time.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import DynamicCache

from bench.engine_bench import prompt_ids
from bench.gpu_engine import build
from bench.models import LLAMA_32_1B, TINY
from contract.jobs import GenerationParams
from engine.batch import SequenceSpec
from engine.sampling import pack_choices_fixed
from engine.step_engine import StepEngine

REPEATS = 5


def kernel_times(run, device: torch.device) -> dict[str, float]:
    """Milliseconds per call of each kernel (CPU ops on a CPU) that `run()` launches, averaged over REPEATS."""
    run()  # warm-up: lazy initialisation stays out of the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(REPEATS):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if device.type == "cuda" and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        times[event.name] += event.device_time_total if device.type == "cuda" else event.self_cpu_time_total
    return {name: us / 1000 / REPEATS for name, us in times.items()}


def _ms_per_call(run, calls: int) -> float:
    run()
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return 1000 * (time.perf_counter() - start) / calls


def op_cost_us(device: torch.device, ops: int = 2000) -> float:
    """Microseconds the host spends per small operator on `device` (an in-place add on 8 numbers, `ops` in a row)."""
    x = torch.zeros(8, device=device)
    x.add_(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(ops):
        x.add_(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - start) / ops


def eager_host(engine: StepEngine, jobs: int, calls: int = 8) -> dict:
    """The eager decode step seen from the host, at `jobs` running jobs (half greedy, half sampled).

    Returns ms per engine step, ms per plain cached forward (Hugging Face's DynamicCache, one token,
    argmax to the host), the host's waits for the device in one engine step (CUDA only, None on a
    CPU), and ms of host time per step of each operator (self time).
    """
    batch = engine.batch(jobs, max_length=64 + 4 * calls, graphs=False)
    batch.eos_ids = frozenset()
    for i, ids in enumerate(prompt_ids(engine, jobs)):
        batch.add(SequenceSpec(str(i), ids, GenerationParams(steps=4 * calls, top_k=10,
                                                             temperature=0.0 if i % 2 == 0 else 0.8, seed=i)))
    batch.step()  # admission (the prefill)
    figures = {"engine": _ms_per_call(batch.step, calls)}
    waits = None
    if engine.device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")  # every host wait for the device warns once
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                batch.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        waits = sum("synchroniz" in str(w.message) for w in caught)
    figures["waits"] = waits
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            batch.step()
    ops: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        ops[event.key] += event.self_cpu_time_total / 1000 / calls
    figures["ops"] = ops
    ids = torch.tensor([prompt_ids(engine, 1)[0]] * jobs, device=engine.device)
    with torch.no_grad():
        cache = DynamicCache(config=engine.model.config)
        nxt = engine.model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)

        def plain():
            nonlocal nxt
            out = engine.model(input_ids=nxt, cache=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            nxt.tolist()  # to the host, as a step ends
        figures["plain"] = _ms_per_call(plain, calls)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny shape instead of Llama-3.2-1B (script check)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--length", type=int, default=160, help="slot length (prompt + steps), as a graph attends")
    parser.add_argument("--top", type=int, default=8, help="kernels listed per part")
    args = parser.parse_args()
    engine = build(TINY if args.tiny else LLAMA_32_1B, args.device, torch.bfloat16)
    card = torch.cuda.get_device_name() if engine.device.type == "cuda" else "CPU"
    print(f"\n## Decode step profile, {'tiny' if args.tiny else 'Llama-3.2-1B'} shape, bf16, {card}, "
          f"slot length {args.length}\n")
    for b in args.jobs:
        batch = engine.batch(b, max_length=args.length, graphs=False)
        backend, device = batch.backend, engine.device
        tokens = torch.randint(0, engine.model.config.vocab_size, (b,), device=device)
        positions = torch.full((b,), args.length // 2, device=device)
        logits = backend.decode(tokens, positions, backend.length)
        temperature = torch.tensor([0.0, 0.8] * (b // 2) + [0.8] * (b % 2), device=device)
        top_p, uniform, forced = (torch.ones(b, device=device), torch.rand(b, device=device, dtype=torch.float64),
                                  torch.full((b,), -1, device=device))
        parts = {
            "forward": kernel_times(lambda: backend.decode(tokens, positions, backend.length), device),
            "choice": kernel_times(lambda: pack_choices_fixed(logits, temperature, top_p, uniform, forced,
                                                              batch.max_top_k), device),
        }
        total = sum(sum(p.values()) for p in parts.values())
        print(f"### {b} jobs: {total:.3f} ms of kernels per step "
              + ", ".join(f"{name} {sum(p.values()):.3f} ms" for name, p in parts.items()) + "\n")
        print("| part | kernel | ms per step |\n| --- | --- | --- |")
        for name, times in parts.items():
            for kernel, ms in sorted(times.items(), key=lambda kv: -kv[1])[:args.top]:
                print(f"| {name} | {kernel[:90]} | {ms:.3f} |")
        print(flush=True)
    print("### The eager step on the host (a prefill of joining jobs runs this way)\n")
    blocking = os.environ.get("CUDA_LAUNCH_BLOCKING", "unset")
    print(f"One small operator costs the host {op_cost_us(engine.device):.1f} us on {engine.device.type} and "
          f"{op_cost_us(torch.device('cpu')):.1f} us on the CPU; CUDA_LAUNCH_BLOCKING={blocking}, "
          f"torch threads {torch.get_num_threads()}.\n")
    print("| jobs | engine eager step (ms) | plain cached forward (ms) | host waits per step "
          "| operators by host time |\n| --- | --- | --- | --- | --- |")
    for b in args.jobs:
        f = eager_host(engine, b)
        ops = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(f["ops"].items(), key=lambda kv: -kv[1])[:args.top])
        waits = "n/a (CPU)" if f["waits"] is None else f["waits"]
        print(f"| {b} | {f['engine']:.2f} | {f['plain']:.2f} | {waits} | {ops} |", flush=True)


if __name__ == "__main__":
    main()
