"""The GPU bench scripts on a CPU with a tiny shape (--tiny), so they keep working between GPU runs."""
from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.slow

TINY_CPU = ["--tiny", "--device", "cpu"]


@pytest.mark.parametrize("module, args, expected", [
    ("bench.gpu_engine", ["--jobs", "1", "4", "--steps", "4", "--joins", "6", "2"],
     ["| 1 | eager |", "| 4 | eager |", "| 6 | 2 | eager |"]),
    ("bench.gpu_invariance", ["--jobs", "6", "--steps", "4"],
     ["| batched (eager) vs the same batch again | 6/6 | 0 |", "| greedy alone vs `generate` | 4/4"]),
    ("bench.gpu_profile", ["--jobs", "2", "--top", "2"],
     ["### 2 jobs:", "| forward |", "| choice |", "One small operator costs the host", "| 2 | ",
      "| n/a (CPU) | aten::"]),
])
def test_gpu_script_runs_on_a_cpu_and_prints_its_table(module, args, expected, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", [module, *TINY_CPU, *args])
    importlib.import_module(module).main()
    out = capsys.readouterr().out
    for line in expected:
        assert line in out
