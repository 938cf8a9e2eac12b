"""200 simulated students at once against the live stack: nothing lost, no server error."""
from __future__ import annotations

import pytest

from bench.load import run_load

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_hundred_students_submitting_and_polling(live_stack, capsys):
    report = run_load(live_stack.url, students=200, duration=20, steps=6, poll_interval=0.5, drain=120)
    with capsys.disabled():  # the figures belong in every run's output, not only failures
        print("\nload test figures:", report.summary(), "statuses:", report.statuses, report.errors)
    assert report.submitted >= 200
    assert report.lost == []
    assert report.server_errors == 0
    assert report.completed == report.submitted
    assert report.statuses.get("done", 0) == report.submitted
    assert report.bad_steps == []
