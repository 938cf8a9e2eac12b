"""StepWriter: the thread that stores each batch step in Redis while the model computes the next.

It takes work in order (a batch step's writes, then any final store calls), so nothing is
ever written out of order, and reports the store's answers on the job handles. What has queued
up while it waited on Redis goes in one call per kind: consecutive batch steps in one script
call, consecutive job ends in one pipeline. The runner may run at most MAX_UNWRITTEN_STEPS batch
steps ahead of what is stored, so the store's answers (cancel asked, stale attempt) reach it at
most that many steps late.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contract.jobs import JobStatus
from contract.store import JobEnd, JobStore, StepAnswer
from engine.batch import StepResult
from worker.handle import JobHandle, Outcome
from worker.records import StepEncoder

MAX_UNWRITTEN_STEPS = 2  # batch steps computed but not yet stored, at most (the runner waits beyond)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteBatch:
    """One batch step: each result with the attempt that computed it."""

    items: list[tuple[JobHandle, StepResult]]
    computed_at: float


@dataclass(frozen=True)
class Finish:
    """End a job attempt in the store, after its last step is written."""

    handle: JobHandle
    status: JobStatus
    reason: str = ""
    text: str = ""
    error: str = ""


class StepWriter(threading.Thread):
    """Writes WriteBatch and Finish items in order; resolves handles from the store's answers."""

    def __init__(self, store: JobStore, worker: str, model: str, encoder: StepEncoder,
                 redis_retry_seconds: float) -> None:
        super().__init__(name="step-writer", daemon=True)
        self.store = store
        self.worker_name = worker
        self.model = model
        self.encoder = encoder
        self.redis_retry_seconds = redis_retry_seconds
        self.inbox: queue.Queue[WriteBatch | Finish | None] = queue.Queue()
        self._room = threading.Semaphore(MAX_UNWRITTEN_STEPS)
        self.steps_total = 0
        self.last_progress = time.time()
        self.failure = ""

    def put(self, item: WriteBatch | Finish) -> None:
        """Queue work; it is done after everything queued before it. A batch step waits for room first.

        Raises:
            RuntimeError: the writer died while the batch step waited.
        """
        if isinstance(item, WriteBatch):
            while not self._room.acquire(timeout=1.0):
                if not self.is_alive():
                    raise RuntimeError(f"the step writer died: {self.failure}")
        self.inbox.put(item)

    def stop(self) -> None:
        """End after the work already queued."""
        self.inbox.put(None)

    def run(self) -> None:
        """Write until stopped; an unexpected error ends the thread (the runner sees it and ends the process)."""
        try:
            while True:
                work = [self.inbox.get()]
                while work[-1] is not None and not self.inbox.empty():
                    work.append(self.inbox.get_nowait())
                for kind, items in _runs(work):
                    if kind is WriteBatch:
                        self._write(items)
                    elif kind is Finish:
                        self._finish(items)
                    else:
                        return
        except BaseException as exc:  # noqa: BLE001 - reported through `failure`, then fatal in the runner
            self.failure = f"{type(exc).__name__}: {exc}"
            log.critical("step writer died: %s", self.failure, exc_info=exc)

    def _write(self, batches: list[WriteBatch]) -> None:
        """Store consecutive batch steps in one call (a job's steps in order), then free their room."""
        try:
            items = [(h, r, b.computed_at) for b in batches for h, r in b.items if not h.resolved]
            if items:
                self._store_steps(items)
        finally:
            for _ in batches:
                self._room.release()

    def _store_steps(self, items: list[tuple[JobHandle, StepResult, float]]) -> None:
        handles = [h for h, _, _ in items]
        if not self.encoder.published_count and not self._publish_vocabulary(handles):
            return
        pairs = [(h.fence, r, at) for h, r, at in items]
        writes, texts = self.encoder.writes(pairs)
        answers = self._with_redis(lambda: self.store.append_steps(writes, self.model, texts), handles)
        if answers is None:
            self.encoder.forget_published()  # those texts may never have reached Redis
            return
        if answers.vocabulary_size < self.encoder.published_count:
            log.warning("the vocabulary table of %s lost texts (Redis restarted?); publishing them again", self.model)
            self.encoder.forget_published()
            if not self._publish_vocabulary(handles):  # the steps just written need their texts now
                return
        for (handle, result, _), answer in zip(items, answers):
            if answer is StepAnswer.STALE:
                handle.resolve(Outcome.SUPERSEDED)
            elif answer is StepAnswer.GAP:
                handle.resolve(Outcome.RESUME)
            else:
                self.steps_total += 1
                if answer is StepAnswer.CANCEL_ASKED and result.finish_reason is None:
                    handle.cancel_asked = True
        self.last_progress = time.time()

    def _publish_vocabulary(self, handles: list[JobHandle]) -> bool:
        """Send every token text of the tokenizer to the model's vocabulary table; False if Redis stayed down."""
        table = self.encoder.whole_vocabulary()
        if self._with_redis(lambda: self.store.add_texts(self.model, table), handles) is None:
            self.encoder.forget_published()
            return False
        return True

    def _finish(self, items: list[Finish]) -> None:
        """End consecutive job attempts together (after their last steps, written before)."""
        items = [item for item in items if not item.handle.resolved]
        if not items:
            return
        ends = [JobEnd(i.handle.job_id, i.handle.fence, i.status, i.reason, i.text, i.error) for i in items]
        ended = self._with_redis(lambda: self.store.finish_many(self.worker_name, ends), [i.handle for i in items])
        if ended is None:
            return
        for item, done in zip(items, ended):
            item.handle.resolve(Outcome(item.status.value) if done else Outcome.SUPERSEDED)

    def _with_redis(self, call, handles: list[JobHandle]):
        """Run a Redis call, retrying while Redis is unreachable; None (handles released) if it stays down."""
        give_up = time.monotonic() + self.redis_retry_seconds
        delay = 0.2
        while True:
            try:
                return call()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() > give_up:
                    log.error("Redis unreachable for %.0f s; handing jobs back", self.redis_retry_seconds)
                    for handle in handles:
                        handle.resolve(Outcome.REDIS_UNREACHABLE)
                    return None
                log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def _runs(work: list) -> list[tuple[type | None, list]]:
    """Consecutive items of one kind, in order: [(WriteBatch, [...]), (Finish, [...]), (None, [None])]."""
    runs: list[tuple[type | None, list]] = []
    for item in work:
        kind = None if item is None else type(item)
        if runs and runs[-1][0] is kind and kind is not None:
            runs[-1][1].append(item)
        else:
            runs.append((kind, [item]))
    return runs
