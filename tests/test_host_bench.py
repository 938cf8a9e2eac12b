"""`python -m bench --host` runs end to end on a small batch (its figures are not checked: speed is the bench's job)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
import redis
from transformers import AutoTokenizer

from bench.host_bench import host_work, report
from contract.jobs import GenerationParams, JobRequest
from contract.settings import DEMO_MODEL_PATH, PROJECT_ROOT
from contract.store import JobStore
from stack.redis_server import RedisServer


def test_the_host_bench_stores_every_step_and_prints_its_lines(tmp_path):
    figures = host_work(AutoTokenizer.from_pretrained(str(DEMO_MODEL_PATH)), tmp_path / "redis", rows=8, context=20,
                        steps=5)  # raises unless the runner stored every step of every job
    lines = report(figures, rows=8).splitlines()
    assert lines[0].startswith("host work per job-step at 8 jobs: ") and lines[0].endswith(" us")
    assert len(figures["runs"]) == 3 and figures["total"] == sorted(figures["runs"])[1]
    assert [line.split(":")[0].strip() for line in lines[2:]] == ["engine step", "encode records", "Redis write"]


def test_importing_the_bench_entry_point_starts_no_benchmark():
    """Only `python -m bench` runs it; an import (a test, a script reusing a helper) gets the module alone."""
    out = subprocess.run([sys.executable, "-c", "import bench.__main__"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "Benchmark" not in out


def test_the_host_bench_starts_on_an_empty_server_whatever_earlier_runs_left(tmp_path):
    """`python -m bench --host` keeps its server's directory between runs; what an earlier run left there (jobs,
    their AOF) must not count: here ten unfinished jobs of one bench owner, which had made the next run fail."""
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    store = JobStore(client, ttl_seconds=600)
    for i in range(10):
        store.create(f"left-{i}", JobRequest("bench", GenerationParams(steps=5)), owner="o0", model="bench",
                     queue="bench", seed=i, max_queued=100, max_active=10, active_window=600)
    client.close()
    server.stop()
    figures = host_work(AutoTokenizer.from_pretrained(str(DEMO_MODEL_PATH)), tmp_path / "redis", rows=8, context=20,
                        steps=5)
    assert len(figures["runs"]) == 3


STACK_BENCH = """
from bench.__main__ import stop_on_hangup
from bench.stack_bench import run_stack
from contract.settings import DEMO_MODEL_PATH
stop_on_hangup()
run_stack(str(DEMO_MODEL_PATH), [1], 120, steps=4)
"""


@pytest.mark.integration  # starts a web, a worker and Redis
def test_a_bench_stopped_by_sigterm_or_a_closed_terminal_leaves_no_process_behind():
    """SIGTERM (or SIGHUP, the terminal closed) killed `make bench` at once: its web, worker and Redis lived on."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        bench = subprocess.Popen([sys.executable, "-c", STACK_BENCH], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        started = psutil.Process(bench.pid)
        children: list[psutil.Process] = []
        try:
            deadline = time.monotonic() + 120
            while not any("celery" in " ".join(c.cmdline()) for c in started.children(recursive=True)):
                assert bench.poll() is None and time.monotonic() < deadline, "the bench's worker never started"
                time.sleep(0.2)
            children = started.children(recursive=True)
            bench.send_signal(signum)
            bench.wait(timeout=90)
            _, alive = psutil.wait_procs(children, timeout=30)
            assert alive == [], [" ".join(p.cmdline()) for p in alive]
        finally:  # whatever happened, this test leaves nothing running
            for process in [started, *children]:
                try:
                    process.kill()
                except psutil.Error:
                    pass
