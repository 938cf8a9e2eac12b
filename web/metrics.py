"""`GET /metrics`: the service's state in the Prometheus text format, the signal for autoscaling.

Per model (the default model, and every model a live worker serves): jobs waiting, the oldest
one's age, the broker backlog, live workers, their batch slots and the jobs they run. Plus steps
computed in the last minute, each worker's step counter, and how the recently finished jobs ended.
Everything is read from Redis on each scrape; nothing here writes.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flask import Blueprint, Response

from contract.tasks import queue_for_model
from web import jobs
from web.backend import live_workers, queue_snapshot, recent_status_counts, steps_last_minute

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

bp = Blueprint("metrics", __name__)


@dataclass
class Family:
    """One metric: its name, type, help text and samples (labels, value)."""

    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        """Record one sample."""
        self.samples.append((labels, value))

    def render(self) -> str:
        """The family in the text exposition format."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{{{inner}}} {_number(value)}" if inner else f"{self.name} {_number(value)}")
        return "\n".join(lines)


@bp.get("/metrics")
def metrics() -> Response:
    """Queue length, oldest job age and workers per model; steps and job outcomes."""
    response = Response("\n".join(f.render() for f in collect()) + "\n", content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


def collect() -> list[Family]:
    """Read the current state from Redis into metric families."""
    workers = live_workers()
    by_model: dict[str, list[dict[str, object]]] = defaultdict(list)
    for worker in workers:
        by_model[str(worker["model"])].append(worker)
    models = sorted({jobs.default_model(), *by_model})

    waiting = Family("genq_queue_waiting_jobs", "gauge",
                     "Jobs queued for a model and not yet started by a worker (the autoscaling signal).")
    oldest = Family("genq_queue_oldest_job_age_seconds", "gauge",
                    "How long the oldest waiting job of a model has waited (0 when none waits).")
    backlog = Family("genq_queue_broker_messages", "gauge",
                     "Celery messages in the model queue's Redis list that no worker has taken yet.")
    live = Family("genq_workers", "gauge", "Workers that sent a heartbeat recently, per model and device.")
    stalled = Family("genq_workers_stalled", "gauge", "Live workers that hold jobs but made no step recently.")
    capacity = Family("genq_worker_slots", "gauge", "Jobs the live workers of a model can step together.")
    active = Family("genq_active_jobs", "gauge", "Jobs the live workers of a model are running now.")
    for model in models:
        snapshot = queue_snapshot(queue_for_model(model))
        serving = by_model.get(model, [])
        waiting.add(snapshot["waiting"], model=model)
        oldest.add(snapshot["oldest_age"], model=model)
        backlog.add(snapshot["broker_backlog"], model=model)
        stalled.add(sum(1 for w in serving if w["stalled"]), model=model)
        capacity.add(sum(int(w["capacity"]) for w in serving), model=model)
        active.add(sum(int(w["active"]) for w in serving), model=model)
        devices = defaultdict(int)
        for w in serving:
            devices[str(w["device"])] += 1
        for device, count in sorted(devices.items()) or [("none", 0)]:
            live.add(count, model=model, device=device)

    steps = Family("genq_steps_last_minute", "gauge", "Steps computed by all workers during the last 60 seconds.")
    steps.add(steps_last_minute())
    per_worker = Family("genq_worker_steps_total", "counter", "Steps a live worker has computed since it started.")
    for w in sorted(workers, key=lambda w: str(w["name"])):
        per_worker.add(int(w["steps_total"]), worker=str(w["name"]), model=str(w["model"]))
    outcomes = Family("genq_recent_jobs", "gauge", "How the most recently finished jobs (at most 100) ended.")
    for status, count in sorted(recent_status_counts().items()):
        outcomes.add(count, status=status)
    return [waiting, oldest, backlog, live, stalled, capacity, active, steps, per_worker, outcomes]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 3))
