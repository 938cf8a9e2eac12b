"""Submitting jobs and presenting them: the logic behind both the JSON API and the form."""
from __future__ import annotations

import secrets
from typing import Any

from flask import current_app

from contract import keys
from contract.jobs import Limits, JobStatus, validate_request
from contract.scoring import surprisal
from contract.settings import Settings
from contract.store import ClientBusy, QueueFull
from contract.tasks import model_id, queue_for_model
from web import classroom
from web.backend import get_store, live_workers, send_job
from web.errors import ApiError
from web.security import client_id
from web.teacher import is_teacher

QUEUE_FULL_RETRY_AFTER = 30
CLIENT_BUSY_RETRY_AFTER = 10


def settings() -> Settings:
    """The settings of the current app."""
    return current_app.config["SETTINGS"]


def default_model() -> str:
    """The model jobs use when the client names none."""
    return model_id(settings().model_name)


def submit(data: Any) -> dict[str, Any]:
    """Validate a request, store the job as queued and send it to its model's queue.

    Raises:
        ValidationError: a field is invalid (400).
        ApiError: the queue is full (503) or the client has too many unfinished jobs (429).
    """
    s = settings()
    request = validate_request(data, Limits(s.max_steps, s.max_top_k, s.max_prompt_chars))
    job_id = keys.new_job_id()
    request = classroom.join(request, job_id)
    model = request.model or default_model()
    if model != default_model() and model not in {w["model"] for w in live_workers()}:
        raise ApiError(400, "unknown_model", f"no worker serves the model {model[:80]!r}", field="model")
    queue = queue_for_model(model)
    owner = client_id()
    seed = request.params.seed if request.params.seed is not None else secrets.randbelow(2**31)
    store = get_store()
    try:
        store.create(
            job_id, request, owner=owner, model=model, queue=queue, seed=seed,
            max_queued=s.max_queued_jobs, max_active=s.max_active_jobs_per_client,
            active_window=s.max_queue_age_seconds + s.job_deadline_seconds,
        )
    except QueueFull:
        raise ApiError(503, "queue_full", "the class queue is full; try again in a little while",
                       retry_after=QUEUE_FULL_RETRY_AFTER) from None
    except ClientBusy:
        raise ApiError(429, "too_many_active_jobs",
                       f"you already have {s.max_active_jobs_per_client} jobs running; wait for one to finish",
                       retry_after=CLIENT_BUSY_RETRY_AFTER) from None
    try:
        send_job(job_id, queue)
    except Exception as exc:
        store.mark_send_failed(job_id, queue, owner, f"could not queue the job: {type(exc).__name__}")
        raise ApiError(503, "unavailable", "the queue is unreachable; try again shortly", retry_after=5) from None
    return {"id": job_id, "status": JobStatus.QUEUED.value, "url": f"/api/jobs/{job_id}", "page": f"/jobs/{job_id}"}


def load(job_id: str) -> dict[str, Any]:
    """The stored job, or a 404 ApiError when unknown or expired.

    A job submitted in a class room is shown only to its student and to the teacher (403 otherwise).
    """
    job = get_store().get(job_id) if keys.is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", "no such job (unknown id, or expired)")
    if job.get("room") and job.get("owner") != client_id() and not is_teacher():
        raise ApiError(403, "forbidden", "this job belongs to another student of a class room")
    return job


def present(job: dict[str, Any], since: int) -> dict[str, Any]:
    """The API view of a job, with only the steps after `since`."""
    store = get_store()
    status = job["status"]
    position = store.queue_position(job["id"], job["queue"]) if status == JobStatus.QUEUED.value else None
    return {
        "id": job["id"],
        "status": status,
        "prompt": job["prompt"],
        "params": job["params"],
        "model": job["model"],
        "text": job.get("text", ""),
        "steps_done": job["steps_done"],
        "steps_total": job["steps_total"],
        "steps": store.steps(job["id"], since, job["steps_done"]),
        "finish_reason": job.get("finish_reason") or None,
        "error": job.get("error") or None,
        "queue_position": position,
        "forced_ids": job["forced_ids"],
        "branch": job["branch"],
        "prompt_tokens": job.get("prompt_tokens"),
        "attempt": job["attempt"],
        "created_at": job["created_at"],
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "mine": job.get("owner") == client_id(),
        "room": job.get("room") or None,
        "nickname": job.get("nickname", ""),
        "score": job.get("score") or None,
        "surprisal": _surprisal(store, job),
    }


def _surprisal(store, job: dict[str, Any]) -> dict[str, Any] | None:
    """A finished score job's surprisal totals, computed from all its steps (None for other jobs)."""
    if not job.get("score") or job["status"] != JobStatus.DONE.value:
        return None
    return surprisal(store.steps(job["id"], 0, job["steps_done"]))
