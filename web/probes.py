"""Probes for orchestrators: `/healthz` (liveness) and `/readyz` (readiness). No Celery broadcast here.

- `/healthz`: this process answers. It touches nothing else, so a Redis outage never gets the web
  restarted (restarting would not bring Redis back).
- `/readyz`: Redis answers and a live worker serves the default model, read from the workers'
  heartbeats in Redis (one round trip, no broadcast), or jobs are accepted without one (scale from zero)
  and the model did not fail to load. Until then a load balancer sends no students here.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from redis.exceptions import RedisError

from contract.workers import ModelState
from web import jobs
from web.backend import default_model, get_registry, live_workers

bp = Blueprint("probes", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """Readiness: Redis reachable and a live worker for the default model (or jobs accepted without one)."""
    model = default_model()
    try:
        current_app.extensions["redis"].ping()
        serving = [w["name"] for w in live_workers() if w["model"] == model]
        status = None if serving else get_registry().model_status(model)
    except RedisError as exc:
        return _not_ready("redis_unreachable", f"Redis is unreachable: {exc}"), 503
    if status is not None and status.state is ModelState.FAILED:  # every submission would answer 503 now
        return _not_ready("model_failed", f"the default model {model} could not be loaded: {status.reason}"), 503
    # with scale-from-zero (ACCEPT_JOBS_WITHOUT_WORKERS) a job is what brings the first worker
    if not serving and not jobs.settings().accept_jobs_without_workers:
        return _not_ready("no_worker", f"no live worker serves the default model {model}"), 503
    return {"status": "ready", "redis": "ok", "default_model": model, "workers": serving}, 200


def _not_ready(code: str, message: str) -> dict[str, Any]:
    return {"status": "not_ready", "error": {"code": code, "field": None, "message": message}}
