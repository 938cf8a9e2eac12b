"""The web's connections: Redis (JobStore) and a producer-only Celery, kept in app.extensions."""
from __future__ import annotations

import redis
from celery import Celery
from flask import Flask, current_app

from contract import keys
from contract.record import JobRecord, redis_text
from contract.settings import Settings
from contract.store import JobStore
from contract.workers import WorkerRegistry
from contract.tasks import GENERATE_TASK, celery_config, model_id, task_id_for
from web.celery_ping import CachedPing


def init_app(app: Flask) -> None:
    """Connect to Redis and the broker; nothing is contacted until the first request."""
    settings: Settings = app.config["SETTINGS"]
    client = app.config.get("REDIS_CLIENT") or redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
    )
    producer = Celery("web", set_as_current=False)
    producer.conf.update(celery_config(settings))
    app.extensions["redis"] = client
    app.extensions["store"] = JobStore(client, settings.job_ttl_seconds)
    app.extensions["registry"] = WorkerRegistry(client, settings.heartbeat_seconds, settings.job_ttl_seconds)
    app.extensions["celery"] = producer
    app.extensions["celery_ping"] = CachedPing(producer)


def get_store() -> JobStore:
    """The JobStore of the current app."""
    return current_app.extensions["store"]


def send_job(job_id: str, queue: str) -> None:
    """Put the job's message on its model's queue."""
    current_app.extensions["celery"].send_task(GENERATE_TASK, args=[job_id], queue=queue, task_id=task_id_for(job_id))


def get_registry() -> WorkerRegistry:
    """The WorkerRegistry of the current app."""
    return current_app.extensions["registry"]


def live_workers() -> list[dict[str, object]]:
    """Workers that announced themselves recently, with `stalled` set for those not progressing."""
    return get_registry().live_view()


def steps_last_minute(now: float | None = None) -> int:
    """Steps computed by all workers during the last 60 seconds."""
    r = current_app.extensions["redis"]
    second = int(get_registry().now() if now is None else now)
    values = r.mget([keys.step_rate_key(s) for s in range(second - 60, second)])
    return sum(int(v) for v in values if v)


def queue_snapshot(queue: str, now: float | None = None) -> dict[str, float]:
    """Jobs waiting in `queue`: how many, how long the oldest has waited, and the broker list's length.

    `waiting` counts jobs not yet claimed by a worker (our sorted set); `broker_backlog` counts
    the Celery messages no worker has taken yet (the Redis list named after the queue).
    """
    r = current_app.extensions["redis"]
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.queued_key(queue))
    pipe.zrange(keys.queued_key(queue), 0, 0, withscores=True)
    pipe.llen(queue)
    waiting, oldest, backlog = pipe.execute()
    now = get_registry().now() if now is None else now
    since = None
    if oldest:  # a job put back keeps its place by its creation time, but has waited since it was put back
        since = float(r.hget(keys.job_key(redis_text(oldest[0][0])), "requeued_at") or oldest[0][1])
    return {
        "waiting": int(waiting),
        "oldest_age": max(0.0, now - since) if since is not None else 0.0,
        "broker_backlog": int(backlog),
    }


def default_model() -> str:
    """The model jobs use when the client names none."""
    return model_id(current_app.config["SETTINGS"].model_name)


def reported_models(workers: list[dict[str, object]]) -> list[str]:
    """The models whose queues are reported: the default one, those the live `workers` serve, and those jobs
    were queued for (scaled from zero, a model with waiting jobs has no worker yet)."""
    r = current_app.extensions["redis"]
    queued = {redis_text(m) for m in r.smembers(keys.queued_models_key())}
    return sorted({default_model(), *(str(w["model"]) for w in workers), *queued})


def recent_status_counts() -> dict[str, int]:
    """How the most recently finished jobs (the dashboard's list, at most 100) ended, by status."""
    r = current_app.extensions["redis"]
    pipe = r.pipeline(transaction=False)
    for job_id in r.lrange(keys.recent_jobs_key(), 0, -1):
        pipe.hget(keys.job_key(job_id.decode()), "status")
    counts: dict[str, int] = {}
    for status in pipe.execute():
        if status is not None:
            counts[status.decode()] = counts.get(status.decode(), 0) + 1
    return counts


def recent_jobs(limit: int = 20) -> list[dict[str, object]]:
    """The most recently finished jobs, newest first, without their owners (teacher dashboard)."""
    r = current_app.extensions["redis"]
    ids = list(dict.fromkeys(i.decode() for i in r.lrange(keys.recent_jobs_key(), 0, limit - 1)))
    jobs = (get_store().get(job_id) for job_id in ids)
    return [_dashboard_view(job) for job in jobs if job is not None]


def _dashboard_view(job: JobRecord) -> dict[str, object]:
    """A finished job for the teacher: what was asked and how it ended, never who asked."""
    return {"id": job.id, "status": job.status.value, "prompt": job.prompt, "params": job.params.to_dict(),
            "model": job.model, "text": job.text, "error": job.error, "finish_reason": job.finish_reason,
            "steps_done": job.steps_done, "steps_total": job.steps_total, "attempt": job.attempt,
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at}
