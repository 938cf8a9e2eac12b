"""The Redis key layout, built in one place.

Every key the service touches comes from a function here, under KEY_PREFIX.
"""
from __future__ import annotations

import re
import secrets

KEY_PREFIX = "genq:"
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")


def new_job_id() -> str:
    """A fresh job id carrying 128 random bits (22 URL-safe characters)."""
    return secrets.token_urlsafe(16)


def is_job_id(value: str) -> bool:
    """True when `value` has the shape of a job id (cheap check before touching Redis)."""
    return bool(JOB_ID_PATTERN.match(value))


def job_key(job_id: str) -> str:
    """Hash: the job record (status, prompt, params, timestamps, text, fence, ...)."""
    return f"{KEY_PREFIX}job:{job_id}"


def steps_key(job_id: str) -> str:
    """Hash: step index -> binary step record (contract.steprecord), "c<index>" -> its context edit."""
    return f"{KEY_PREFIX}job:{job_id}:steps"


def vocab_key(model: str) -> str:
    """Hash: token id -> display text of `model`'s tokens (its workers publish the tokenizer's whole table)."""
    return f"{KEY_PREFIX}vocab:{model}"


def queued_key(queue: str) -> str:
    """Sorted set: ids of jobs waiting in `queue`, scored by submit time (queue position)."""
    return f"{KEY_PREFIX}queued:{queue}"


def client_jobs_key(client_id: str) -> str:
    """Sorted set: a client's unfinished job ids, scored by submit time (per-client cap)."""
    return f"{KEY_PREFIX}client:{client_id}:active"


def workers_key() -> str:
    """Sorted set: worker name -> time of its last heartbeat."""
    return f"{KEY_PREFIX}workers"


def worker_key(name: str) -> str:
    """Hash: what a worker announced (model, device, queue, capacity, progress)."""
    return f"{KEY_PREFIX}worker:{name}"


def step_rate_key(second: int) -> str:
    """Counter: steps computed by all workers during one wall-clock second."""
    return f"{KEY_PREFIX}steps-per-second:{second}"


def queued_models_key() -> str:
    """Set: the models jobs were queued for (with no live worker, their queues are still reported)."""
    return f"{KEY_PREFIX}models:queued"


def recent_jobs_key() -> str:
    """List: the most recently finished job ids, newest first (teacher dashboard)."""
    return f"{KEY_PREFIX}recent"


def worker_jobs_key(name: str) -> str:
    """Set: ids of the jobs a worker is running (re-queued if the worker dies)."""
    return f"{KEY_PREFIX}worker:{name}:jobs"


def address_jobs_key(address: str) -> str:
    """Sorted set: unfinished job ids submitted without a session cookie from one address (cap)."""
    return f"{KEY_PREFIX}address:{address}:active"


def running_key() -> str:
    """Sorted set: ids of running jobs -> Redis time of their claim, moved on by the stale check (see recovery)."""
    return f"{KEY_PREFIX}running"


def model_status_key(model: str) -> str:
    """Hash: a model's load state as workers last reported it (state, reason, worker, at)."""
    return f"{KEY_PREFIX}model:{model}:status"


def broker_queue_key(queue: str) -> str:
    """List: Celery's messages waiting in `queue` (kombu's Redis transport names it after the queue)."""
    return queue


def broker_unacked_key() -> str:
    """Hash: kombu's messages delivered to a worker and not yet acknowledged (delivery tag -> message)."""
    return "unacked"


def broker_unacked_index_key() -> str:
    """Sorted set: kombu's unacknowledged delivery tags -> the time they were delivered."""
    return "unacked_index"


# -- class rooms ----------------------------------------------------------------------------

ROOM_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no look-alikes: 0/O, 1/I/L are left out
ROOM_CODE_LENGTH = 6
ROOM_CODE_PATTERN = re.compile(f"^[{ROOM_CODE_ALPHABET}]{{{ROOM_CODE_LENGTH}}}$")


def new_room_code() -> str:
    """A fresh join code: 6 characters a class can read off a projector and type without confusion."""
    return "".join(secrets.choice(ROOM_CODE_ALPHABET) for _ in range(ROOM_CODE_LENGTH))


def normalize_room_code(value: str) -> str | None:
    """The canonical (upper-case) form of a typed code ("k7p m2q", "K7P-M2Q"), or None when it cannot be one."""
    code = "".join(value.split()).replace("-", "").upper()
    return code if ROOM_CODE_PATTERN.match(code) else None


def room_key(code: str) -> str:
    """Hash: a class room (title, prompt, params, locked, same_prompt, guess, closed, timestamps)."""
    return f"{KEY_PREFIX}room:{code}"


def room_jobs_key(code: str) -> str:
    """Sorted set: ids of the jobs submitted in a room, scored by submit time."""
    return f"{KEY_PREFIX}room:{code}:jobs"


def job_guesses_key(job_id: str) -> str:
    """Hash: step index -> JSON of the student's scored guess for that step ("guess the next token")."""
    return f"{KEY_PREFIX}job:{job_id}:guesses"
