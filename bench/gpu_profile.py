"""Where a decode step's device time goes: the model's forward and the choice, kernel by kernel (torch profiler).

    python -m bench.gpu_profile                      on a machine with CUDA (bench/gpu.sh runs it)
    python -m bench.gpu_profile --tiny --device cpu  anywhere: a tiny shape, to check the script itself

For each batch size: the summed kernel time of one forward over the slots (at the slot length a
graph uses) and of one fixed-shape choice (engine.sampling.pack_choices_fixed), then the kernels
that take most of it. Compare the sum with the graph step's ms/step from bench.gpu_engine: what
is left over is time the device sat idle.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bench.gpu_engine import build
from bench.models import LLAMA_32_1B, TINY
from engine.sampling import pack_choices_fixed

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


if __name__ == "__main__":
    main()
