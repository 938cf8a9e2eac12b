"""The web's connections: Redis (JobStore) and a producer-only Celery, kept in app.extensions."""
from __future__ import annotations

import time

import redis
from celery import Celery
from flask import Flask, current_app

from contract import keys
from contract.settings import Settings
from contract.store import JobStore
from contract.tasks import GENERATE_TASK, celery_config

STALL_SECONDS = 30.0  # a worker with jobs but no step for this long is reported as stalled


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
    app.extensions["celery"] = producer


def get_store() -> JobStore:
    """The JobStore of the current app."""
    return current_app.extensions["store"]


def send_job(job_id: str, queue: str) -> None:
    """Put the job's message on its model's queue."""
    current_app.extensions["celery"].send_task(GENERATE_TASK, args=[job_id], queue=queue)


def live_workers(now: float | None = None) -> list[dict[str, object]]:
    """Workers that announced themselves recently, with `stalled` set for those not progressing."""
    r = current_app.extensions["redis"]
    settings: Settings = current_app.config["SETTINGS"]
    now = time.time() if now is None else now
    names = r.zrangebyscore(keys.workers_key(), now - settings.heartbeat_seconds * 3, "+inf")
    pipe = r.pipeline()
    for name in names:
        pipe.hgetall(keys.worker_key(name.decode()))
    workers = []
    for raw in pipe.execute():
        if not raw:
            continue
        info = {k.decode(): v.decode() for k, v in raw.items()}
        active = int(info.get("active", 0))
        idle_for = now - float(info.get("last_progress", now))
        workers.append(
            {
                "name": info["name"],
                "model": info["model"],
                "device": info["device"],
                "queue": info["queue"],
                "capacity": int(info.get("capacity", 1)),
                "active": active,
                "steps_total": int(info.get("steps_total", 0)),
                "seconds_since_beat": round(now - float(info["last_beat"]), 1),
                "stalled": active > 0 and idle_for > STALL_SECONDS,
            }
        )
    return workers


def steps_last_minute(now: float | None = None) -> int:
    """Steps computed by all workers during the last 60 seconds."""
    r = current_app.extensions["redis"]
    second = int(time.time() if now is None else now)
    values = r.mget([keys.step_rate_key(s) for s in range(second - 60, second)])
    return sum(int(v) for v in values if v)
