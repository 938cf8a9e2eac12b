"""`python -m bench`: one table, notebook loop as the baseline, ratios from the same run.

Options: --quick (fewer steps, for a smoke run), --skip-stack, --gpu (the GPU section, on a machine with CUDA),
--host (only the host work per job-step at 256 jobs).
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
from pathlib import Path

import torch

from bench.engine_bench import aggregate_steps_per_second, ms_per_step_notebook, overhead_ms
from bench.host_bench import host_work, report
from bench.models import LLAMA_32_1B, SMALL_135M, random_model
from contract.settings import DEMO_MODEL_PATH
from engine.loading import load_engine, set_cpu_threads


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def engine_section(models: dict[str, str], device: str, steps: int, batch_steps: int, concurrency: list[int]) -> str:
    rows, overhead_rows = [], []
    for label, path in models.items():
        engine = load_engine(path, device)
        params = sum(p.numel() for p in engine.model.parameters()) / 1e6
        notebook = ms_per_step_notebook(engine, steps)
        one = 1000 / aggregate_steps_per_second(engine, 1, steps)
        rows.append([f"{label} ({params:.0f} M)", f"notebook loop, 1 job, {steps} steps", f"{notebook:.1f} ms/step",
                     f"{1000 / notebook:.1f}", "1.0x (baseline)"])
        rows.append([f"{label} ({params:.0f} M)", f"project engine, 1 job, {steps} steps", f"{one:.1f} ms/step",
                     f"{1000 / one:.1f}", f"{notebook / one:.1f}x vs notebook"])
        base = None
        for n in concurrency:
            rate = aggregate_steps_per_second(engine, n, batch_steps)
            base = base or rate
            rows.append([f"{label} ({params:.0f} M)", f"project engine, {n} concurrent jobs, {batch_steps} steps",
                         f"{1000 / rate * n:.1f} ms/step", f"{rate:.0f}", f"{rate / base:.1f}x vs 1 job"])
        cost = overhead_ms(engine)
        overhead_rows.append([label, f"{cost['choose']:.2f}", f"{cost['choose_nucleus']:.2f}"])
        del engine
    out = table(["model", "loop", "time", "steps/s", "ratio"], rows)
    out += "\n\nPer-step cost outside the model, 32 jobs in the batch (ms per step):\n\n"
    out += table(["model", "softmax + top-k + entropy + sampling + 1 host transfer (top_p 1)",
                  "same with top_p 0.9 on random logits (flat: full sort)"],
                 overhead_rows)
    return out


def host_report(tokenizer, work: Path) -> str:
    """`host work per job-step at 256 jobs: N us` and its split, on a Redis of its own."""
    return report(host_work(tokenizer, work / "host-redis"))


def stop_on_hangup() -> None:
    """SIGTERM or SIGHUP (the terminal closed) exit through the `finally`s that stop a bench's web, worker and Redis."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _: sys.exit(128 + number))


def main() -> None:
    stop_on_hangup()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and a shorter load run")
    parser.add_argument("--skip-stack", action="store_true", help="no end-to-end stack: the engine and host sections only")
    parser.add_argument("--gpu", action="store_true", help="GPU section: Llama-3.2-1B shape, bf16")
    parser.add_argument("--host", action="store_true", help="only the host work per job-step at 256 jobs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = set_cpu_threads(0 if args.gpu else (os.cpu_count() or 1))
    work = Path(tempfile.gettempdir()) / "autoregress-bench"
    print(f"# Benchmark on {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {threads} torch threads"
          + (f", {torch.cuda.get_device_name()}" if args.gpu else ""), flush=True)

    if args.host:
        from transformers import AutoTokenizer

        print(host_report(AutoTokenizer.from_pretrained(str(DEMO_MODEL_PATH)), work), flush=True)
        return

    if args.gpu:
        model = random_model(work / "llama-3.2-1b-random", LLAMA_32_1B, torch.bfloat16)
        print("\n## GPU: step engine, Llama-3.2-1B shape (random weights), bf16\n", flush=True)
        print(engine_section({"Llama-3.2-1B shape": str(model)}, "cuda", 128, 128, [1, 64, 256]))
        return
    steps = 32 if args.quick else 128
    models = {"demo model": str(DEMO_MODEL_PATH), "random 135M": str(random_model(work / "random-135m", SMALL_135M))}
    print("\n## Engine alone, CPU (fp32)\n", flush=True)
    print(engine_section(models, "cpu", steps, 16 if args.quick else 32, [1, 8, 32]), flush=True)
    demo = load_engine(str(DEMO_MODEL_PATH), "cpu")
    print("\n## Host work per job-step (stand-in model at no cost, 128k-wide logits, sampling excluded)\n", flush=True)
    print(host_report(demo.tokenizer, work), flush=True)
    if not args.skip_stack:
        from bench.stack_bench import run_stack  # needs psutil and the test helpers: CPU runs only

        duration = 10 if args.quick else 30
        print(f"\n## End to end: web + Redis + 1 Celery worker (demo model), {duration} s of simulated students\n",
              flush=True)
        rows = run_stack(str(DEMO_MODEL_PATH), [1, 32], duration, steps=32)
        rows += run_stack(str(DEMO_MODEL_PATH), [128], duration, steps=48, max_batch=128, temperature=0.8)
        rows += run_stack(str(DEMO_MODEL_PATH), [256], duration, steps=48, max_batch=256, temperature=0.8)
        keys = list(rows[0])
        print(table(["figure"] + [f"{r['students']} students" for r in rows], [[k] + [r[k] for r in rows] for k in keys]))


if __name__ == "__main__":  # importing this module (a test, a script) must not start a benchmark
    main()
