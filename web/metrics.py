"""`GET /metrics` through prometheus_client: queue and worker figures read from Redis, and request latency.

- `QueueCollector` reads Redis at scrape time: per model (the default model, and every model a
  live worker serves) jobs waiting, the oldest one's age, the broker backlog, live workers, their
  batch slots and the jobs they run; plus steps in the last minute, each worker's step counter and
  how the recently finished jobs ended. These figures are the same whichever web process answers.
- `genq_http_request_duration_seconds` (endpoint, method, status) is counted in every web
  process. Under gunicorn (web/gunicorn_conf.py sets PROMETHEUS_MULTIPROC_DIR) the processes
  write it to files and a scrape sums them all; without that folder it covers this process only.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from contract.tasks import queue_for_model
from web.backend import live_workers, queue_snapshot, recent_status_counts, reported_models, steps_last_minute

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
REDIS_UP_HELP = "1 when this scrape could read the service's state from Redis, 0 when Redis was unreachable."

bp = Blueprint("metrics", __name__)

REQUEST_SECONDS = Histogram(
    "genq_http_request_duration_seconds", "Time to answer an HTTP request, by endpoint, method and status.",
    ["endpoint", "method", "status"], registry=None,  # exposed through each scrape's registry below
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class QueueCollector(Collector):
    """The service's state from Redis, read on every scrape (call within a request of the app)."""

    def collect(self) -> Iterator[Metric]:
        """Every figure, and genq_redis_up; with Redis away only that (the scrape and its latency histogram
        still succeed, so an outage shows as a value, not as a target gone)."""
        try:
            figures = list(self._figures())
        except RedisError:
            yield GaugeMetricFamily("genq_redis_up", REDIS_UP_HELP, value=0)
            return
        yield GaugeMetricFamily("genq_redis_up", REDIS_UP_HELP, value=1)
        yield from figures

    def _figures(self) -> Iterator[Metric]:
        workers = live_workers()
        by_model: dict[str, list[dict[str, object]]] = defaultdict(list)
        for worker in workers:
            by_model[str(worker["model"])].append(worker)
        models = reported_models(workers)

        per_model = ["model"]
        waiting = GaugeMetricFamily("genq_queue_waiting_jobs",
                                    "Jobs queued for a model and not yet started by a worker (the autoscaling signal).",
                                    labels=per_model)
        oldest = GaugeMetricFamily("genq_queue_oldest_job_age_seconds",
                                   "How long the oldest waiting job of a model has waited (0 when none waits).",
                                   labels=per_model)
        backlog = GaugeMetricFamily("genq_queue_broker_messages",
                                    "Celery messages in the model queue's Redis list that no worker has taken yet.",
                                    labels=per_model)
        live = GaugeMetricFamily("genq_workers", "Workers that sent a heartbeat recently, per model and device.",
                                 labels=["model", "device"])
        stalled = GaugeMetricFamily("genq_workers_stalled", "Live workers that hold jobs but made no step recently.",
                                    labels=per_model)
        capacity = GaugeMetricFamily("genq_worker_slots", "Jobs the live workers of a model can step together.",
                                     labels=per_model)
        active = GaugeMetricFamily("genq_active_jobs", "Jobs the live workers of a model are running now.",
                                   labels=per_model)
        for model in models:
            snapshot = queue_snapshot(queue_for_model(model))
            serving = by_model.get(model, [])
            waiting.add_metric([model], snapshot["waiting"])
            oldest.add_metric([model], snapshot["oldest_age"])
            backlog.add_metric([model], snapshot["broker_backlog"])
            stalled.add_metric([model], sum(1 for w in serving if w["stalled"]))
            capacity.add_metric([model], sum(int(w["capacity"]) for w in serving))
            active.add_metric([model], sum(int(w["active"]) for w in serving))
            devices: dict[str, int] = defaultdict(int)
            for w in serving:
                devices[str(w["device"])] += 1
            for device, count in sorted(devices.items()) or [("none", 0)]:
                live.add_metric([model, device], count)

        steps = GaugeMetricFamily("genq_steps_last_minute", "Steps computed by all workers during the last 60 seconds.",
                                  value=steps_last_minute())
        per_worker = CounterMetricFamily("genq_worker_steps", "Steps a live worker has computed since it started.",
                                         labels=["worker", "model"])
        for w in sorted(workers, key=lambda w: str(w["name"])):
            per_worker.add_metric([str(w["name"]), str(w["model"])], int(w["steps_total"]))
        outcomes = GaugeMetricFamily("genq_recent_jobs", "How the most recently finished jobs (at most 100) ended.",
                                     labels=["status"])
        for status, count in sorted(recent_status_counts().items()):
            outcomes.add_metric([status], count)
        yield from (waiting, oldest, backlog, live, stalled, capacity, active, steps, per_worker, outcomes)


@bp.get("/metrics")
def metrics() -> Response:
    """Queue length, oldest job age and workers per model; steps, job outcomes and request latency."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # every gunicorn process's latency, summed
    else:
        registry.register(REQUEST_SECONDS)
    response = Response(generate_latest(registry), content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Time every request into REQUEST_SECONDS."""
    app.before_request(_start_timer)
    app.after_request(_observe)


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.get("request_started")
    if started is not None:
        endpoint = request.endpoint or "unmatched"  # unknown paths share one label: no label per URL
        REQUEST_SECONDS.labels(endpoint, request.method, str(response.status_code)).observe(
            time.perf_counter() - started)
    return response
