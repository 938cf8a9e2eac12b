"""The one task: run a job through this process's batch runner. Thin, like a web view."""
from __future__ import annotations

from contract.tasks import GENERATE_TASK
from worker.celery_app import app, current_runtime


@app.task(name=GENERATE_TASK)
def generate(job_id: str) -> str:
    """Run job `job_id`; every step is written to Redis as the batch computes it."""
    return current_runtime().run_job(job_id)
