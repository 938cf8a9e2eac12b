"""Full-stack GPU check: Redis, one GPU worker and the web, then 256 concurrent jobs end to end.

    bash bench/gpu_stack.sh                      on a machine with a GPU (see that script)
    python -m bench.gpu_stack --smoke            anywhere: CPU, a tiny model, a few jobs

The worker holds a random-weight model shaped like Llama-3.2-1B in bf16 (bench.models: built
and saved locally, nothing is downloaded). Every client has its own session, submits at the
same moment as the others and polls its job like the job page does. Prints end-to-end steps/s
(every stored step over the time from the first submit to the last job done) and the p50/p95
time to first step (submit until the client sees step 1). The steps' own `computed_at`
separate the worker from the web: the worker's rate (steps over the span in which it computed
them), the time from submit until step 1 was computed, p95 from computed to seen in a poll, and
the gaps between a job's consecutive steps (p50: a plain batch step; the tail: steps that stalled,
e.g. while other jobs' prefills ran).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
import torch

from bench.load import percentile
from bench.models import LLAMA_32_1B, TINY, random_model
from contract.jobs import TERMINAL
from contract.settings import Settings
from stack.redis_server import RedisServer
from stack.harness import LiveStack


@dataclass
class JobTiming:
    """What one client saw: times to first step (seen, computed) and to done, steps, status, step computed times."""

    first_step: float
    first_computed: float
    done: float
    steps: int
    status: str
    computed: list[float]  # each step's computed_at (wall clock)
    visible: list[float]  # each step: computed -> seen in a poll (s)


def run_client(url: str, body: dict, start: threading.Barrier, poll: float, timeout: float) -> JobTiming:
    """Submit one job when every client is ready, then poll it (only new steps) until it ends."""
    session = requests.Session()
    session.trust_env = False
    try:
        session.get(f"{url}/", timeout=30)  # like a browser: the form page gives the session its id
    except requests.RequestException:
        start.abort()  # nobody waits for a client that cannot start
        raise
    start.wait()
    begin, submitted = time.perf_counter(), time.time()
    job_id = session.post(f"{url}/api/jobs", json=body, timeout=30).json()["id"]
    first = None
    seen = 0
    computed, visible = [], []
    while time.perf_counter() - begin < timeout:
        job = session.get(f"{url}/api/jobs/{job_id}", params={"since": seen}, timeout=30).json()
        now = time.time()
        seen = job["steps_done"]
        new = [step["computed_at"] for step in job["steps"] if "computed_at" in step]
        computed += new
        visible += [now - at for at in new]
        if first is None and seen >= 1:
            first = time.perf_counter() - begin
        if job["status"] in TERMINAL:
            first_computed = computed[0] - submitted if computed else float("nan")
            return JobTiming(first or float("nan"), first_computed, time.perf_counter() - begin, seen, job["status"],
                             computed, visible)
        time.sleep(poll if first is None else poll * 5)
    raise TimeoutError(f"job {job_id} did not finish within {timeout} s")


def drive(stack: LiveStack, jobs: int, steps: int, poll: float, timeout: float) -> dict:
    """One burst of `jobs` concurrent clients, each given `timeout` s; the figures as a dict.

    Raises:
        RuntimeError: no client could start, or none finished (the first client's error says why).
    """
    bodies = [{"prompt": f"Student {i} asks the model to continue the story of the cat that sat on the mat",
               "steps": steps, "top_k": 10, "temperature": 0.8, "seed": i} for i in range(jobs)]
    start = threading.Barrier(jobs + 1, timeout=min(120.0, timeout))
    timings, errors = [], []
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_client, stack.url, body, start, poll, timeout) for body in bodies]
        try:
            start.wait()
        except threading.BrokenBarrierError:
            pass  # a client failed to start: its error is collected below
        began = time.perf_counter()
        for future in futures:
            try:
                timings.append(future.result())
            except Exception as exc:  # noqa: BLE001 - one client's failure is counted, the others still measured
                errors.append(f"{type(exc).__name__}: {exc}")
    wall = time.perf_counter() - began
    if not timings:
        raise RuntimeError(f"no client finished; the first error: {errors[0] if errors else 'none'}")
    firsts = [t.first_step for t in timings if t.steps]
    total = sum(t.steps for t in timings)
    computed = [at for t in timings for at in t.computed]
    span = max(computed) - min(computed) if len(computed) > 1 else float("nan")
    gaps = [1000 * (b - a) for t in timings for a, b in zip(t.computed, t.computed[1:])]
    return {
        "jobs": jobs,
        "done": sum(t.status == "done" for t in timings),
        "client_errors": len(errors),
        "first_client_error": errors[0] if errors else None,
        "steps": total,
        "wall_s": round(wall, 2),
        "steps_per_s": round(total / wall, 1),
        "ttfs_p50_s": round(percentile(firsts, 50), 3),
        "ttfs_p95_s": round(percentile(firsts, 95), 3),
        "worker_steps_per_s": round(len(computed) / span, 1),
        "first_computed_p50_s": round(percentile([t.first_computed for t in timings if t.steps], 50), 3),
        "first_computed_p95_s": round(percentile([t.first_computed for t in timings if t.steps], 95), 3),
        "computed_to_seen_p95_s": round(percentile([v for t in timings for v in t.visible], 95), 3),
        "step_gap_p50_ms": round(percentile(gaps, 50), 2),
        "step_gap_p99_ms": round(percentile(gaps, 99), 2),
        "step_gap_max_ms": round(max(gaps, default=float("nan")), 2),
        "job_p95_s": round(percentile([t.done for t in timings], 95), 3),
    }


def _print_log_tails(folder: Path, lines: int = 60) -> None:
    """The last lines of every process log of the stack, on stderr."""
    for log in sorted(folder.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- last {len(tail)} lines of {log.name} ---", *tail, sep="\n", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Build the model, start the stack, warm up with one job, drive the burst, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, 16 jobs of 8 steps")
    parser.add_argument("--jobs", type=int, help="concurrent clients, one job each (default 256; smoke 16)")
    parser.add_argument("--steps", type=int, help="steps per job (default 64; smoke 8)")
    parser.add_argument("--poll", type=float, default=0.1, help="client poll period until the first step (s)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds for the worker to start, and for each job (a device call's limit is 600)")
    args = parser.parse_args(argv)
    device = "cpu" if args.smoke else "cuda"
    jobs = args.jobs or (16 if args.smoke else 256)
    steps = args.steps or (8 if args.smoke else 64)
    shape = TINY if args.smoke else LLAMA_32_1B
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device visible; use --smoke to run on the CPU")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `timeout` still stops the stack (finally below)
    work = Path(tempfile.mkdtemp(prefix="gpu-stack-"))
    began = time.perf_counter()
    model_dir = random_model(work / ("tiny-llama" if args.smoke else "llama-3.2-1b-shape"), shape,
                             torch.bfloat16 if device == "cuda" else torch.float32, device)
    print(f"model built in {time.perf_counter() - began:.1f} s: {model_dir}", flush=True)
    server = RedisServer(work / "redis").start()
    settings = Settings(
        redis_url=server.url, model_name=str(model_dir), device=device, data_dir=str(work / "data"),
        secret_key="gpu-stack", web_workers=4, max_batch=jobs, max_steps=max(200, steps),
        max_queued_jobs=jobs * 4, max_active_jobs_per_client=jobs, heartbeat_seconds=2,
        rate_limit="1000000 per minute", ip_rate_limit="1000000 per minute",
    )
    (work / "logs").mkdir()
    stack = LiveStack(settings, work / "logs")
    try:
        stack.start_web()
        stack.start_worker("gpu1")
        stack.wait_for_workers(1, timeout=args.timeout)
        warm = stack.submit(prompt="The cat sat", steps=4)
        assert stack.wait_done(warm["id"], timeout=args.timeout)["status"] == "done", "warm-up job failed"
        figures = drive(stack, jobs, steps, args.poll, args.timeout)
    except BaseException:
        _print_log_tails(work / "logs")  # a device run brings back its output, not this machine's files
        raise
    finally:
        stack.stop()
        server.stop()
        shutil.rmtree(model_dir)
        shutil.rmtree(work / "redis", ignore_errors=True)
    figures |= {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "model": "random Llama-3.2-1B shape, bf16" if device == "cuda" else "tiny random Llama, fp32",
                "steps_per_job": steps, "logs": str(work / "logs")}
    print(json.dumps(figures, indent=2))
    if figures["client_errors"]:
        print(f"{figures['client_errors']} clients failed; the first: {figures['first_client_error']}")
    print(f"\n{figures['done']}/{jobs} jobs done: {figures['steps_per_s']} steps/s end to end, "
          f"time to first step p50 {figures['ttfs_p50_s']} s, p95 {figures['ttfs_p95_s']} s ({figures['device']})")
    print(f"worker: {figures['worker_steps_per_s']} steps/s while it computed; step 1 computed p50 "
          f"{figures['first_computed_p50_s']} s, p95 {figures['first_computed_p95_s']} s after submit; "
          f"computed -> seen in a poll p95 {figures['computed_to_seen_p95_s']} s")
    print(f"a job's consecutive steps: {figures['step_gap_p50_ms']} ms apart at p50, {figures['step_gap_p99_ms']} ms "
          f"at p99, {figures['step_gap_max_ms']} ms at most")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0 if figures["done"] == jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
