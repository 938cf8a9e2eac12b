"""LiveStack: the service's processes (workers, web) against a real Redis, started and stopped as a unit.

One harness for the launcher (`python -m stack`), the tests and the bench: the same commands,
environment and wait helpers everywhere.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from contract.jobs import TERMINAL
from contract.settings import PROJECT_ROOT, Settings
from contract.workers import WorkerRegistry
from stack.commands import web_command, worker_command
from stack.redis_server import free_port

_PR_SET_PDEATHSIG = 1


def stop_when_parent_dies() -> None:
    """In a child before exec (Linux): get SIGTERM when the launcher dies, so a killed launcher leaves no orphan."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def bind_error(host: str, port: int) -> OSError | None:
    """Why gunicorn could not listen on host:port now (None: it could). It binds as gunicorn does: IPv4 unless `host`
    is an IPv6 literal, with SO_REUSEADDR (a port in TIME_WAIT is no obstacle)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:  # socket.gaierror included: a host that does not resolve
        return exc
    return None


def wait_until(predicate: Callable[[], object], timeout: float, what: str, period: float = 0.1) -> object:
    """Poll `predicate` until it returns something truthy (returned); TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(period)


class LiveStack:
    """Starts and stops the service's processes.

    Each process has a log file under `log_dir`, or writes to this process's output when `log_dir`
    is None (the launcher). Every process runs in its own session, so a signal reaches it alone.
    """

    def __init__(self, settings: Settings, log_dir: Path | None, *, host: str = "127.0.0.1",
                 port: int | None = None, die_with_parent: bool = False) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.workers: dict[str, subprocess.Popen] = {}
        self.web: subprocess.Popen | None = None
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.die_with_parent = die_with_parent

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a child process: these settings, offline, the project importable."""
        env = dict(os.environ, **self.settings.to_env(), TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(PROJECT_ROOT))
        if not env.get("HF_HUB_OFFLINE"):  # unset, or set empty (an `HF_HUB_OFFLINE=` line): offline
            env["HF_HUB_OFFLINE"] = "1"
        env.update(extra)
        return env

    def _spawn(self, command: list[str], log_name: str, **extra: str) -> subprocess.Popen:
        output = open(self.log_dir / log_name, "ab") if self.log_dir is not None else None
        try:
            return subprocess.Popen(command, env=self.env(**extra), cwd=PROJECT_ROOT, stdout=output,
                                    stderr=subprocess.STDOUT if output else None, start_new_session=True,
                                    preexec_fn=stop_when_parent_dies if self.die_with_parent else None)
        finally:
            if output:
                output.close()  # the child holds its own copy

    def _log_hint(self, log_name: str) -> str:
        return f"see {self.log_dir / log_name}" if self.log_dir else "see its output above"

    def spawn_web(self) -> subprocess.Popen:
        """Start gunicorn without waiting for it; the workers a killed master left behind go first."""
        if self.web is not None:
            self._free_port_of(self.web.pid)
        self.web = self._spawn(web_command(self.settings, self.host, self.port), "web.log")
        return self.web

    def _free_port_of(self, group: int, timeout: float = 5.0) -> None:
        """SIGKILL what is left of an earlier web's process group (a killed master's workers hold the port until they
        notice it is gone) and wait, at most `timeout` seconds, until the port can be bound again."""
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + timeout
        while bind_error(self.host, self.port) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def start_web(self, timeout: float = 60.0) -> None:
        """Start gunicorn and wait until it answers."""
        self.spawn_web()
        self.wait_for_web(timeout)

    def wait_for_web(self, timeout: float = 60.0) -> None:
        """Wait until the web accepts connections (RuntimeError if it exits first or never does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if self.web is None or self.web.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"web did not start; {self._log_hint('web.log')}")

    def start_worker(self, name: str, **extra: str) -> subprocess.Popen:
        """Start a Celery worker process called `name` (extra env vars override settings)."""
        process = self._spawn(worker_command(self.settings, name), f"worker-{name}.log", **extra)
        self.workers[name] = process
        return process

    def worker_names(self) -> set[str]:
        """Workers whose heartbeat is recent (their Celery names, without the host)."""
        registry = WorkerRegistry(self.redis, self.settings.heartbeat_seconds)
        return {w.name.split("@")[0] for w in registry.live()}

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
        """Poll until the job reaches a terminal state; returns it with all its steps.

        A web or Redis that is down for a moment (connection refused, 503) is waited out.
        """
        deadline = time.monotonic() + timeout
        status = "unknown"
        while time.monotonic() < deadline:
            try:
                job = self.job(job_id)
            except (requests.ConnectionError, requests.HTTPError) as exc:
                if isinstance(exc, requests.HTTPError) and exc.response.status_code != 503:
                    raise
                time.sleep(0.5)
                continue
            status = job["status"]
            if status in TERMINAL:
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {status} after {timeout} s")

    def stop(self, grace: float = 20.0) -> None:
        """Stop everything started here: SIGTERM (workers warm-shutdown), SIGKILL after `grace` seconds."""
        processes = [self.web] if self.web else []
        processes += list(self.workers.values())
        for process in processes:  # the web first: no new jobs while the workers finish theirs
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.workers.clear()
