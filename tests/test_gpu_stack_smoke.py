"""bench/gpu_stack.py on the CPU with a tiny model (--smoke), so the GPU check keeps working between GPU runs."""
from __future__ import annotations

import json

import pytest

from bench import gpu_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_run_drives_every_job_through_the_stack(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert gpu_stack.main(["--smoke", "--jobs", "6", "--steps", "3", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert (figures["jobs"], figures["done"], figures["device"]) == (6, 6, "cpu")
    assert 6 <= figures["steps"] <= 18 and figures["steps_per_s"] > 0
    assert 0 < figures["ttfs_p50_s"] <= figures["ttfs_p95_s"] <= figures["job_p95_s"]
    assert figures["worker_steps_per_s"] > 0 and 0 < figures["first_computed_p50_s"] <= figures["first_computed_p95_s"]
    assert figures["first_computed_p50_s"] <= figures["ttfs_p50_s"]  # computed before a poll can see it
    assert figures["computed_to_seen_p95_s"] >= 0
    assert 0 < figures["step_gap_p50_ms"] <= figures["step_gap_p99_ms"] <= figures["step_gap_max_ms"]
    out = capsys.readouterr().out
    assert "steps/s end to end" in out and "a job's consecutive steps:" in out
