"""`python -m stack`: Redis (embedded unless REDIS_URL is set), worker(s) and web, supervised, stopped by Ctrl-C.

A process that dies is restarted with backoff (stack.supervisor); only a crash loop stops everything.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.exceptions import RedisError

from contract.defaults import CANNOT_START_EXIT, LOOPBACK_HOSTS
from contract.logs import configure_logging
from contract.settings import Settings
from contract.tasks import model_id
from contract.workers import ModelState, WorkerRegistry
from stack.harness import LiveStack, bind_error, stop_when_parent_dies
from stack.hub import ensure_model
from stack.redis_server import RedisServer
from stack.supervisor import CrashLoop, Supervisor

EMBEDDED_REDIS_PORT = 6390  # not 6379, so a system Redis on this machine is left alone
REDIS_START_SECONDS = 120  # a large append-only file takes a while to load after a crash
REDIS_REACH_SECONDS = 10  # an external Redis that is still starting gets this long to answer
STOP_MARGIN_SECONDS = 30  # on top of JOB_DEADLINE_SECONDS: a running job may take that long to finish
log = logging.getLogger("stack")


def main(argv: list[str] | None = None) -> int:
    """Start everything, keep it running until Ctrl-C (or a crash loop), then stop everything.

    Returns 0 after Ctrl-C / SIGTERM, 1 after a crash loop.
    """
    try:
        settings = Settings.from_env()  # first: it reads .env into the environment
        configure_logging(settings.log_level, settings.log_format)
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--workers", help="worker processes (each loads the model once); default: WORKERS or 1")
        args = parser.parse_args(argv)
        workers = _integer("WORKERS", args.workers) if args.workers is not None else _int_env("WORKERS", 1)
        redis_port = _int_env("EMBEDDED_REDIS_PORT", EMBEDDED_REDIS_PORT)
        if workers < 1:
            raise ValueError(f"WORKERS must be at least 1 (each loads the model once), got {workers}")
        if not 1 <= redis_port <= 65535:
            raise ValueError(f"EMBEDDED_REDIS_PORT must be between 1 and 65535, got {redis_port}")
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    problem = web_port_problem(settings.web_host, settings.web_port) or (
        redis_problem(settings.redis_url) if settings.redis_url else None)
    if problem:
        print(f"cannot start: {problem}", file=sys.stderr, flush=True)
        return 1
    if not ensure_model(settings.model_name, settings.model_revision, settings.hf_token):  # offline when cached
        return 1
    if "WORKERS_PER_HOST" not in os.environ:  # the workers split the cores among themselves
        settings = dataclasses.replace(settings, workers_per_host=workers)

    redis_server = None
    if not settings.redis_url:
        redis_server = RedisServer(Path(settings.data_dir) / "redis", port=redis_port,
                                   preexec_fn=stop_when_parent_dies)
        settings = dataclasses.replace(settings, redis_url=redis_server.url)
    stack = LiveStack(settings, None, host=settings.web_host, port=settings.web_port, die_with_parent=True)

    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            raise KeyboardInterrupt  # asked twice: do not wait for running jobs
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal was closed
        signal.signal(signum, request_stop)
    supervisor = Supervisor()
    if redis_server:
        try:  # a first start that fails (port or data dir taken, no server) is reported, never retried
            supervisor.add("redis", lambda: redis_server.start(timeout=REDIS_START_SECONDS).process, required=True)
        except (RuntimeError, OSError) as exc:
            print(f"\n*** the embedded Redis did not start: {exc}\n", file=sys.stderr, flush=True)
            return 1
        log.info("embedded Redis on %s (data in %s)", redis_server.url, redis_server.data_dir)
    code = 0
    try:
        for i in range(workers):
            supervisor.add(f"worker{i + 1}", lambda name=f"worker{i + 1}": stack.start_worker(name),
                           final_exit=CANNOT_START_EXIT)
        _announce_loading(stack, settings)
        supervisor.add("web", stack.spawn_web)
        print(f"\n  Open {open_url(settings)}  (Ctrl-C stops everything)\n{network_line(settings)}\n", flush=True)
        while not stopping:
            time.sleep(0.5)
            supervisor.check()
    except KeyboardInterrupt:  # a second Ctrl-C before the loop saw the first
        pass
    except CrashLoop as exc:
        print(f"\n*** {exc}\n", file=sys.stderr, flush=True)
        code = 1
    _stop(stack, redis_server, settings)
    return code


def web_port_problem(host: str, port: int) -> str | None:
    """Why the web could not listen on host:port (taken, or a host that is not this machine's), or None."""
    error = bind_error(host, port)
    if error is None:
        return None
    if isinstance(error, socket.gaierror):
        return f"WEB_HOST {host!r} is not an address of this computer"
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} (WEB_PORT) is already in use: stop what holds it or set another WEB_PORT"
    return f"the web cannot listen on {host}:{port} (WEB_HOST, WEB_PORT): {error.strerror or error}"


def redis_problem(url: str, wait: float = REDIS_REACH_SECONDS) -> str | None:
    """Why the Redis at `url` cannot be used (it never answers within `wait` seconds, or refuses us), or None.
    Names its host and port only: the URL may hold a password."""
    parts = urlsplit(url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                client.ping()
                return None
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:  # ConnectionErrors too
                return f"Redis at {where} (REDIS_URL) refuses this service: {exc}"
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() > deadline:  # not up after a while: not a server still starting
                    return f"Redis at {where} (REDIS_URL) does not answer ({type(exc).__name__})"
                time.sleep(0.5)
            except redis.RedisError as exc:  # it answers, but not to us: a password, a user's rights
                return f"Redis at {where} (REDIS_URL) refuses this service: {exc}"
    finally:
        client.close()


def _take_back_jobs(stack: LiveStack, pids: set[int], settings: Settings) -> None:
    """After a second Ctrl-C killed the workers (Celery's thread pool has no cold shutdown): their running jobs go
    back to the queue now, as after any shutdown (no attempt used), and their heartbeats go, so nothing reads them
    as live. A worker is known by this machine's name and its process id: another machine's worker on the same Redis
    may have the same pid."""
    registry = WorkerRegistry(stack.redis, settings.heartbeat_seconds)
    try:
        for worker in registry.live():
            if worker.node.partition("@")[2] == socket.gethostname() and worker.pid in pids:
                taken = registry.reap(worker.name, 0, max_failures=settings.max_attempts, counted=False,
                                      reason="its worker was stopped")
                log.info("%s stopped: %d running job(s) back in the queue", worker.name, len(taken))
    except RedisError as exc:  # the reaper of the next start takes them instead
        log.warning("could not hand the stopped workers' jobs back (%s); they are recovered at the next start", exc)


def open_url(settings: Settings) -> str:
    """The address to open: never the wildcard one (0.0.0.0), which a room's join link and QR code would copy."""
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):
        host = lan_address() or "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.web_port}/"


def network_line(settings: Settings) -> str:
    """Where phones reach the service (a class joins from them), or how to let them."""
    if settings.web_host in LOOPBACK_HOSTS:
        return ("  Only this computer can open it. For a class on phones, start with WEB_HOST=0.0.0.0 make run "
                f"(and let port {settings.web_port} through the firewall).")
    address = lan_address()
    if address is None:
        return "  Phones open it at this computer's network address (none found: is it on a network?)."
    return (f"  Phones and the projector page open it at http://{address}:{settings.web_port}/ "
            "(the room's join link and QR code use the address its page was opened at).")


def lan_address() -> str | None:
    """This computer's address on its network: the one its default route leaves by (UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never a real host
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith(("127.", "0.")) else address


def _int_env(name: str, default: int) -> int:
    """An integer environment variable; ValueError naming it when it is not one."""
    raw = os.environ.get(name, "")
    return _integer(name, raw) if raw else default


def _integer(name: str, raw: str) -> int:
    """`raw` as the integer setting `name`; ValueError naming it when it is not one."""
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _announce_loading(stack: LiveStack, settings: Settings) -> None:
    """Say in Redis that the model is being loaded, so the web takes jobs while the workers start."""
    try:
        WorkerRegistry(stack.redis, settings.heartbeat_seconds).report_model(
            model_id(settings.model_name), ModelState.LOADING, "launcher")
    except RedisError as exc:
        log.warning("could not tell Redis the model is loading (%s); the workers will", exc)


def _stop(stack: LiveStack, redis_server: RedisServer | None, settings: Settings) -> None:
    """Web first, then workers (warm shutdown: running jobs finish), then Redis; a second Ctrl-C kills the workers
    and puts their running jobs back in the queue."""
    grace = settings.job_deadline_seconds + STOP_MARGIN_SECONDS
    print(f"stopping: running jobs finish first (at most {grace:g} s); Ctrl-C again to stop now (they then go "
          "back to the queue)", flush=True)
    workers = {process.pid for process in stack.workers.values()}
    try:
        stack.stop(grace=grace)
    except KeyboardInterrupt:
        stack.stop(grace=0)
        _take_back_jobs(stack, workers, settings)
    if redis_server:
        redis_server.stop()
