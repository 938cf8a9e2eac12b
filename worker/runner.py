"""BatchRunner: the one thread that owns the model's batch and steps every running job together.

Celery task threads hand it jobs (JobHandle) and wait. Each loop: admit new jobs, close the
ones asked to stop, step every batch, and send the steps to Redis (StepWriter), which stores
them while the model computes the next step. The store's answers (stale attempt, cancel asked,
a gap) come back to the handles; the runner acts on them one step later.

Failures stay small: a model error is retried row by row so only the culprit fails, a job
that was recovered from a failed attempt runs alone for a few steps before rejoining the
shared batch, and anything unexpected hands every job back and ends the process.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from contract.defaults import PROBATION_STEPS, REDIS_RETRY_SECONDS
from contract.jobs import FinishReason, JobStatus
from engine.batch import BatchEngine, StepResult
from worker.handle import JobHandle, Outcome
from worker.records import StepEncoder
from worker.writer import Finish, StepWriter, WriteBatch

log = logging.getLogger(__name__)


class BatchRunner(threading.Thread):
    """Steps all active jobs of one worker process in batched forward passes.

    Args:
        make_batch: makes a batch of a given size (the shared one, or one row alone).
        store: the JobStore the steps go to.
        worker: this worker's registered name (finished jobs leave its job set).
        model: the model's name (its vocabulary table holds the texts of the tokens steps show).
        max_batch: rows in the shared batch.
        on_fatal: called with a one-line reason when the runner dies; it ends the process.
        pace_seconds: a pause after every step (tests that watch progress; 0 in service).
    """

    def __init__(self, make_batch: Callable[[int], BatchEngine], store, *, worker: str, model: str, max_batch: int,
                 on_fatal: Callable[[str], None],
                 redis_retry_seconds: float = REDIS_RETRY_SECONDS, pace_seconds: float = 0.0) -> None:
        super().__init__(name="batch-runner", daemon=True)
        self.make_batch = make_batch
        self.max_batch = max_batch
        self.main = make_batch(max_batch)
        self.solo: dict[str, list] = {}  # job id -> [one-row batch, probation steps left]
        encoder = StepEncoder(self.main.token_text, self.main.decoder.candidates(), self.main.vocab_size)
        self.writer = StepWriter(store, worker, model, encoder, redis_retry_seconds)
        self.on_fatal = on_fatal
        self.pace_seconds = pace_seconds
        self.inbox: queue.Queue[JobHandle] = queue.Queue()
        self.active: dict[str, JobHandle] = {}
        self.failure = ""
        self._stopping = threading.Event()

    @property
    def eos_ids(self) -> frozenset[int]:
        """The model's end-of-sequence ids."""
        return self.main.eos_ids

    @property
    def steps_total(self) -> int:
        """Steps stored since the worker started."""
        return self.writer.steps_total

    @property
    def last_progress(self) -> float:
        """time.time() of the last stored step, or of the admission that ended a pause with no job."""
        return self.writer.last_progress

    def alive(self) -> bool:
        """The loop runs (the heartbeat reports this; a dead runner is a stalled worker)."""
        return self.is_alive()

    def submit(self, handle: JobHandle) -> None:
        """Queue a job attempt; it joins a batch at the next step."""
        self.inbox.put(handle)

    def stop(self) -> None:
        """Ask the loop to end after the current step."""
        self._stopping.set()

    def run(self) -> None:
        """Loop: admit, prune, close, step, write; any unexpected error is fatal (jobs handed back)."""
        try:
            while not self._stopping.is_set():
                if not self._has_rows():
                    self.writer.collect()  # the last answers and job ends, before waiting for work
                self._admit(block=not self._has_rows())
                self._prune()
                self._close_asked()
                if self._has_rows():
                    self._step()
                    if self.pace_seconds:
                        self._stopping.wait(self.pace_seconds)
            self.writer.collect()
            self._resolve_all(Outcome.STOPPED)
        except BaseException as exc:  # noqa: BLE001 - the last line of defence: hand back, then exit
            self.failure = f"{type(exc).__name__}: {exc}"
            log.critical("batch runner died: %s", self.failure, exc_info=exc)
            self._resolve_all(Outcome.RUNNER_FAILED)
            self.on_fatal(self.failure)

    # -- phases -----------------------------------------------------------------------------

    def _admit(self, block: bool) -> None:
        """Take new attempts; a newer fence replaces an older one of the same job, never the reverse."""
        try:
            handle = self.inbox.get(timeout=0.2) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            old = self.active.get(handle.job_id)
            if old is not None and not old.resolved and old.fence > handle.fence:
                handle.resolve(Outcome.SUPERSEDED)
            else:
                if old is not None:
                    self._unbatch(old.job_id)
                    old.resolve(Outcome.SUPERSEDED)
                if not self.active:  # work after a pause: no step is due before this job's first one
                    self.writer.last_progress = time.time()
                self.active[handle.job_id] = handle
                self._batch(handle)
            try:
                handle = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _batch(self, handle: JobHandle) -> None:
        """Put an attempt in the shared batch, or alone while on probation."""
        try:
            if handle.probation:
                alone = self.make_batch(1)
                alone.add(handle.spec)
                self.solo[handle.job_id] = [alone, PROBATION_STEPS]
            else:
                self.main.add(handle.spec)
        except ValueError as exc:
            self._close(handle, JobStatus.FAILED, error=str(exc))

    def _prune(self) -> None:
        """Forget attempts the store's answers resolved (stale, gap, finished, Redis gone)."""
        for job_id, handle in list(self.active.items()):
            if handle.resolved:
                self._unbatch(job_id)
                del self.active[job_id]

    def _close_asked(self) -> None:
        """Stop jobs whose owner asked to cancel, and jobs past their deadline."""
        now = time.monotonic()
        for handle in list(self.active.values()):
            if handle.closing or handle.resolved:
                continue
            if handle.cancel_asked:
                self._close(handle, JobStatus.CANCELLED, FinishReason.CANCELLED.value)
            elif now > handle.deadline:
                self._close(handle, JobStatus.FAILED, FinishReason.DEADLINE.value,
                            error="stopped: the job ran past its time limit")

    def _step(self) -> None:
        """Advance every batch by one token and send the results to the store (in order)."""
        computed_at = time.time()  # lets clients measure how fast a step becomes visible
        results: list[StepResult] = []
        try:
            results += self.main.step()
        except Exception as exc:  # noqa: BLE001 - a model error: find the culprit row
            results += self._isolate(exc)
        for job_id, slot in list(self.solo.items()):
            try:
                results += slot[0].step()
            except Exception as exc:  # noqa: BLE001 - alone, so this job is the culprit
                self._fail(self.active[job_id], exc)
        results = [r for r in results if r.key in self.active]
        handles = [self.active[r.key] for r in results]
        self.writer.write(WriteBatch(handles, results, computed_at))
        for handle, r in zip(handles, results):
            if r.finish_reason is not None:
                handle.closing = True
                self.writer.end(Finish(handle, JobStatus.DONE, handle.finish_reason(r.finish_reason), r.text or ""))
        self._graduate()

    def _isolate(self, error: Exception) -> list[StepResult]:
        """The shared batch failed: step each of its jobs alone once; fail only those that fail alone."""
        log.warning("batch step failed (%s: %s); retrying each job alone", type(error).__name__, error)
        # A job whose prefill was under way is in neither rows nor waiting: its own spec is where it stands.
        specs = [self.main.spec_of(k) or h.spec for k, h in self.active.items()
                 if k not in self.solo and not h.closing and not h.resolved]
        self.main = self.make_batch(self.max_batch)
        results: list[StepResult] = []
        for spec in specs:
            alone = self.make_batch(1)
            alone.add(spec)
            try:
                results += alone.step()
            except Exception as exc:  # noqa: BLE001 - this row is the culprit
                self._fail(self.active[spec.key], exc)
                continue
            rejoin = alone.spec_of(spec.key)
            if rejoin is not None:
                self.main.add(rejoin)
        return results

    def _graduate(self) -> None:
        """Jobs that proved themselves alone for PROBATION_STEPS steps rejoin the shared batch."""
        for job_id, slot in list(self.solo.items()):
            slot[1] -= 1
            spec = slot[0].spec_of(job_id)
            if spec is None:
                del self.solo[job_id]
            elif slot[1] <= 0:
                del self.solo[job_id]
                self.main.add(spec)

    # -- helpers ----------------------------------------------------------------------------

    def _has_rows(self) -> bool:
        return bool(len(self.main) or self.solo)

    def _unbatch(self, job_id: str) -> None:
        self.main.drop(job_id)
        self.solo.pop(job_id, None)

    def _text(self, job_id: str) -> str:
        slot = self.solo.get(job_id)
        return (slot[0] if slot else self.main).text_of(job_id)

    def _close(self, handle: JobHandle, status: JobStatus, reason: str = "", error: str = "") -> None:
        """Take the job out of its batch and queue its final store call."""
        text = self._text(handle.job_id)
        self._unbatch(handle.job_id)
        handle.closing = True
        self.writer.end(Finish(handle, status, reason, text, error))

    def _fail(self, handle: JobHandle, error: Exception) -> None:
        log.error("job %s failed in the model: %s: %s", handle.job_id, type(error).__name__, error)
        self._close(handle, JobStatus.FAILED, error=f"the model failed on this job: {type(error).__name__}: {error}")

    def _resolve_all(self, outcome: Outcome) -> None:
        for handle in list(self.active.values()):
            handle.resolve(outcome)
        while True:
            try:
                self.inbox.get_nowait().resolve(outcome)
            except queue.Empty:
                return
