"""End to end through a real Redis, a real Celery worker with the tiny model, and the web over HTTP."""
from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.integration


def test_job_runs_to_done_with_every_step(live_stack):
    created = live_stack.submit(prompt="The cat sat", steps=4, top_k=10)
    assert created["status"] == "queued"
    job = live_stack.wait_done(created["id"])
    assert job["status"] == "done", job
    assert [s["index"] for s in job["steps"]] == [1, 2, 3, 4]
    assert all(len(s["top"]) == 10 for s in job["steps"])
    assert job["finish_reason"] == "length"
    assert job["text"].startswith("The cat sat")


def test_steps_are_written_one_at_a_time_while_the_job_runs(paced_stack):
    created = paced_stack.submit(prompt="Once upon a time", steps=150, top_k=3)  # at least 7.5 s on the paced worker
    seen_counts = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = paced_stack.job(created["id"])
        seen_counts.append((job["status"], job["steps_done"]))
        if job["status"] == "done":
            break
        time.sleep(0.02)
    running = {n for status, n in seen_counts if status == "running"}
    # the poller saw the job running with several different partial step counts strictly between 0 and 150
    assert len({n for n in running if 0 < n < 150}) >= 3, seen_counts[:50]


def test_health_reports_worker_and_model(live_stack):
    body = requests.get(f"{live_stack.url}/api/health", timeout=10).json()
    assert body["redis"] == "ok"
    assert body["workers"] and body["workers"][0]["model"] == body["default_model"]
