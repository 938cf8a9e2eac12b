"""Submitting jobs and presenting them: the logic behind both the JSON API and the form."""
from __future__ import annotations

import secrets
from typing import Any

from flask import current_app

from contract import keys
from contract.jobs import TERMINAL, Limits, JobStatus, ValidationError, validate_request
from contract.scoring import surprisal
from contract.settings import Settings
from contract.defaults import DEAD_AFTER_BEATS
from contract.record import JobRecord
from contract.store import ClientBusy, QueueFull
from contract.tasks import queue_for_model
from contract.workers import ModelState
from web import classroom
from web.backend import default_model, get_registry, get_store, send_job
from web.errors import ApiError
from web.security import client_address, client_id, has_session_cookie
from web.teacher import signed_in

QUEUE_FULL_RETRY_AFTER = 30
CLIENT_BUSY_RETRY_AFTER = 10
MODEL_UNAVAILABLE_RETRY_AFTER = 30


def settings() -> Settings:
    """The settings of the current app."""
    return current_app.config["SETTINGS"]


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
    check_model_available(model)
    check_forced_ids(model, request.forced_ids)
    queue = queue_for_model(model)
    owner = client_id()
    cookieless = not has_session_cookie()
    seed = request.params.seed if request.params.seed is not None else secrets.randbelow(2**31)
    store = get_store()
    try:
        store.create(
            job_id, request, owner=owner, model=model, queue=queue, seed=seed,
            max_queued=s.max_queued_jobs, max_active=s.max_active_jobs_per_client,
            active_window=s.max_queue_age_seconds + s.job_deadline_seconds,
            address=client_address(), max_per_address=s.max_active_jobs_per_address if cookieless else 0,
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
        store.fail_queued(job_id, f"could not queue the job: {type(exc).__name__}")
        raise ApiError(503, "unavailable", "the queue is unreachable; try again shortly", retry_after=5) from None
    return {"id": job_id, "status": JobStatus.QUEUED.value, "url": f"/api/jobs/{job_id}", "page": f"/jobs/{job_id}"}


def model_availability(model: str) -> str | None:
    """None when a worker can take a job for `model`; otherwise why not, naming the model and the cause.

    A job is accepted when a live worker serves the model or one is loading it, or, with
    ACCEPT_JOBS_WITHOUT_WORKERS (scale from zero), when the model is the default or was served before.
    """
    registry = get_registry()
    if any(w.model == model for w in registry.live()):
        return None
    status = registry.model_status(model)
    fresh = status is not None and registry.now() - status.at < settings().heartbeat_seconds * DEAD_AFTER_BEATS
    if status is not None and status.state is ModelState.LOADING and fresh:
        return None
    if status is not None and status.state is ModelState.FAILED:
        return f"the model {model} is unavailable: its worker could not load it ({status.reason})"
    if settings().accept_jobs_without_workers and (model == default_model() or status is not None):
        return None
    return f"the model {model} is unavailable: no worker is serving it"


def check_model_available(model: str) -> None:
    """Raise 503 model_unavailable (naming the model and the recorded cause) unless a worker can take the job."""
    reason = model_availability(model)
    if reason is not None:
        raise ApiError(503, "model_unavailable", reason, field="model", retry_after=MODEL_UNAVAILABLE_RETRY_AFTER)


def check_forced_ids(model: str, forced: tuple[int, ...]) -> None:
    """Raise 400 naming forced_ids when an id lies past the vocabulary that `model`'s live workers announce.

    Workers that announce no size (older ones) leave the check to the worker, which fails the job instead.
    """
    if not forced:
        return
    sizes = [w.vocab_size for w in get_registry().live() if w.model == model and w.vocab_size > 0]
    if sizes and max(forced) >= min(sizes):
        raise ValidationError("forced_ids", f"forced_ids holds the token id {max(forced)}, outside the vocabulary "
                              f"of {model} (ids 0 to {min(sizes) - 1})", "range")


def load(job_id: str) -> JobRecord:
    """The stored job, or a 404 ApiError when unknown or expired.

    A job submitted in a class room is shown only to its student and to the teacher signed in on the dashboard
    (403 otherwise).
    """
    return _visible(get_store().get(job_id) if keys.is_job_id(job_id) else None)


def load_with_steps(job_id: str, since: int) -> tuple[JobRecord, list[dict[str, Any]]]:
    """`load` and the job's steps after `since`, read in one round trip (what every poll needs); of a guess job, only
    those its reader may see and the next one (`classroom.readable_steps`)."""
    found = get_store().view(job_id, since, classroom.readable_steps) if keys.is_job_id(job_id) else None
    job = _visible(found[0] if found else None)
    return job, found[1]


def _visible(job: JobRecord | None) -> JobRecord:
    """The job if this client may see it (404 unknown, 403 another student's), orphans failed readably."""
    if job is None:
        raise ApiError(404, "not_found", "no such job (unknown id, or expired)")
    if job.room and job.owner != client_id() and not signed_in():  # a header here would be an unlimited token oracle
        raise ApiError(403, "forbidden", "this job belongs to another student of a class room")
    return fail_if_orphaned(job)


def fail_if_orphaned(job: JobRecord) -> JobRecord:
    """A job queued for a model no worker has served for QUEUED_WITHOUT_WORKER_SECONDS is failed, readably."""
    s = settings()
    if job.status is not JobStatus.QUEUED or s.accept_jobs_without_workers:
        return job
    registry = get_registry()
    now = registry.now()
    if now - job.created_at < s.queued_without_worker_seconds:
        return job
    status = registry.model_status(job.model)
    last_seen = status.at if status is not None and status.state is not ModelState.FAILED else 0.0
    if now - last_seen < s.queued_without_worker_seconds or any(w.model == job.model for w in registry.live()):
        return job
    cause = f" (its worker could not load it: {status.reason})" if status and status.state is ModelState.FAILED else ""
    error = (f"no worker has served the model {job.model} for {s.queued_without_worker_seconds} seconds{cause}; "
             "the job was not run")
    get_store().fail_queued(job.id, error)
    return get_store().get(job.id) or job


def present(job: JobRecord, since: int, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The API view of a job, with only the steps after `since` (`steps`: already read with the job).

    A guess job shows its steps only as far as its student has guessed (`guessed`), and the next step as a question
    (`guess_next`): its context and its candidates, never its choice or probabilities; its seed once the game is over.
    """
    store = get_store()
    position = store.queue_position(job.id, job.queue) if job.status is JobStatus.QUEUED else None
    guessed = classroom.guessed_so_far(job)
    shown = job.steps_done if guessed is None else min(guessed, job.steps_done)
    if steps is None:
        steps = store.steps(job.id, since, classroom.readable_steps(job), job.model)
    steps, after = steps[:max(shown - since, 0)], steps[max(shown - since, 0):]
    upcoming = None
    if shown < job.steps_done:  # the step to guess next: read with the others, unless `since` was past it
        upcoming = after[0] if after else store.steps(job.id, shown, shown + 1, job.model)[0]
    if upcoming is not None and job.status in TERMINAL:
        text = upcoming["context"]  # the text before the first step not guessed yet
    else:
        text = job.text or (store.text_so_far(job) if job.status in TERMINAL else "")  # no text: ended by recovery
    params = job.params.to_dict()
    if guessed is not None and (upcoming is not None or job.status not in TERMINAL):
        params["seed"] = None  # the same job run again with its seed would give the steps still to guess
    return {
        "id": job.id,
        "status": job.status.value,
        "prompt": job.prompt,
        "params": params,
        "model": job.model,
        "text": text,
        "steps_done": job.steps_done,
        "steps_total": job.steps_total,
        "steps": steps,
        "guessed": guessed,
        "guess_next": classroom.next_question(upcoming) if upcoming is not None else None,
        "finish_reason": job.finish_reason or None,
        "error": job.error or None,
        "queue_position": position,
        "forced_ids": list(job.forced_ids),
        "branch": job.branch.to_dict() if job.branch else None,
        "prompt_tokens": job.prompt_tokens,
        "attempt": job.attempt,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "mine": job.owner == client_id(),
        "room": job.room or None,
        "nickname": job.nickname,
        "score": job.score or None,
        "score_tokens": job.score_tokens,
        "guess": job.guess,
        "surprisal": _surprisal(store, job) if upcoming is None else None,
    }


def _surprisal(store, job: JobRecord) -> dict[str, Any] | None:
    """A finished score job's surprisal totals, computed from all its steps (None for other jobs)."""
    if not job.score or job.status is not JobStatus.DONE:
        return None
    return surprisal(store.steps(job.id, 0, job.steps_done, job.model))
