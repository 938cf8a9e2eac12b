"""JobHandle: one job attempt inside the batch runner, and how its stay there ended."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum

from contract.jobs import FinishReason
from engine.batch import SequenceSpec


class Outcome(str, Enum):
    """How one attempt's stay in the runner ended."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # a newer attempt owns the job
    RESUME = "resume"  # Redis holds fewer steps than were computed: run again from what it holds
    REDIS_UNREACHABLE = "redis_unreachable"  # Redis stayed down; the job must be handed back
    STOPPED = "stopped"  # the worker is shutting down
    RUNNER_FAILED = "runner_failed"  # the runner died or hung; the job must be handed back


@dataclass(eq=False)
class JobHandle:
    """A job attempt handed to the runner; `wait()` returns how it ended.

    Attributes:
        deadline: time.monotonic() after which the job is stopped.
        probation: run alone for PROBATION_STEPS steps first (the job was recovered from a failure).
        cancel_asked: set by the writer when the store says the owner asked to cancel.
        window_full: its steps were cut to what fits the model's context window.
    """

    job_id: str
    fence: int
    spec: SequenceSpec
    deadline: float
    probation: bool = False
    owner: str | None = None  # the job's owner and client address, when known (its end then needs no lookup)
    address: str | None = None
    cancel_asked: bool = False
    window_full: bool = False
    closing: bool = False  # a final store call is queued; it no longer steps
    outcome: Outcome | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def finish_reason(self, finished: FinishReason) -> str:
        """Why the job ended, as stored: the run of a job cut to fit the context window ends as "context"."""
        return FinishReason.CONTEXT.value if self.window_full and finished is FinishReason.LENGTH else finished.value

    @property
    def resolved(self) -> bool:
        """True once the outcome is known."""
        return self._done.is_set()

    def resolve(self, outcome: Outcome) -> None:
        """Record the outcome (the first one wins) and release the waiting task."""
        if not self._done.is_set():
            self.outcome = outcome
            self._done.set()

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Block until resolved or `timeout` passes (then None)."""
        self._done.wait(timeout)
        return self.outcome
