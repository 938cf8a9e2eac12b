"""The worker's Celery app: `celery -A worker.celery_app worker -Q <model queue>`.

The model is loaded once, when the worker process starts (worker_init), and shared by
all task threads through the batch runner. Use the threads pool (default) or solo:
prefork with concurrency > 1 would load one model copy per child.
"""
from __future__ import annotations

import logging
import os

from celery import Celery, signals
from transformers.utils.logging import disable_progress_bar

from contract.defaults import CANNOT_START_EXIT
from contract.logs import configure_logging
from contract.settings import Settings
from contract.tasks import GENERATE_TASK, celery_config, model_id, queue_for_model, task_id_for
from worker import runtime as runtime_module
from worker.broker import TRANSPORT


log = logging.getLogger(__name__)
settings = Settings.from_env()
app = Celery("worker", include=["worker.tasks"])
app.conf.update(celery_config(settings))
app.conf.broker_transport = TRANSPORT  # kombu's Redis transport, surviving a broker loss while jobs run
app.conf.task_default_queue = queue_for_model(model_id(settings.model_name))  # this worker's model only

_runtime: runtime_module.WorkerRuntime | None = None


def current_runtime() -> runtime_module.WorkerRuntime:
    """The process's runtime, started by the worker_init signal."""
    if _runtime is None:
        raise RuntimeError("the worker runtime is not started (is this a Celery worker process?)")
    return _runtime


@signals.setup_logging.connect
def _logging(**_: object) -> None:
    """LOG_LEVEL and LOG_FORMAT instead of Celery's own set-up (a handler here makes Celery skip its own)."""
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_init.connect
def _boot(sender, **_: object) -> None:
    """Load the model and start serving; any failure is one line on stderr and a non-zero exit, never a
    worker that answers pings but runs nothing (Celery would log and swallow an exception raised here)."""
    global _runtime
    configure_logging(settings.log_level, settings.log_format)  # Celery's setup_logging comes after this signal
    if settings.log_format == "json":
        disable_progress_bar()  # the loading bar would be a line of text among the JSON
    name, model = sender.hostname, model_id(settings.model_name)
    try:
        options = sender.app.conf.broker_transport_options
        if options.get("visibility_timeout", 3600) <= settings.max_queue_age_seconds + settings.job_deadline_seconds:
            raise RuntimeError("broker visibility_timeout must exceed MAX_QUEUE_AGE_SECONDS + JOB_DEADLINE_SECONDS")
        log.info("worker %s: loading model %s (device %s, dtype %s)", name, model, settings.device, settings.dtype)
        _runtime = runtime_module.WorkerRuntime.boot(settings, name, _publish)
        _runtime.start()
    except Exception as exc:  # noqa: BLE001 - one line, then a non-zero exit
        reason = str(exc) if isinstance(exc, runtime_module.ModelLoadError) else f"cannot start: {exc}"
        log.error("worker %s: %s", name, reason)
        logging.shutdown()
        os._exit(CANNOT_START_EXIT)
    engine, batch = _runtime.engine, _runtime.runner.main
    dtype = str(next(engine.model.parameters()).dtype).removeprefix("torch.")
    log.info("worker %s: serving %s on %s (%s, %s cache, CUDA graphs %s, %s), queue %s", name, engine.name,
             engine.device, dtype, engine.cache_kind, "on" if batch.graphs_on else "off", engine.logits, _runtime.queue)


def _publish(job_id: str, queue: str) -> None:
    app.send_task(GENERATE_TASK, args=[job_id], queue=queue, task_id=task_id_for(job_id))


@signals.worker_shutdown.connect
def _shutdown(**_: object) -> None:
    if _runtime is not None:
        _runtime.stop()
