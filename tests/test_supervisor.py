"""stack.supervisor on fake processes and a fake clock: restart with backoff, crash loop, stable runs."""
from __future__ import annotations

import pytest

from stack.supervisor import CrashLoop, RestartPolicy, Supervisor


class FakeProcess:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig():
    clock, lines, started = Clock(), [], []

    def start() -> FakeProcess:
        started.append(FakeProcess())
        return started[-1]

    supervisor = Supervisor(RestartPolicy(max_crashes=5, stable_seconds=60, first_delay=1, max_delay=30),
                            clock=clock, log=lines.append)
    supervisor.add("worker1", start)
    return supervisor, clock, lines, started


def crash(rig, code: int = -9, after: float = 1.0) -> None:
    supervisor, clock, _, started = rig
    clock.now += after
    started[-1].code = code
    supervisor.check()


def test_a_killed_worker_is_restarted_after_a_backoff_with_a_loud_line(rig):
    supervisor, clock, lines, started = rig
    crash(rig)
    assert len(started) == 1 and "worker1 died after 1.0 s (killed by SIGKILL); restarting it in 1 s" in lines[0]
    clock.now += 0.5
    supervisor.check()
    assert len(started) == 1  # still backing off
    clock.now += 0.5
    supervisor.check()
    assert len(started) == 2 and "restarting worker1" in lines[-1]


def test_backoff_doubles_for_crashes_in_a_row(rig):
    supervisor, clock, lines, started = rig
    delays = []
    for _ in range(4):
        crash(rig, code=1)
        delays.append(supervisor.members["worker1"].restart_at - clock.now)
        clock.now = supervisor.members["worker1"].restart_at
        supervisor.check()
    assert delays == [1, 2, 4, 8] and len(started) == 5


def test_five_quick_crashes_in_a_row_are_a_crash_loop_that_says_why(rig):
    supervisor, clock, _, started = rig
    for _ in range(4):
        crash(rig, code=1)
        clock.now = supervisor.members["worker1"].restart_at
        supervisor.check()
    with pytest.raises(CrashLoop, match=r"worker1 crashed 5 times in a row, each within 60 s of starting "
                                        r"\(last: exit code 1\); it is a crash loop"):
        crash(rig, code=1)


def test_a_process_that_ran_for_a_while_starts_a_fresh_count(rig):
    supervisor, clock, _, started = rig
    for _ in range(10):  # crashes, but each after a stable run: never a loop, always the first delay
        crash(rig, after=61)
        assert supervisor.members["worker1"].crashes == 1
        clock.now = supervisor.members["worker1"].restart_at
        supervisor.check()
    assert len(started) == 11


def test_a_start_that_raises_counts_as_a_crash():
    clock, lines = Clock(), []

    def start():
        raise RuntimeError("redis-server did not start on port 6390")

    supervisor = Supervisor(RestartPolicy(max_crashes=2), clock=clock, log=lines.append)
    supervisor.add("redis", start)
    assert "failed to start: redis-server did not start" in lines[0]
    clock.now = supervisor.members["redis"].restart_at
    with pytest.raises(CrashLoop, match="redis crashed 2 times"):
        supervisor.check()


def test_an_exit_that_says_it_cannot_start_stops_everything_at_once():
    """A worker whose model cannot load exits with CANNOT_START_EXIT: five restarts over half a minute would
    only repeat the same error."""
    process = FakeProcess()
    supervisor = Supervisor(log=[].append)
    supervisor.add("worker1", lambda: process, final_exit=3)
    process.code = 3
    with pytest.raises(CrashLoop, match=r"worker1 cannot start \(exit code 3\); restarting it would not help"):
        supervisor.check()


def test_a_required_first_start_that_fails_is_not_retried():
    def start():
        raise RuntimeError("port 6390 on 127.0.0.1 is already in use")

    supervisor = Supervisor(log=[].append)
    with pytest.raises(RuntimeError, match="already in use"):
        supervisor.add("redis", start, required=True)
