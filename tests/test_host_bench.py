"""`python -m bench --host` runs end to end on a small batch (its figures are not checked: speed is the bench's job)."""
from __future__ import annotations

import subprocess
import sys

from transformers import AutoTokenizer

from bench.host_bench import host_work, report
from contract.settings import DEMO_MODEL_PATH, PROJECT_ROOT


def test_the_host_bench_stores_every_step_and_prints_its_lines(tmp_path):
    figures = host_work(AutoTokenizer.from_pretrained(str(DEMO_MODEL_PATH)), tmp_path / "redis", rows=8, context=20,
                        steps=5)  # raises unless the runner stored every step of every job
    lines = report(figures, rows=8).splitlines()
    assert lines[0].startswith("host work per job-step at 8 jobs: ") and lines[0].endswith(" us")
    assert len(figures["runs"]) == 3 and figures["total"] == sorted(figures["runs"])[1]
    assert [line.split(":")[0].strip() for line in lines[2:]] == ["engine step", "encode records", "Redis write"]


def test_importing_the_bench_entry_point_starts_no_benchmark():
    """Only `python -m bench` runs it; an import (a test, a script reusing a helper) gets the module alone."""
    out = subprocess.run([sys.executable, "-c", "import bench.__main__"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "Benchmark" not in out
