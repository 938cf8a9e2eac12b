"""`python -m stack` as a student's teacher runs it, with real processes: supervision and pulling the plug.

The launcher starts its embedded Redis, one worker (the tiny model, paced so jobs are caught in the
middle on any machine) and the web. Processes are killed with SIGKILL, as an out-of-memory kill or a
power cut would, and every job must still finish with no human action.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from contract.jobs import JobStatus
from contract.record import JobRecord
from contract.settings import PROJECT_ROOT, Settings
from contract.store import JobStore
from stack.harness import LiveStack, wait_until
from stack.redis_server import RedisServer, free_port, redis_server_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

STEPS, JOBS, BATCH = 60, 8, 4  # two waves of four: some jobs run and some wait when the plug is pulled
PACE = 0.05  # s per step: a wave lasts at least STEPS * PACE = 3 s


class Launcher:
    """One `python -m stack` process (its own session) with its output in a log file, and a client for it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None
        settings = Settings.from_env(env | {"REDIS_URL": f"redis://127.0.0.1:{env['EMBEDDED_REDIS_PORT']}/0"})
        self.client = LiveStack(settings, None, port=settings.web_port)
        self.store = JobStore(self.client.redis)

    def start(self) -> "Launcher":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "stack", "--workers", "1"], env=self.env,
                                            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        """Web answers and worker1 beats."""
        wait_until(lambda: self._alive() and self._web_up() and "worker1" in self._workers(), timeout,
                   f"the stack to start (output in {self.log})", period=0.3)

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the launcher exited ({self.process.returncode}):\n{self.output()[-3000:]}")
        return True

    def _web_up(self) -> bool:
        try:
            socket.create_connection((self.client.host, self.client.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def _workers(self) -> set[str]:
        try:
            return self.client.worker_names()
        except Exception:  # Redis still loading
            return set()

    def child(self, marker: str) -> psutil.Process:
        """The launcher's child process whose command line contains `marker`."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if marker in " ".join(child.cmdline()):
                return child
        raise LookupError(f"no child process with {marker!r}")

    def pull_the_plug(self) -> None:
        """SIGKILL the launcher and everything it started, all at once."""
        tree = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        for process in tree:
            process.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=30)
        self.process.wait()

    def submit_all(self) -> list[str]:
        return [self.client.submit(**body)["id"] for body in BODIES]


BODIES = [dict(prompt=f"Once upon a time {i}", steps=STEPS, top_k=3, temperature=0.8, seed=100 + i)
          for i in range(JOBS)]


@pytest.fixture
def launcher_env(tiny_model_dir, tmp_path) -> dict[str, str]:
    """The environment `make run` would have, on free ports, with this test's data dir and short heartbeats."""
    env = dict(os.environ)
    env.update(
        REDIS_URL="", EMBEDDED_REDIS_PORT=str(free_port()), WEB_HOST="127.0.0.1", WEB_PORT=str(free_port()),
        DATA_DIR=str(tmp_path / "data"), MODEL_NAME=str(tiny_model_dir), DEVICE="cpu", TORCH_THREADS="1",
        WEB_WORKERS="1", MAX_BATCH=str(BATCH), HEARTBEAT_SECONDS="1", STEP_PACE_SECONDS=str(PACE),
        JOB_DEADLINE_SECONDS="300", MAX_QUEUE_AGE_SECONDS="300", VISIBILITY_TIMEOUT_SECONDS="900",
        RATE_LIMIT="100000 per minute", IP_RATE_LIMIT="100000 per minute", MAX_ACTIVE_JOBS_PER_CLIENT="1000",
        MAX_ACTIVE_JOBS_PER_ADDRESS="1000", HF_HUB_OFFLINE="1",
    )
    env.pop("SECRET_KEY", None)  # the web's key comes from the data dir, as under `make run`
    return env


@pytest.fixture
def launchers():
    """Every launcher a test starts is gone afterwards, whatever happened."""
    started: list[Launcher] = []
    yield started
    for launcher in started:
        if launcher.process and launcher.process.poll() is None:
            launcher.pull_the_plug()


def wait_running(launcher: Launcher, ids: list[str], min_steps: int, timeout: float = 120) -> JobRecord:
    """Wait until one of `ids` is running with at least `min_steps` stored (read from Redis directly)."""
    def running():
        try:
            jobs = [launcher.store.get(i) for i in ids]
        except Exception:  # Redis restarting
            return None
        return next((j for j in jobs if j and j.status is JobStatus.RUNNING and j.steps_done >= min_steps), None)
    return wait_until(running, timeout, f"a job running with {min_steps} steps", period=0.02)


def assert_finished_like(jobs: list[dict], references: list[dict]) -> None:
    """Every job done with steps 1..N exactly once, and the same steps, finish and text as its uninterrupted twin."""
    for job, reference in zip(jobs, references):
        assert job["status"] == "done", (job["id"], job["status"], job["error"])
        assert [s["index"] for s in job["steps"]] == list(range(1, len(reference["steps"]) + 1)), job["id"]
        assert job["finish_reason"] == reference["finish_reason"]
        assert [s["chosen"]["id"] for s in job["steps"]] == [s["chosen"]["id"] for s in reference["steps"]]
        assert job["text"] == reference["text"]


def fresh_runs(launcher: Launcher) -> list[dict]:
    """The same jobs (same seeds), run again with nothing going wrong."""
    return [launcher.client.wait_done(i, timeout=180) for i in launcher.submit_all()]


def test_killed_worker_then_killed_redis_are_restarted_and_every_job_finishes(launcher_env, launchers, tmp_path):
    launcher = Launcher(launcher_env, tmp_path / "launcher.log").start()
    launchers.append(launcher)
    launcher.wait_ready()
    ids = launcher.submit_all()

    job = wait_running(launcher, ids, min_steps=3)
    launcher.child("worker1@").send_signal(signal.SIGKILL)  # what the out-of-memory killer does
    wait_until(lambda: "worker1 died" in launcher.output() and "restarting worker1" in launcher.output(), 60,
               "the launcher to restart the worker")
    # the restarted worker reaps its previous life's jobs and resumes them from their stored steps
    wait_running(launcher, ids, min_steps=job.steps_done + 3)
    launcher.child(Path(redis_server_binary()).name).send_signal(signal.SIGKILL)  # redis-server or valkey-server
    wait_until(lambda: "redis died" in launcher.output() and "restarting redis" in launcher.output(), 60,
               "the launcher to restart Redis")

    jobs = [launcher.client.wait_done(i, timeout=240) for i in ids]
    assert launcher.process.poll() is None, "the launcher must survive both crashes"
    assert_finished_like(jobs, fresh_runs(launcher))
    assert any(j["attempt"] >= 2 for j in jobs), "no job was interrupted by the worker's death"
    assert "killed by SIGKILL" in launcher.output()

    launcher.process.send_signal(signal.SIGTERM)
    assert launcher.process.wait(timeout=120) == 0


def test_pull_the_plug_then_start_again_finishes_every_job_once(launcher_env, launchers, tmp_path):
    first = Launcher(launcher_env, tmp_path / "first.log").start()
    launchers.append(first)
    first.wait_ready()
    ids = first.submit_all()
    submitted_at = time.monotonic()
    wait_running(first, ids, min_steps=3)
    time.sleep(max(0.0, submitted_at + 1.0 - time.monotonic()))  # every job submitted over a second ago
    before = [first.store.get(i) for i in ids]
    first.pull_the_plug()  # Redis, worker, web and the launcher, all at once
    assert any(j.status is JobStatus.RUNNING and 0 < j.steps_done < STEPS for j in before), before
    assert any(j.status is JobStatus.QUEUED for j in before), [j.status for j in before]

    second = Launcher(launcher_env, tmp_path / "second.log").start()  # same data dir, same ports
    launchers.append(second)
    second.wait_ready()
    jobs = [second.client.wait_done(i, timeout=240) for i in ids]
    assert_finished_like(jobs, fresh_runs(second))
    assert any(j["attempt"] >= 2 for j in jobs), "no running job was resumed"
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=120) == 0


def test_a_worker_that_cannot_load_its_model_stops_everything_at_once_with_the_reason(launcher_env, tmp_path,
                                                                                       tiny_model_dir):
    """The worker says it cannot start (exit code 3): five restarts over half a minute would repeat the error."""
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)  # every file a model needs, but one of them unreadable
    (broken / "config.json").write_text("{ not json")
    launcher_env["MODEL_NAME"] = str(broken)
    log = tmp_path / "launcher.log"
    launcher = Launcher(launcher_env, log).start()
    try:
        code = launcher.process.wait(timeout=240)
    finally:
        if launcher.process.poll() is None:
            launcher.pull_the_plug()
    output = launcher.output()
    assert code == 1, output[-3000:]
    assert "cannot load model local/broken-model" in output
    assert "worker1 cannot start (exit code 3); restarting it would not help, so everything is stopped" in output
    assert "restarting worker1" not in output
    ports = (f":{launcher_env['WEB_PORT']}", f":{launcher_env['EMBEDDED_REDIS_PORT']}")
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if any(port in " ".join(p.info["cmdline"] or ()) for port in ports)]
    assert left == [], "the web and Redis must be stopped too"


@pytest.mark.parametrize("name, value, message", [
    ("WEB_PORT", "abc", "WEB_PORT must be an integer, got 'abc'"),
    ("EMBEDDED_REDIS_PORT", "abc", "EMBEDDED_REDIS_PORT must be an integer, got 'abc'"),
    ("WORKERS", "two", "WORKERS must be an integer, got 'two'"),
    ("RATE_LIMIT", "lots", "RATE_LIMIT must read like"),
    ("LOG_LEVEL", "verbose", "LOG_LEVEL must be one of"),
    ("WORKERS", "0", "WORKERS must be at least 1"),  # the web crash-looped naming WORKERS_PER_HOST
    ("EMBEDDED_REDIS_PORT", "99999", "EMBEDDED_REDIS_PORT must be between 1 and 65535, got 99999"),
    ("REDIS_URL", "localhost:6379", "REDIS_URL must start with redis://, rediss:// or unix://"),
    ("REDIS_URL", "redis://127.0.0.1:99999", "REDIS_URL has no valid port"),
    ("REDIS_URL", "redis://:s#cret@host:6379", "REDIS_URL has no valid port or address"),
])
def test_a_bad_setting_stops_make_run_with_one_line_naming_it(launcher_env, tmp_path, name, value, message):
    result = subprocess.run([sys.executable, "-m", "stack"], env=launcher_env | {name: value}, cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"configuration error: {message}" in result.stderr and "Traceback" not in result.stderr
    assert "s#cret" not in result.stderr + result.stdout  # a password in REDIS_URL is never printed
    assert not (tmp_path / "data").exists()  # nothing was started


def test_make_run_stops_at_once_when_its_web_port_is_taken_or_its_redis_unreachable(launcher_env, tmp_path):
    """A taken WEB_PORT printed "Open http://..." (another service's address) and crash-looped gunicorn for 44 s; an
    unreachable REDIS_URL started everything and logged retries for ever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "stack"], env=launcher_env | {"WEB_PORT": str(port)},
                                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert f"cannot start: port {port} on 127.0.0.1 (WEB_PORT) is already in use" in result.stderr
    assert "Open http" not in result.stdout and not (tmp_path / "data").exists()
    dead = free_port()
    result = subprocess.run([sys.executable, "-m", "stack"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env=launcher_env | {"REDIS_URL": f"redis://:sesame@127.0.0.1:{dead}/0"}, timeout=90)
    assert result.returncode == 1
    assert f"cannot start: Redis at 127.0.0.1:{dead} (REDIS_URL) does not answer" in result.stderr
    assert "sesame" not in result.stderr + result.stdout and "Open http" not in result.stdout


def test_make_run_names_a_redis_that_refuses_its_password_at_once(tmp_path):
    """redis-py's AuthenticationError is a ConnectionError: a wrong password was retried for 10 s, then called
    "does not answer"."""
    from stack.launcher import redis_problem

    server = RedisServer(tmp_path / "locked", password="sesame").start()
    try:
        for url in (f"redis://127.0.0.1:{server.port}/0", f"redis://:wrong@127.0.0.1:{server.port}/0"):
            started = time.monotonic()
            problem = redis_problem(url)
            assert problem.startswith(f"Redis at 127.0.0.1:{server.port} (REDIS_URL) refuses this service")
            assert time.monotonic() - started < 5 and "wrong" not in problem
        assert redis_problem(f"redis://:sesame@127.0.0.1:{server.port}/0") is None
    finally:
        server.stop()


def test_a_second_ctrl_c_hands_running_jobs_back_without_using_an_attempt(launcher_env, launchers, tmp_path):
    """A second Ctrl-C SIGKILLed the workers: their jobs stayed "running" until the reaper took them, each as a failed
    attempt (three impatient restarts failed a long job), and the dead worker's heartbeat kept /readyz "ready"."""
    redis_server = RedisServer(tmp_path / "own-redis", port=int(launcher_env["EMBEDDED_REDIS_PORT"])).start()
    try:
        env = launcher_env | {"REDIS_URL": redis_server.url, "STEP_PACE_SECONDS": "0.1"}
        launcher = Launcher(env, tmp_path / "launcher.log").start()
        launchers.append(launcher)
        launcher.wait_ready()
        job_id = launcher.client.submit(prompt="Once upon a time", steps=200, top_k=3)["id"]
        wait_until(lambda: launcher.store.get(job_id).steps_done >= 3, 60, "the job to run")
        launcher.process.send_signal(signal.SIGINT)
        wait_until(lambda: "Ctrl-C again to stop now" in launcher.output(), 30, "the warm shutdown to begin")
        launcher.process.send_signal(signal.SIGINT)
        assert launcher.process.wait(timeout=90) == 0, launcher.output()[-3000:]
        job = launcher.store.get(job_id)
        assert (job.status, job.recoveries) == (JobStatus.QUEUED, 0), launcher.output()[-3000:]
        assert launcher._workers() == set()  # withdrawn: no heartbeat left to call it live
    finally:
        redis_server.stop()


def test_a_second_ctrl_c_takes_back_only_this_machines_workers(fake_redis):
    """Workers were matched by process id alone: on a Redis shared by several machines, another machine's live
    worker with the same pid lost its running jobs."""
    from types import SimpleNamespace

    from contract.workers import WorkerInfo, WorkerRegistry
    from stack.launcher import _take_back_jobs

    registry = WorkerRegistry(fake_redis, 5)
    here, there = f"worker1@{socket.gethostname()}/4242-ab12", "worker1@elsewhere/4242-cd34"
    for name in (here, there):
        registry.announce(WorkerInfo(name=name, model="local/tiny", device="cpu", queue="q", capacity=1))
    time.sleep(0.01)  # the heartbeats are in the past
    _take_back_jobs(SimpleNamespace(redis=fake_redis), {4242}, Settings())
    assert [w.name for w in registry.live()] == [there]


def test_make_run_workers_that_is_no_number_is_the_same_one_line(launcher_env, tmp_path):
    """`make run WORKERS=abc` runs `python -m stack --workers abc`: argparse's usage and error, not the line the
    environment variable gets."""
    result = subprocess.run([sys.executable, "-m", "stack", "--workers", "abc"], env=launcher_env, cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "configuration error: WORKERS must be an integer, got 'abc'" in result.stderr and "usage" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_second_make_run_on_the_same_port_or_data_stops_with_the_reason(launcher_env, launchers, tmp_path):
    """The second copy used to take the first one's Redis for its own (it answered PING) and crash-loop its own
    server unseen; on other ports, both servers appended to one AOF."""
    first = Launcher(launcher_env, tmp_path / "first.log").start()
    launchers.append(first)
    first.wait_ready()
    same_port = launcher_env | {"DATA_DIR": str(tmp_path / "other-data"), "WEB_PORT": str(free_port())}
    same_data = launcher_env | {"EMBEDDED_REDIS_PORT": str(free_port()), "WEB_PORT": str(free_port())}
    for env, reason in ((same_port, f"port {launcher_env['EMBEDDED_REDIS_PORT']} on 127.0.0.1 is already in use"),
                        (same_data, "is in use by another Redis started by process")):
        second = subprocess.run([sys.executable, "-m", "stack"], env=env, cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 1, second.stderr[-2000:]
        assert "*** the embedded Redis did not start: " in second.stderr and reason in second.stderr
        assert "Open http" not in second.stdout and "worker" not in second.stderr
    assert first.process.poll() is None and first._workers() == {"worker1"}


def test_make_run_says_where_phones_reach_the_service(monkeypatch):
    from stack import launcher

    monkeypatch.setattr(launcher, "lan_address", lambda: "192.168.1.20")
    assert "start with WEB_HOST=0.0.0.0 make run" in launcher.network_line(Settings(web_host="127.0.0.1"))
    assert "http://192.168.1.20:8000/" in launcher.network_line(Settings(web_host="0.0.0.0"))


def test_make_run_never_says_to_open_the_wildcard_address(monkeypatch):
    """"Open http://0.0.0.0:8000/" made the room's join link and QR code name 0.0.0.0, which no phone reaches."""
    from stack import launcher

    monkeypatch.setattr(launcher, "lan_address", lambda: "192.168.1.20")
    assert launcher.open_url(Settings(web_host="0.0.0.0")) == "http://192.168.1.20:8000/"
    assert launcher.open_url(Settings(web_host="::")) == "http://192.168.1.20:8000/"
    assert launcher.open_url(Settings(web_host="127.0.0.1", web_port=8001)) == "http://127.0.0.1:8001/"
    monkeypatch.setattr(launcher, "lan_address", lambda: None)
    assert launcher.open_url(Settings(web_host="0.0.0.0")) == "http://127.0.0.1:8000/"
