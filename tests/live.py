"""LiveStack: real worker and web processes against a real Redis, for integration tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
import requests

from contract import keys
from contract.settings import PROJECT_ROOT, Settings
from stack.commands import web_command, worker_command
from stack.redis_server import free_port


class LiveStack:
    """Starts and stops the service's processes; each has a log file under `log_dir`."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.workers: dict[str, subprocess.Popen] = {}
        self.web: subprocess.Popen | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a child process: these settings, offline, the project importable."""
        env = dict(os.environ, **self.settings.to_env(), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=str(PROJECT_ROOT))
        env.update(extra)
        return env

    def _spawn(self, command: list[str], log_name: str, **extra: str) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab")
        return subprocess.Popen(command, env=self.env(**extra), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_web(self, timeout: float = 60.0) -> None:
        """Start gunicorn and wait until it answers."""
        self.web = self._spawn(web_command(self.settings, "127.0.0.1", self.port), "web.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.web.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"web did not start; see {self.log_dir / 'web.log'}")

    def start_worker(self, name: str, **extra: str) -> subprocess.Popen:
        """Start a Celery worker process called `name` (extra env vars override settings)."""
        settings = self.settings
        process = self._spawn(worker_command(settings, name), f"worker-{name}.log", **extra)
        self.workers[name] = process
        return process

    def worker_names(self) -> set[str]:
        """Workers whose heartbeat is recent."""
        now = time.time()
        names = self.redis.zrangebyscore(keys.workers_key(), now - self.settings.heartbeat_seconds * 3, "+inf")
        return {n.decode().split("@")[0] for n in names}

    def wait_for_workers(self, count: int, timeout: float = 90.0) -> None:
        """Wait until `count` workers announce themselves."""
        deadline = time.monotonic() + timeout
        while len(self.worker_names() & set(self.workers)) < count:
            dead = [n for n, p in self.workers.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready (dead: {dead}); logs in {self.log_dir}")
            time.sleep(0.2)

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a worker's whole process group (SIGKILL: as a crash or OOM kill would)."""
        process = self.workers.pop(name)
        os.killpg(process.pid, sig)
        process.wait(timeout=60)

    def submit(self, session: requests.Session | None = None, **body) -> dict:
        """POST /api/jobs and return the JSON answer (raises on HTTP errors)."""
        response = (session or requests).post(f"{self.url}/api/jobs", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def job(self, job_id: str, since: int = 0) -> dict:
        """GET /api/jobs/<id>."""
        response = requests.get(f"{self.url}/api/jobs/{job_id}", params={"since": since}, timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_done(self, job_id: str, timeout: float = 60.0) -> dict:
        """Poll until the job reaches a terminal state; returns it with all its steps."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")

    def stop(self) -> None:
        """Stop everything started here (workers warm-shutdown, then forced)."""
        for process in list(self.workers.values()) + ([self.web] if self.web else []):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in list(self.workers.values()) + ([self.web] if self.web else []):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.workers.clear()
