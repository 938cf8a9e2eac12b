"""BatchRunner: the one thread that owns the model's batch and steps every running job together.

Celery task threads hand it jobs (JobHandle) and wait; each step of the whole batch is
written to Redis in one pipelined round trip, and the answers (stale attempt, cancel asked)
decide which jobs leave the batch.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contract.jobs import FinishReason, JobStatus
from contract.store import JobStore, StepWrite
from engine.batch import BatchEngine, SequenceSpec, StepResult

log = logging.getLogger(__name__)

STORED, CANCEL_ASKED, STALE = 0, 1, -1


@dataclass
class JobHandle:
    """A job attempt handed to the runner; `wait()` returns how it ended."""

    job_id: str
    fence: int
    spec: SequenceSpec
    deadline: float  # time.monotonic() after which the job is stopped
    outcome: str = ""
    _done: threading.Event = field(default_factory=threading.Event)

    def resolve(self, outcome: str) -> None:
        """Record the outcome and release the waiting task."""
        self.outcome = outcome
        self._done.set()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the runner resolves this job."""
        self._done.wait(timeout)
        return self.outcome


class BatchRunner(threading.Thread):
    """Steps all active jobs of one worker process in batched forward passes."""

    def __init__(self, batch: BatchEngine, store: JobStore, *, redis_retry_seconds: float = 120.0,
                 pace_seconds: float = 0.0) -> None:
        super().__init__(name="batch-runner", daemon=True)
        self.batch = batch
        self.store = store
        self.redis_retry_seconds = redis_retry_seconds
        self.pace_seconds = pace_seconds  # pause after each step (STEP_PACE_SECONDS), for tests that watch progress
        self.inbox: queue.Queue[JobHandle] = queue.Queue()
        self.active: dict[str, JobHandle] = {}
        self.steps_total = 0
        self.last_progress = time.time()
        self._stopping = threading.Event()

    def submit(self, handle: JobHandle) -> None:
        """Queue a job attempt; it joins the batch at the next step."""
        self.inbox.put(handle)

    def stop(self) -> None:
        """Ask the loop to end after the current step."""
        self._stopping.set()

    def run(self) -> None:
        """Loop: admit new jobs, step the batch, store the steps, retire finished jobs."""
        while not self._stopping.is_set():
            self._admit(block=not self.active)
            if not self.active:
                continue
            try:
                results = self.batch.step()
            except Exception as exc:  # a model failure ends every job in the batch, readably
                log.exception("step failed")
                self._fail_all(f"the model failed: {type(exc).__name__}: {exc}")
                continue
            self._store(results)
            if self.pace_seconds:
                self._stopping.wait(self.pace_seconds)
        for handle in list(self.active.values()):
            self._retire(handle, "stopped")

    def _admit(self, block: bool) -> None:
        try:
            handle = self.inbox.get(timeout=0.2) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            old = self.active.pop(handle.job_id, None)
            if old is not None:  # a newer attempt of the same job replaces the old one
                self.batch.drop(old.job_id)
                old.resolve("superseded")
            self.active[handle.job_id] = handle
            self.batch.add(handle.spec)
            try:
                handle = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _store(self, results: list[StepResult]) -> None:
        computed_at = time.time()  # lets clients measure how fast a step becomes visible
        writes = [
            StepWrite(r.key, self.active[r.key].fence, r.step.index, r.step.to_dict() | {"computed_at": computed_at})
            for r in results
            if r.key in self.active
        ]
        flags = self._with_redis(lambda: self.store.append_steps(writes))
        if flags is None:
            return
        self.steps_total += len(writes)
        self.last_progress = time.time()
        now = time.monotonic()
        by_key = {r.key: r for r in results}
        for write, flag in zip(writes, flags):
            handle, result = self.active[write.job_id], by_key[write.job_id]
            if flag == STALE:
                self._retire(handle, "superseded")
            elif result.finish_reason is not None:
                self._finish(handle, JobStatus.DONE, result.finish_reason.value, result.text or "")
            elif flag == CANCEL_ASKED:
                self._finish(handle, JobStatus.CANCELLED, FinishReason.CANCELLED.value, self.batch.text_of(handle.job_id))
            elif now > handle.deadline:
                self._finish(
                    handle,
                    JobStatus.FAILED,
                    FinishReason.DEADLINE.value,
                    self.batch.text_of(handle.job_id),
                    error=f"stopped after {write.index} steps: the job ran past its time limit",
                )

    def _finish(self, handle: JobHandle, status: JobStatus, reason: str, text: str, error: str = "") -> None:
        self._with_redis(
            lambda: self.store.finish(handle.job_id, handle.fence, status, finish_reason=reason, text=text, error=error)
        )
        self._retire(handle, status.value)

    def _retire(self, handle: JobHandle, outcome: str) -> None:
        self.batch.drop(handle.job_id)
        self.active.pop(handle.job_id, None)
        handle.resolve(outcome)

    def _fail_all(self, error: str) -> None:
        for handle in list(self.active.values()):
            self._finish(handle, JobStatus.FAILED, "", "", error=error)

    def _with_redis(self, call):
        """Run a Redis call, retrying while Redis is unreachable; None (jobs released) if it stays down."""
        give_up = time.monotonic() + self.redis_retry_seconds
        delay = 0.2
        while True:
            try:
                return call()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() > give_up or self._stopping.is_set():
                    log.error("Redis unreachable for %.0f s; releasing jobs for redelivery", self.redis_retry_seconds)
                    for handle in list(self.active.values()):
                        self._retire(handle, "redis_unreachable")
                    return None
                log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
