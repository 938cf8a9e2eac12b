"""StepWriter: stores each batch step in Redis while the model computes the next, from the runner's thread.

A batch step's write leaves as soon as it is encoded (JobStore.send_steps), and the answers to the
step before it are read just after, so Redis stores step n on its own core while the model
computes step n + 1 and the runner never waits for a reply it could read later, with no second
Python thread to hand the interpreter back and forth. The runner computes at most one step past
the one being stored, and the store's answers (stale attempt, cancel asked, a gap) reach the job
handles one step late; a step sent for a row whose answers then end its attempt is refused by the
store's fence and next-index checks. Writes go in order on one connection; a write whose reply can
no longer come on it (its send failed, or the connection was lost) is stored again before the next
one leaves; and a job's final store call goes after the write holding its last step is answered,
so nothing is written out of order.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contract.jobs import JobStatus
from contract.store import JobEnd, JobStore, SentSteps, StepAnswer, StepWrites
from engine.batch import StepResult
from worker.handle import JobHandle, Outcome
from worker.records import StepEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteBatch:
    """One batch step: each result, and the attempt that computed it at the same place in `handles`."""

    handles: list[JobHandle]
    results: list[StepResult]
    computed_at: float


@dataclass(frozen=True)
class Finish:
    """End a job attempt in the store, after its last step is written."""

    handle: JobHandle
    status: JobStatus
    reason: str = ""
    text: str = ""
    error: str = ""


@dataclass
class _InFlight:
    """A sent batch step: its handles, what was sent (to send again if the reply is lost), and the reply to come."""

    handles: list[JobHandle]
    results: list[StepResult]
    writes: StepWrites
    texts: dict[int, str]
    sent: SentSteps | None  # None: sending failed, so the write is retried when collected
    published: int  # token texts published once this write was sent (a smaller table in Redis lost some)

    @property
    def reply_due(self) -> bool:
        """Whether Redis's reply to this write can still be read (else the write must be sent again)."""
        return self.sent is not None and self.sent.live


class StepWriter:
    """Writes batch steps and job ends in order, for the runner's thread; resolves handles from the store's answers."""

    def __init__(self, store: JobStore, worker: str, model: str, encoder: StepEncoder,
                 redis_retry_seconds: float) -> None:
        self.store = store
        self.worker_name = worker
        self.model = model
        self.encoder = encoder
        self.redis_retry_seconds = redis_retry_seconds
        self.steps_total = 0
        self.last_progress = time.time()
        self._in_flight: _InFlight | None = None
        self._ends: list[Finish] = []

    def write(self, batch: WriteBatch) -> None:
        """Send this step without waiting, then collect the one before it (and end the jobs queued since)."""
        if self._in_flight is not None and not self._in_flight.reply_due:
            self.collect()  # stored again first: sent ahead of it, this step would be refused as a gap
        sending = self._send(batch)
        self.collect()
        self._in_flight = sending

    def _send(self, batch: WriteBatch) -> _InFlight | None:
        handles, results = batch.handles, batch.results
        if any(h.resolved for h in handles):  # rows whose attempt ended meanwhile are not sent
            kept = [(h, r) for h, r in zip(handles, results) if not h.resolved]
            handles, results = [h for h, _ in kept], [r for _, r in kept]
        if not handles:
            return None
        if not self.encoder.published_count and not self._publish_vocabulary(handles):
            return None
        writes, texts = self.encoder.writes([h.fence for h in handles], results, batch.computed_at)
        try:
            sent = self.store.send_steps(writes, self.model, texts)
        except (RedisConnectionError, RedisTimeoutError):
            sent = None  # collect() sends it again, retrying while Redis is down
        return _InFlight(handles, results, writes, texts, sent, self.encoder.published_count)

    def end(self, item: Finish) -> None:
        """Queue a job's final store call; it goes once every step sent before it is stored."""
        self._ends.append(item)

    def collect(self) -> None:
        """Read the answers to the step in flight, then end the queued jobs (the runner calls it before idling)."""
        if self._in_flight is not None:
            flight, self._in_flight = self._in_flight, None
            self._answered(flight)
        if self._ends:
            ends, self._ends = self._ends, []
            self._finish(ends)

    def _answered(self, flight: _InFlight) -> None:
        def answers():
            sent, due = flight.sent, flight.reply_due
            flight.sent = None  # a reply is read once: a retry sends the write again
            return sent.answers() if due else self.store.append_steps(flight.writes, self.model, flight.texts)

        found = self._with_redis(answers, flight.handles)
        if found is None:
            self.encoder.forget_published()  # those texts may never have reached Redis
            return
        if found.vocabulary_size < flight.published:
            log.warning("the vocabulary table of %s lost texts (Redis restarted?); publishing them again", self.model)
            self.encoder.forget_published()
            if not self._publish_vocabulary(flight.handles):  # the steps just written need their texts now
                return
        for handle, result, answer in zip(flight.handles, flight.results, found):
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
        """End job attempts together (their last steps are stored)."""
        items = [item for item in items if not item.handle.resolved]
        if not items:
            return
        ends = [JobEnd(i.handle.job_id, i.handle.fence, i.status, i.reason, i.text, i.error, i.handle.owner,
                       i.handle.address) for i in items]
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
                waiting = [handle for handle in handles if not handle.resolved]
                if not waiting:  # an earlier call gave these jobs back already: nobody waits for this one
                    return None
                if time.monotonic() > give_up:
                    log.error("Redis unreachable for %.0f s; handing jobs back", self.redis_retry_seconds)
                    for handle in waiting:
                        handle.resolve(Outcome.REDIS_UNREACHABLE)
                    return None
                log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
