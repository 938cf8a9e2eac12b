"""WorkerRuntime: what one worker process holds for its whole life (model, batch runner, heartbeat)."""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from typing import Callable

import redis

from contract import keys
from contract.jobs import GenerationParams, JobStatus
from contract.settings import Settings
from contract.store import JobStore
from contract.tasks import queue_for_model
from engine.batch import SequenceSpec
from engine.loading import load_engine
from engine.step_engine import StepEngine
from worker.runner import BatchRunner, JobHandle

log = logging.getLogger(__name__)
DEAD_AFTER_BEATS = 5  # a worker silent for this many heartbeat periods is dead; its jobs are re-queued

Publish = Callable[[str, str], None]  # (job_id, queue) -> put a job message on a queue


class WorkerRuntime:
    """The model, loaded once per process, and the threads that serve it."""

    def __init__(self, settings: Settings, engine: StepEngine, store: JobStore, name: str, publish: Publish) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.name = name
        self.publish = publish
        self.queue = queue_for_model(engine.name)
        self.runner = BatchRunner(engine.batch(settings.max_batch), store, pace_seconds=settings.step_pace_seconds)
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    @classmethod
    def boot(cls, settings: Settings, hostname: str, publish: Publish) -> "WorkerRuntime":
        """Load the model and connect to Redis (both once per worker process).

        The announced name adds a boot id to the Celery hostname, so a restarted worker is a new
        worker and the jobs its previous life was running are recognised as orphans.
        """
        engine = load_engine(settings.model_name, settings.device, settings.hf_token, settings.torch_threads)
        client = redis.Redis.from_url(settings.redis_url, health_check_interval=10)
        name = f"{hostname}/{os.getpid()}-{secrets.token_hex(2)}"
        return cls(settings, engine, JobStore(client, settings.job_ttl_seconds), name, publish)

    def start(self) -> None:
        """Start the batch runner and the heartbeat."""
        self.runner.start()
        self._heartbeat.start()

    def stop(self) -> None:
        """Stop both threads and withdraw this worker's announcement."""
        self._stop.set()
        self.runner.stop()
        self.runner.join(timeout=10)
        try:
            self.store.redis.zrem(keys.workers_key(), self.name)
            self.store.redis.delete(keys.worker_key(self.name))
        except redis.RedisError:
            pass  # Redis is gone; the announcement expires by itself

    def run_job(self, job_id: str) -> str:
        """Run one delivery of a job to its end (or until a newer attempt takes it); returns the outcome."""
        s = self.settings
        claim = self.store.claim(job_id, self.name, max_attempts=s.max_attempts, max_queue_age=s.max_queue_age_seconds)
        if claim.outcome != "run":
            log.info("job %s not run: %s", job_id, claim.outcome)
            return claim.outcome
        job = self.store.get(job_id)
        try:
            spec = self._sequence(job)
        except ValueError as exc:
            self.store.finish(job_id, claim.fence, JobStatus.FAILED, error=str(exc))
            return JobStatus.FAILED.value
        finished = self._already_finished(spec)
        if finished:  # an earlier attempt stored the last step but died before marking the job done
            text = self.engine.tokenizer.decode(spec.ids, skip_special_tokens=True)
            self.store.finish(job_id, claim.fence, JobStatus.DONE, finish_reason=finished, text=text)
            return JobStatus.DONE.value
        handle = JobHandle(job_id, claim.fence, spec, deadline=time.monotonic() + s.job_deadline_seconds)
        self.runner.submit(handle)
        try:
            return handle.wait()
        finally:
            self.store.release(job_id, self.name)

    def _already_finished(self, spec: SequenceSpec) -> str | None:
        """The finish reason when the resumed sequence has nothing left to do."""
        if spec.first_index > 1 and spec.ids[-1] in self.runner.batch.eos_ids:
            return "eos"
        if spec.first_index > spec.params.steps:
            return "length"
        return None

    def _sequence(self, job: dict) -> SequenceSpec:
        """The job's context ids, resumed after the steps an earlier attempt stored.

        Raises:
            ValueError: the prompt is too long in tokens for this model.
        """
        params = GenerationParams.from_dict(job["params"])
        prompt_ids = self.engine.tokenize(job["prompt"])
        limit = self.settings.max_prompt_tokens
        if self.engine.max_positions:
            limit = min(limit, self.engine.max_positions - params.steps)
        if len(prompt_ids) + len(job["forced_ids"]) > limit:
            raise ValueError(
                f"the prompt is {len(prompt_ids) + len(job['forced_ids'])} tokens long; "
                f"this model accepts at most {max(limit, 0)} with {params.steps} steps"
            )
        forced = list(job["forced_ids"])
        vocab = len(self.engine.tokenizer)
        if any(i >= vocab for i in forced):
            raise ValueError(f"forced_ids holds a token id outside this model's vocabulary (size {vocab})")
        self.store.set_fields(job["id"], job["fence"], prompt_tokens=self.engine.pieces(prompt_ids + forced))
        done = self.store.steps(job["id"], 0, job["steps_done"])
        if len(done) != job["steps_done"]:
            raise ValueError("stored steps are incomplete; the job cannot resume")
        generated = [s["chosen"]["id"] for s in done]
        return SequenceSpec(job["id"], prompt_ids + forced + generated, params, first_index=len(done) + 1)

    def _beat(self) -> None:
        """Announce this worker every few seconds: model, device, queue, capacity, progress."""
        period = self.settings.heartbeat_seconds
        while not self._stop.is_set():
            now = time.time()
            fields = {
                "name": self.name,
                "model": self.engine.name,
                "device": str(self.engine.device),
                "queue": self.queue,
                "capacity": self.settings.max_batch,
                "active": len(self.runner.active),
                "steps_total": self.runner.steps_total,
                "last_progress": repr(self.runner.last_progress),
                "last_beat": repr(now),
            }
            try:
                pipe = self.store.redis.pipeline()
                pipe.hset(keys.worker_key(self.name), mapping=fields)
                pipe.expire(keys.worker_key(self.name), period * 6)
                pipe.zadd(keys.workers_key(), {self.name: now})
                pipe.execute()
                self._requeue_orphans(now - period * DEAD_AFTER_BEATS)
                for job_id in self.store.stranded(self.queue, grace=period * DEAD_AFTER_BEATS, now=now):
                    log.warning("job %s lost its queue message; re-queueing it", job_id)
                    self.publish(job_id, self.queue)
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(period)

    def _requeue_orphans(self, silent_since: float) -> None:
        """Re-queue the running jobs of workers that stopped beating (killed, crashed, cut off).

        Faster than waiting for the broker's visibility timeout; a duplicate delivery later is
        harmless (fencing token, resume from stored steps).
        """
        for dead in self.store.dead_workers(silent_since):
            for job_id, queue in self.store.reap(dead):
                log.warning("worker %s is gone; re-queueing its job %s", dead, job_id)
                self.publish(job_id, queue)
