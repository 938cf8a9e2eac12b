"""The command lines of the service's processes, shared by the launcher, the tests and the bench."""
from __future__ import annotations

import sys

from contract.settings import Settings


def worker_command(settings: Settings, name: str = "worker1") -> list[str]:
    """One Celery worker: one model in memory, stepping up to MAX_BATCH jobs together."""
    concurrency = settings.max_batch if settings.worker_pool == "threads" else 1
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app",
        *(["--quiet"] if settings.log_format == "json" else []),  # Celery's banner is text, not a log record
        "worker", "--pool", settings.worker_pool, "--concurrency", str(concurrency),
        "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]


def web_command(settings: Settings, host: str | None = None, port: int | None = None) -> list[str]:
    """The web under gunicorn (threaded workers: many students poll at once)."""
    bind = f"{host or settings.web_host}:{port or settings.web_port}"
    return [
        sys.executable, "-m", "gunicorn", "--workers", str(settings.web_workers), "--worker-class", "gthread",
        "--threads", "16", "--bind", bind, "--access-logfile", "-", "--graceful-timeout", "10",
        "--limit-request-line", "8190", "--config", "python:web.gunicorn_conf", "web:create_app()",
    ]
