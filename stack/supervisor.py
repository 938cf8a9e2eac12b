"""Supervisor: keeps the launcher's processes running; a crashed one is restarted with backoff.

A process that keeps crashing soon after each start (a crash loop) is not restarted for ever:
`check()` raises CrashLoop, whose message says which process and why, and the launcher stops.
"""
from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Process(Protocol):
    """What the supervisor needs of a started process (subprocess.Popen has it)."""

    def poll(self) -> int | None: ...


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart, and when to give up.

    Attributes:
        max_crashes: this many crashes in a row, each within `stable_seconds` of its start, is a crash loop.
        stable_seconds: a process that ran this long before crashing starts a fresh count.
        first_delay: wait before the first restart (seconds); doubled for each crash in a row.
        max_delay: the longest wait between restarts.
    """

    max_crashes: int = 5
    stable_seconds: float = 60.0
    first_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, crashes: int) -> float:
        """Backoff before restarting after the `crashes`-th crash in a row."""
        return min(self.first_delay * 2 ** (crashes - 1), self.max_delay)


class CrashLoop(RuntimeError):
    """A supervised process keeps crashing (or exited saying it cannot start); the message names it and why."""


@dataclass
class Supervised:
    """One process under supervision: how to start it, the running instance, its recent crashes."""

    name: str
    start: Callable[[], Process]
    process: Process | None = None
    started_at: float = 0.0
    crashes: int = 0  # in a row, each soon after its start
    restart_at: float | None = None  # when a crashed process is due to start again
    restarts: int = 0
    final_exit: int | None = None  # an exit code meaning "cannot start": restarting would not help


def describe_exit(code: int) -> str:
    """'killed by SIGKILL' for a negative Popen return code, 'exit code N' otherwise."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Starts processes and, on each `check()`, restarts those that died (see RestartPolicy)."""

    def __init__(self, policy: RestartPolicy = RestartPolicy(), clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        self.clock = clock
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.members: dict[str, Supervised] = {}

    def add(self, name: str, start: Callable[[], Process], *, final_exit: int | None = None,
            required: bool = False) -> Supervised:
        """Start a process now and supervise it under `name`.

        `final_exit`: the exit code with which the process says it cannot start (check() then raises CrashLoop
        at once). `required`: a first start that raises is not retried; its exception propagates.
        """
        member = Supervised(name, start, final_exit=final_exit)
        if required:
            member.started_at, member.process = self.clock(), start()
        else:
            self._start(member)
        self.members[name] = member
        return member

    def check(self) -> None:
        """Notice crashed processes, restart those whose backoff has passed.

        Raises:
            CrashLoop: a process crashed `max_crashes` times in a row, each soon after starting.
        """
        for member in self.members.values():
            now = self.clock()
            if member.restart_at is not None:
                if now >= member.restart_at:
                    member.restarts += 1
                    self.log(f"*** supervisor: restarting {member.name} (restart {member.restarts})")
                    self._start(member)
                continue
            code = member.process.poll() if member.process else None
            if code is None:
                continue
            self._crashed(member, code, now)

    def _start(self, member: Supervised) -> None:
        member.restart_at = None
        member.started_at = self.clock()
        try:
            member.process = member.start()
        except Exception as exc:  # a start that fails counts as a crash
            member.process = None
            self._crashed(member, 1, self.clock(), detail=f"failed to start: {exc}")

    def _crashed(self, member: Supervised, code: int, now: float, detail: str = "") -> None:
        ran = now - member.started_at
        member.crashes = member.crashes + 1 if ran < self.policy.stable_seconds else 1
        why = detail or describe_exit(code)
        if not detail and code == member.final_exit:
            raise CrashLoop(f"{member.name} cannot start ({why}); restarting it would not help, so everything is "
                            f"stopped. Its output above says why.")
        if member.crashes >= self.policy.max_crashes:
            raise CrashLoop(
                f"{member.name} crashed {member.crashes} times in a row, each within "
                f"{self.policy.stable_seconds:g} s of starting (last: {why}); it is a crash loop, so "
                f"everything is stopped. Its output above says why it exits."
            )
        delay = self.policy.delay(member.crashes)
        member.restart_at = now + delay
        self.log(f"*** supervisor: {member.name} died after {ran:.1f} s ({why}); "
                 f"restarting it in {delay:g} s (crash {member.crashes} in a row; "
                 f"{self.policy.max_crashes} stop everything)")
