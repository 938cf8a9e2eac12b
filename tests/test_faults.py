"""Faults against real processes: killed workers, duplicate deliveries, a poison job, a Redis crash.

This module runs its own Redis server and workers (it kills and restarts them), with short
heartbeats so that a dead worker's jobs are re-queued within seconds.
"""
from __future__ import annotations

import itertools
import os
import signal
import time

import pytest
import requests
from celery import Celery

from contract.settings import Settings
from contract.store import JobStore
from contract.tasks import GENERATE_TASK, celery_config, model_id, queue_for_model
from stack.redis_server import RedisServer
from stack.harness import LiveStack
from tests.tiny_model import build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_replacements = itertools.count(1)
JOB = dict(prompt="Once upon a time", steps=200, top_k=5, temperature=0.9, seed=42)


@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("fault-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_stack(fault_redis, tmp_path_factory):
    # a fatter tiny model (slower steps), so a job is reliably caught in the middle
    model = build_tiny_model(tmp_path_factory.mktemp("fault-model") / "tiny", hidden=192, layers=6)
    settings = Settings(
        redis_url=fault_redis.url, model_name=str(model), device="cpu",
        data_dir=str(tmp_path_factory.mktemp("fault-data")), secret_key="fault-secret",
        web_workers=1, max_batch=8, heartbeat_seconds=1, max_attempts=3,
        job_deadline_seconds=120, max_queue_age_seconds=120, visibility_timeout_seconds=600,
        rate_limit="100000 per minute", ip_rate_limit="100000 per minute", max_active_jobs_per_client=1000,
        max_active_jobs_per_address=1000,
    )
    stack = LiveStack(settings, tmp_path_factory.mktemp("fault-logs"))
    stack.start_web()
    stack.start_worker("f1")
    stack.start_worker("f2")
    stack.wait_for_workers(2)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def reference(fault_stack):
    """The same job run without interruption (long enough to be interrupted in the middle)."""
    job = fault_stack.wait_done(fault_stack.submit(**JOB)["id"], timeout=120)
    assert len(job["steps"]) >= 20
    return job


def store_of(stack: LiveStack) -> JobStore:
    return JobStore(stack.redis)


def freeze_worker_running(stack: LiveStack, job_id: str, min_steps: int = 3, timeout: float = 60) -> str:
    """Wait until `job_id` runs with some steps stored, SIGSTOP its worker at once, and return the worker's name."""
    store = store_of(stack)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job.status.value == "running" and job.steps_done >= min_steps:
            name = job.worker.split("@")[0]
            os.killpg(stack.workers[name].pid, signal.SIGSTOP)
            return name
        time.sleep(0.005)
    raise TimeoutError(f"job {job_id} never ran: {store.get(job_id)}")


def assert_same_steps(job: dict, reference: dict) -> None:
    assert job["status"] == "done", job["error"]
    assert [s["index"] for s in job["steps"]] == list(range(1, len(reference["steps"]) + 1))
    assert job["finish_reason"] == reference["finish_reason"]
    assert [s["chosen"]["id"] for s in job["steps"]] == [s["chosen"]["id"] for s in reference["steps"]]
    for got, want in zip(job["steps"], reference["steps"]):
        assert got["chosen"]["prob"] == pytest.approx(want["chosen"]["prob"], abs=1e-3)
    assert job["text"] == reference["text"]


def replace_worker(stack: LiveStack, killed: str) -> None:
    stack.start_worker(f"{killed}r{next(_replacements)}")
    stack.wait_for_workers(2)


def test_killed_worker_mid_job_resumes_on_the_other_worker(fault_stack, reference):
    job_id = fault_stack.submit(**JOB)["id"]
    victim = freeze_worker_running(fault_stack, job_id)
    stored_before_kill = store_of(fault_stack).get(job_id).steps_done
    fault_stack.kill_worker(victim)
    job = fault_stack.wait_done(job_id, timeout=120)
    assert 0 < stored_before_kill < len(reference["steps"])
    assert_same_steps(job, reference)
    assert job["attempt"] == 2
    replace_worker(fault_stack, victim)


def test_same_job_delivered_twice_at_once_gives_one_consistent_result(fault_stack, reference):
    job_id = fault_stack.submit(**JOB)["id"]
    producer = Celery("test-producer", set_as_current=False)
    producer.conf.update(celery_config(fault_stack.settings))
    producer.send_task(GENERATE_TASK, args=[job_id], queue=queue_for_model(model_id(fault_stack.settings.model_name)))
    job = fault_stack.wait_done(job_id, timeout=120)
    assert_same_steps(job, reference)
    assert job["attempt"] in (1, 2)  # 2 when both deliveries overlapped: the later fenced out the earlier


def test_job_that_kills_its_worker_every_time_is_failed_after_the_cap(fault_stack):
    job_id = fault_stack.submit(prompt="The cat sat", steps=200, top_k=5)["id"]  # greedy: long, no early stop
    kills = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = store_of(fault_stack).get(job_id)
        if job.terminal:
            break
        victim = job.worker.split("@")[0]
        if job.status.value == "running" and victim in fault_stack.workers:
            os.killpg(fault_stack.workers[victim].pid, signal.SIGSTOP)
            fault_stack.kill_worker(victim)
            kills += 1
            fault_stack.start_worker(f"{victim}r{next(_replacements)}")  # keep two workers; don't wait for it
        time.sleep(0.005)
    job = fault_stack.job(job_id)
    assert job["status"] == "failed", job
    assert "gave up after 3 failed attempts" in job["error"]
    assert kills == 3
    assert job["finish_reason"] is None
    fault_stack.wait_for_workers(2)


def test_sigterm_lets_running_jobs_finish(fault_stack, reference):
    job_id = fault_stack.submit(**JOB)["id"]
    victim = freeze_worker_running(fault_stack, job_id)
    process = fault_stack.workers.pop(victim)
    os.killpg(process.pid, signal.SIGTERM)
    os.killpg(process.pid, signal.SIGCONT)
    assert process.wait(timeout=120) == 0
    job = fault_stack.job(job_id)
    assert_same_steps(job, reference)
    assert job["attempt"] == 1  # finished by the worker that was told to stop, not re-run
    replace_worker(fault_stack, victim)


def test_redis_crash_loses_no_finished_or_queued_job_and_everything_recovers(fault_stack, fault_redis):
    finished = fault_stack.wait_done(fault_stack.submit(prompt="The sun is", steps=6)["id"])
    for process in fault_stack.workers.values():  # nobody consumes while we queue a job
        os.killpg(process.pid, signal.SIGSTOP)
    queued_id = fault_stack.submit(prompt="I want to", steps=6)["id"]
    time.sleep(2.0)  # appendfsync everysec: give the AOF its second
    fault_redis.kill()
    try:
        down = requests.get(f"{fault_stack.url}/api/jobs/{finished['id']}", timeout=10)
        assert down.status_code == 503 and down.headers["Retry-After"]
        assert down.json()["error"]["code"] == "unavailable"
        post = requests.post(f"{fault_stack.url}/api/jobs", json={"prompt": "x"}, timeout=10)
        assert post.status_code == 503
    finally:
        fault_redis.start()
        for process in fault_stack.workers.values():
            os.killpg(process.pid, signal.SIGCONT)

    again = fault_stack.job(finished["id"])
    assert again["status"] == "done" and again["steps"] == finished["steps"] and again["text"] == finished["text"]
    assert fault_stack.job(queued_id)["status"] in ("queued", "running", "done")
    assert fault_stack.wait_done(queued_id, timeout=120)["status"] == "done"
    fresh = fault_stack.submit(prompt="She opened the", steps=4)["id"]
    assert fault_stack.wait_done(fresh, timeout=120)["status"] == "done"


def test_a_redis_restart_while_jobs_run_leaves_every_worker_serving(fault_stack, fault_redis, reference):
    """Celery closes its broken broker connection after a loss; with a job running (an unacked message) the
    pinned kombu crashed there and the worker shut down. Every worker must survive and take new jobs."""
    running = fault_stack.submit(**JOB)["id"]
    store = store_of(fault_stack)
    deadline = time.monotonic() + 60
    while not (store.get(running).status.value == "running" and store.get(running).steps_done >= 3):
        assert time.monotonic() < deadline, store.get(running)
        time.sleep(0.01)
    fault_redis.kill()
    time.sleep(2.0)
    fault_redis.start()

    assert_same_steps(fault_stack.wait_done(running, timeout=120), reference)
    fresh = [fault_stack.submit(prompt="She opened the", steps=4)["id"] for _ in range(4)]
    for job_id in fresh:
        assert fault_stack.wait_done(job_id, timeout=120)["status"] == "done"
    assert {name: process.poll() for name, process in fault_stack.workers.items()} == {
        name: None for name in fault_stack.workers}


def test_worker_killed_during_a_submission_burst_loses_no_job(fault_stack):
    import threading

    ids: list[str] = []
    submitter = threading.Thread(target=lambda: ids.extend(
        fault_stack.submit(prompt=f"Burst {i}", steps=30, top_k=3)["id"] for i in range(40)))
    submitter.start()
    while len(ids) < 12:
        time.sleep(0.01)
    victim = sorted(fault_stack.workers)[0]
    fault_stack.kill_worker(victim)  # messages popped but not yet recorded or claimed die with it
    submitter.join()
    fault_stack.start_worker(f"{victim}r{next(_replacements)}")
    jobs = [fault_stack.wait_done(job_id, timeout=180) for job_id in ids]
    assert [j["status"] for j in jobs] == ["done"] * 40, {j["id"]: j["error"] for j in jobs if j["error"]}
    for job in jobs:
        assert [s["index"] for s in job["steps"]] == list(range(1, len(job["steps"]) + 1))
    fault_stack.wait_for_workers(2)


def test_cancelling_a_running_job_stops_it_before_its_next_step(fault_stack):
    owner = requests.Session()
    job_id = fault_stack.submit(owner, prompt="The cat sat", steps=200, top_k=3)["id"]
    victim = freeze_worker_running(fault_stack, job_id)
    try:
        answer = owner.delete(f"{fault_stack.url}/api/jobs/{job_id}", timeout=10)
        assert answer.status_code == 202 and answer.json()["cancel"] == "cancelling"
    finally:
        os.killpg(fault_stack.workers[victim].pid, signal.SIGCONT)
    job = fault_stack.wait_done(job_id, timeout=60)
    assert job["status"] == "cancelled" and job["finish_reason"] == "cancelled"
    assert 0 < job["steps_done"] < 200
    assert [s["index"] for s in job["steps"]] == list(range(1, job["steps_done"] + 1))
