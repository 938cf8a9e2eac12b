"""gunicorn settings the web needs (`gunicorn -c python:web.gunicorn_conf`): logging, a metrics folder, a quiet GC.

- Logging: LOG_LEVEL and LOG_FORMAT for the app's and gunicorn's own loggers (access log included).
- Metrics: gunicorn runs several processes, and a scrape of /metrics reaches one of them. Each
  process writes its request-latency histogram to files in PROMETHEUS_MULTIPROC_DIR, which
  prometheus_client's multiprocess mode sums at scrape time. The folder is made (or emptied) when
  gunicorn starts, before it forks its workers, and removed when it exits if it made it.
- GC: once a worker has loaded the app, what it loaded is frozen out of the garbage collector's
  sight, so the collections that every request's short-lived objects trigger stay small.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

from contract.logs import logging_config
from contract.settings import Settings

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

_settings = Settings.from_env()
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)


def on_starting(server) -> None:
    """Give the worker processes an empty folder for their metric files (inherited through the environment)."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):  # a previous run's figures would be added to this run's
            stale.unlink()
        server.made_metrics_dir = None
    else:
        server.made_metrics_dir = os.environ[METRICS_DIR_VARIABLE] = tempfile.mkdtemp(prefix="autoregress-metrics-")


def post_worker_init(worker) -> None:
    """Freeze the loaded app (Flask, Celery, redis-py, ...) out of the collector's way."""
    gc.collect()
    gc.freeze()


def on_exit(server) -> None:
    """Remove the metrics folder this run made."""
    if getattr(server, "made_metrics_dir", None):
        shutil.rmtree(server.made_metrics_dir, ignore_errors=True)
