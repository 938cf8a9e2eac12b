"""The JSON API: /api/jobs, /api/health, /api/models, /api/openapi.json."""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from contract.jobs import ValidationError
from contract.store import CancelOutcome
from web import jobs
from web.backend import default_model, live_workers
from web.errors import ApiError
from web.openapi import openapi_document
from web.security import client_id, csrf, submit_limits

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)  # JSON bodies cannot be sent cross-site without a CORS preflight we never grant


@bp.post("/jobs")
@submit_limits
def create() -> tuple[Response, int, dict[str, str]]:
    """Queue a job; 202 with its id, API url and page."""
    if not request.is_json:
        raise ValidationError(None, "send a JSON body with Content-Type: application/json", "invalid_body")
    data = request.get_json(silent=True)
    if data is None:
        raise ValidationError(None, "the request body is not valid JSON", "invalid_json")
    created = jobs.submit(data)
    return jsonify(created), 202, {"Location": created["url"]}


@bp.get("/jobs/<job_id>")
def status(job_id: str) -> dict[str, Any]:
    """The job, with the steps after `since` (incremental polling)."""
    raw = request.args.get("since", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:  # str.isdigit alone takes "²" and "٣"
        raise ValidationError("since", "since must be a non-negative integer (a step index)", "type")
    job, steps = jobs.load_with_steps(job_id, int(raw))
    return jobs.present(job, int(raw), steps)


@bp.delete("/jobs/<job_id>")
def cancel(job_id: str) -> tuple[dict[str, Any], int]:
    """Cancel a job you own: queued jobs end now, running ones before their next step."""
    job = jobs.load(job_id)
    outcome = jobs.get_store().cancel(job.id, client_id())
    if outcome is CancelOutcome.FORBIDDEN:
        raise ApiError(403, "forbidden", "only the browser or client that submitted a job can cancel it")
    if outcome is CancelOutcome.MISSING:
        raise ApiError(404, "not_found", "no such job (unknown id, or expired)")
    status = "running" if outcome is CancelOutcome.CANCELLING else outcome.value
    return {"id": job.id, "status": status, "cancel": outcome.value}, 202


@bp.get("/models")
def models() -> dict[str, Any]:
    """Models that live workers serve (the default first), for the form's model picker."""
    served = sorted({w["model"] for w in live_workers()})
    default = default_model()
    return {"default": default, "models": [default] + [m for m in served if m != default], "online": served}


@bp.get("/health")
def health() -> tuple[dict[str, Any], int]:
    """Redis reachable, workers online and progressing (heartbeats, plus a Celery ping cached for 10 s), model names."""
    current_app.extensions["redis"].ping()  # a RedisError here answers 503
    workers = live_workers()
    pinged = current_app.extensions["celery_ping"].names()
    stalled = [w["name"] for w in workers if w["stalled"]]
    ok = bool(workers) and not stalled
    body = {
        "status": "ok" if ok else "degraded",
        "redis": "ok",
        "workers": workers,
        "ping": pinged,
        "stalled": stalled,
        "models": sorted({w["model"] for w in workers}),
        "default_model": default_model(),
        "time": time.time(),
    }
    return body, 200


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """The OpenAPI 3 description of this API."""
    return openapi_document(jobs.settings())

