"""Names shared by the producer (web) and the consumers (workers)."""
from __future__ import annotations

import hashlib
import os
import re
import secrets

from contract.settings import Settings

GENERATE_TASK = "worker.generate"


def task_id_for(job_id: str) -> str:
    """A fresh Celery task id that carries the job id, so a job's message can be found in the broker."""
    return f"{job_id}.{secrets.token_hex(4)}"


def model_id(model_name: str) -> str:
    """The name clients see for a model: the hub id, or `local/<folder>` for a local path.

    A local path differs between machines (a laptop, a container), its folder name does not.
    """
    if model_name.startswith(("/", ".", "~")) or os.path.isdir(model_name):
        return "local/" + os.path.basename(os.path.normpath(os.path.expanduser(model_name)))
    return model_name


def queue_for_model(model: str) -> str:
    """The Celery queue that carries jobs for `model` (a model_id); only workers holding it consume it."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "model"
    digest = hashlib.sha1(model.encode()).hexdigest()[:6]
    return f"genq.{slug}.{digest}"


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery settings both sides use, so the broker options (visibility timeout) always agree.

    At-least-once delivery: acks after the job ends, requeue when the worker is lost, one
    reservation per slot the worker really runs; our fencing tokens make redelivery harmless.
    """
    transport = {"visibility_timeout": settings.visibility_timeout_seconds}
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # keep reconnecting while Redis restarts
        "task_ignore_result": True,  # progress lives in our own keys, not the result backend
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.max_batch if settings.worker_pool == "threads" else 1,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_channel_error_retry": True,
    }
