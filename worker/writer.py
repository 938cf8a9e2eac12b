"""StepWriter: the thread that stores each batch step in Redis while the model computes the next.

It takes work in order (a batch step's writes, then any final store calls), so nothing is
ever written out of order, and reports the store's answers on the job handles.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contract.jobs import JobStatus
from contract.store import JobStore, StepAnswer
from engine.batch import StepResult
from worker.handle import JobHandle, Outcome
from worker.records import StepEncoder

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

    def __init__(self, store: JobStore, worker: str, model: str, token_text: Callable[[int], str], vocab_size: int,
                 redis_retry_seconds: float) -> None:
        super().__init__(name="step-writer", daemon=True)
        self.store = store
        self.worker_name = worker
        self.model = model
        self.encoder = StepEncoder(token_text, vocab_size)
        self.redis_retry_seconds = redis_retry_seconds
        self.inbox: queue.Queue[WriteBatch | Finish | None] = queue.Queue()
        self.steps_total = 0
        self.last_progress = time.time()
        self.failure = ""

    def put(self, item: WriteBatch | Finish) -> None:
        """Queue work; it is done after everything queued before it."""
        self.inbox.put(item)

    def stop(self) -> None:
        """End after the work already queued."""
        self.inbox.put(None)

    def run(self) -> None:
        """Write until stopped; an unexpected error ends the thread (the runner sees it and ends the process)."""
        try:
            while (item := self.inbox.get()) is not None:
                if isinstance(item, WriteBatch):
                    self._write(item)
                else:
                    self._finish(item)
        except BaseException as exc:  # noqa: BLE001 - reported through `failure`, then fatal in the runner
            self.failure = f"{type(exc).__name__}: {exc}"
            log.critical("step writer died: %s", self.failure, exc_info=exc)

    def _write(self, batch: WriteBatch) -> None:
        items = [(h, r) for h, r in batch.items if not h.resolved]
        if not items:
            return
        pairs = [(h.fence, r) for h, r in items]
        writes, texts = self.encoder.writes(pairs, batch.computed_at)
        answers = self._with_redis(lambda: self.store.append_steps(writes, self.model, texts), [h for h, _ in items])
        if answers is None:
            self.encoder.forget_published()  # those texts may never have reached Redis
            return
        if answers.vocabulary_size < self.encoder.published_count:
            log.warning("the vocabulary table of %s lost texts (Redis restarted?); publishing them again", self.model)
            self.encoder.forget_published()
            _, texts = self.encoder.writes(pairs, batch.computed_at)  # the steps just written need theirs now
            self._with_redis(lambda: self.store.add_texts(self.model, texts), [h for h, _ in items])
        for (handle, result), answer in zip(items, answers):
            if answer is StepAnswer.STALE:
                handle.resolve(Outcome.SUPERSEDED)
            elif answer is StepAnswer.GAP:
                handle.resolve(Outcome.RESUME)
            else:
                self.steps_total += 1
                if answer is StepAnswer.CANCEL_ASKED and result.finish_reason is None:
                    handle.cancel_asked = True
        self.last_progress = time.time()

    def _finish(self, item: Finish) -> None:
        handle = item.handle
        if handle.resolved:
            return
        ended = self._with_redis(
            lambda: self.store.finish(handle.job_id, handle.fence, self.worker_name, item.status,
                                      finish_reason=item.reason, text=item.text, error=item.error),
            [handle])
        if ended is None:
            return
        handle.resolve(Outcome(item.status.value) if ended else Outcome.SUPERSEDED)

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
