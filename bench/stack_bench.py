"""End to end: Redis, a Celery worker with the demo model, the web under gunicorn, and simulated students."""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import psutil

from bench.load import run_load
from contract.settings import Settings
from stack.redis_server import RedisServer
from stack.harness import LiveStack


def _peak_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    process = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]))
        except psutil.Error:
            break
        stop.wait(0.2)
    out.append(peak / 2**20)


def run_stack(model: str, students: list[int], duration: float, steps: int, *, max_batch: int = 32,
              temperature: float | None = None) -> list[dict[str, float]]:
    """For each student count: steps and jobs per second, latencies and the worker's peak resident memory (MiB)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis").start()
        settings = Settings(redis_url=redis_server.url, model_name=model, device="cpu", data_dir=tmp,
                            secret_key="bench", max_batch=max_batch, rate_limit="1000000 per minute",
                            ip_rate_limit="1000000 per minute", max_active_jobs_per_client=100000,
                            max_active_jobs_per_address=100000)
        stack = LiveStack(settings, Path(tmp))
        try:
            stack.start_web()
            worker = stack.start_worker("bench")
            stack.wait_for_workers(1)
            for n in students:
                stop, peak = threading.Event(), []
                sampler = threading.Thread(target=_peak_rss, args=(worker.pid, stop, peak))
                sampler.start()
                report = run_load(stack.url, students=n, duration=duration, steps=steps, poll_interval=0.3,
                                  temperature=temperature)
                stop.set()
                sampler.join()
                rows.append(report.summary() | {"worker peak RSS (MiB)": round(peak[0], 1),
                                                "steps per job": steps, "MAX_BATCH": max_batch})
        finally:
            stack.stop()
            redis_server.stop()
    return rows
