"""Four test hosts on one machine, in network namespaces: Redis, two workers, the web.

Host `redis` runs Redis bound to its own address; hosts `b` and `c` each run one Celery worker
(tiny model) whose REDIS_URL points at host `redis`; host `web` runs gunicorn. Clients reach the
web over the lab's bridge. 60 jobs from 12 concurrent clients spread over both worker hosts;
then, in a second round, one worker host's worker is SIGKILLed while it runs its share (every
job claimed, steps half done) and every job still completes exactly once, on the other host,
with each step stored once and in order.
"""
from __future__ import annotations

import collections
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from transformers import AutoTokenizer

from contract import keys
from contract.jobs import TERMINAL
from contract.settings import Settings
from stack.commands import web_command, worker_command
from stack.redis_server import RedisServer
from stack.harness import LiveStack
from tests.netns import NetnsLab, NetnsUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

CLIENTS, JOBS_PER_CLIENT, STEPS = 12, 5, 24
WEB_PORT = 8000
LAB_REDIS_PASSWORD = "lab-secret"  # Redis refuses password-less clients from other hosts (protected mode)


class NetnsStack(LiveStack):
    """A LiveStack whose processes run on the lab's hosts: workers on the host they are named after."""

    def __init__(self, settings: Settings, log_dir, lab: NetnsLab) -> None:
        super().__init__(settings, log_dir)
        self.lab = lab
        self.url = f"http://{lab.address('web')}:{WEB_PORT}"

    def start_web(self, timeout: float = 60.0) -> None:
        """gunicorn on host `web`, bound to that host's address; wait until it answers."""
        command = web_command(self.settings, self.lab.address("web"), WEB_PORT)
        self.web = self._spawn(self.lab.exec_prefix("web") + command, "web.log")
        deadline = time.monotonic() + timeout
        while self.web.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((self.lab.address("web"), WEB_PORT), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"web did not start on host web; see {self.log_dir / 'web.log'}")

    def start_worker(self, name: str, **extra: str):
        """A Celery worker on host `name`, with Celery hostname `name@...`."""
        command = self.lab.exec_prefix(name) + worker_command(self.settings, name)
        self.workers[name] = self._spawn(command, f"worker-{name}.log", **extra)
        return self.workers[name]


@pytest.fixture
def lab():
    """Hosts redis, b, c and web; deleted afterwards, whatever happened."""
    try:
        lab = NetnsLab.create(["redis", "b", "c", "web"])
    except (NetnsUnavailable, FileNotFoundError) as exc:
        pytest.skip(f"network namespaces are not permitted here (needs root and iproute2): {exc}")
    yield lab
    lab.close()


@pytest.fixture
def netns_stack(lab, tiny_model_dir, tmp_path):
    """Redis on host redis, workers on hosts b and c, web on host web; all stopped afterwards."""
    redis_host = lab.address("redis")
    settings = Settings(
        redis_url=f"redis://:{LAB_REDIS_PASSWORD}@{redis_host}:6379/0",
        model_name=str(tiny_model_dir),
        device="cpu",
        data_dir=str(tmp_path / "data"),
        secret_key="netns-test-secret",
        web_workers=2,
        max_batch=32,  # 2 workers x 32 slots: all 60 jobs of a round start at once
        job_deadline_seconds=40,
        max_queue_age_seconds=20,
        visibility_timeout_seconds=61,
        heartbeat_seconds=1,
        max_active_jobs_per_address=1000,  # each client's first job comes before it has a cookie
        step_pace_seconds=0.05,  # a job lasts >= 1.2 s, so one is reliably seen mid-run when the worker is killed
    )
    server = RedisServer(tmp_path / "redis", port=6379, host=redis_host, launch_prefix=lab.exec_prefix("redis"),
                         password=LAB_REDIS_PASSWORD)
    server.start()
    (tmp_path / "logs").mkdir()
    stack = NetnsStack(settings, tmp_path / "logs", lab)
    try:
        stack.start_worker("b")
        stack.start_worker("c")
        stack.start_web()
        stack.wait_for_workers(2, timeout=120)
        yield stack
    finally:
        stack.stop()
        server.stop()


def client_round(stack: NetnsStack, tag: str, started: list[str]) -> list[dict]:
    """CLIENTS concurrent clients (one session cookie each) submit JOBS_PER_CLIENT jobs and poll them to the end.

    Each job id is appended to `started` as soon as it is created. Returns the finished jobs with all steps.
    """
    lock = threading.Lock()

    def client(number: int) -> list[dict]:
        session = requests.Session()
        session.trust_env = False  # the lab's hosts are reached directly, never through a proxy
        ids = []
        for j in range(JOBS_PER_CLIENT):
            prompt = f"The cat sat {tag} {number} {j}"
            created = stack.submit(session, prompt=prompt, steps=STEPS, temperature=0.8, seed=number * 100 + j)
            ids.append(created["id"])
            with lock:
                started.append(created["id"])
        finished = {}
        deadline = time.monotonic() + 120
        while len(finished) < len(ids) and time.monotonic() < deadline:
            for job_id in set(ids) - set(finished):
                job = session.get(f"{stack.url}/api/jobs/{job_id}", timeout=10).json()
                if job["status"] in TERMINAL:
                    finished[job_id] = job
            time.sleep(0.5)
        assert len(finished) == len(ids), f"client {number}: jobs still running after 120 s"
        return [finished[i] for i in ids]

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [job for jobs in pool.map(client, range(CLIENTS)) for job in jobs]


def ran_on(stack: NetnsStack, job_ids: list[str]) -> dict[str, str]:
    """Job id -> the host whose worker ran (or finished) it, from the job hash's `worker` field."""
    pipe = stack.redis.pipeline()
    for job_id in job_ids:
        pipe.hget(keys.job_key(job_id), "worker")
    return {job_id: (w or b"?").decode().split("@")[0] for job_id, w in zip(job_ids, pipe.execute())}


def assert_each_step_once(job: dict, tokenizer) -> None:
    """Done, steps 1..N each present once, each step's context is the prompt plus the tokens chosen before it."""
    assert job["status"] == "done", job
    steps = job["steps"]
    assert [s["index"] for s in steps] == list(range(1, job["steps_done"] + 1))
    assert job["steps_done"] == STEPS or job["finish_reason"] == "eos"
    ids = [t["id"] for t in job["prompt_tokens"]]
    for step in steps:
        assert step["context"] == tokenizer.decode(ids, skip_special_tokens=True), (job["id"], step["index"])
        ids.append(step["chosen"]["id"])
    assert job["text"] == tokenizer.decode(ids, skip_special_tokens=True)


def test_jobs_spread_over_two_hosts_and_survive_a_killed_worker(netns_stack, tiny_model_dir):
    stack = netns_stack
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    total = CLIENTS * JOBS_PER_CLIENT

    # round 1: 60 jobs from 12 concurrent clients, no faults
    start = time.monotonic()
    jobs = client_round(stack, "r1", [])
    round1 = time.monotonic() - start
    assert len(jobs) == total
    for job in jobs:
        assert_each_step_once(job, tokenizer)
    spread = collections.Counter(ran_on(stack, [j["id"] for j in jobs]).values())
    assert set(spread) == {"b", "c"} and min(spread.values()) >= 5, spread

    # round 2: the same load; SIGKILL host b's worker in the middle of its jobs
    started: list[str] = []
    start = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        round2 = pool.submit(client_round, stack, "r2", started)
        victim_job = wait_for_job_mid_run(stack, started, host="b")
        stack.kill_worker("b", signal.SIGKILL)
        killed_at = time.monotonic()
        jobs = round2.result(timeout=150)
    recovered = time.monotonic() - killed_at
    round2_time = time.monotonic() - start

    assert len(jobs) == total
    for job in jobs:
        assert_each_step_once(job, tokenizer)
    hosts = ran_on(stack, [j["id"] for j in jobs])
    resumed = [j for j in jobs if j["attempt"] >= 2]
    assert hosts[victim_job] == "c"
    assert victim_job in {j["id"] for j in resumed}
    finishes = collections.Counter(i.decode() for i in stack.redis.lrange(keys.recent_jobs_key(), 0, -1))
    assert all(finishes[j["id"]] == 1 for j in jobs), "a job finished more than once"

    steps = sum(j["steps_done"] for j in jobs)
    print(f"\nmultihost round 1: {total} jobs x {STEPS} steps from {CLIENTS} clients in {round1:.1f} s, "
          f"per worker host {dict(sorted(spread.items()))}")
    print(f"multihost round 2: worker host b SIGKILLed mid-run; {len(resumed)} jobs resumed on host c; "
          f"all {total} done exactly once ({steps} steps) {recovered:.1f} s after the kill, "
          f"round time {round2_time:.1f} s")


def wait_for_job_mid_run(stack: NetnsStack, started: list[str], host: str, timeout: float = 90) -> str:
    """Once every job of the round is claimed by a worker: the id of one that `host` runs mid-way.

    Waiting for the claims keeps the kill away from the moment a worker takes a message off the
    broker list, which Celery's Redis transport does in two steps (pop, then record as unacked).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = list(started)
        pipe = stack.redis.pipeline()
        for job_id in ids:
            pipe.hmget(keys.job_key(job_id), "status", "worker")
            pipe.hlen(keys.steps_key(job_id))  # two fields per stored step
        replies = pipe.execute()
        rows = {job_id: (*replies[2 * i], replies[2 * i + 1] // 2) for i, job_id in enumerate(ids)}
        if len(ids) == CLIENTS * JOBS_PER_CLIENT and all(status != b"queued" for status, _, _ in rows.values()):
            for job_id, (status, worker, done) in rows.items():
                if status == b"running" and worker.decode().startswith(f"{host}@") and 3 <= done < STEPS:
                    return job_id
        time.sleep(0.05)
    raise AssertionError(f"no job ran on host {host} after all were claimed, within {timeout} s")
