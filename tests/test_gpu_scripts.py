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


def test_a_burst_whose_clients_cannot_start_fails_at_once_instead_of_hanging():
    """A client whose first request failed never reached the start barrier: the others waited for ever, and the
    device call ran out with no figures."""
    import time
    from types import SimpleNamespace

    from bench import gpu_stack
    from stack.redis_server import free_port

    began = time.monotonic()
    with pytest.raises(RuntimeError, match="no client finished; the first error: ConnectionError"):
        gpu_stack.drive(SimpleNamespace(url=f"http://127.0.0.1:{free_port()}"), jobs=4, steps=2, poll=0.1, timeout=60)
    assert time.monotonic() - began < 30


def test_the_gpu_check_names_what_is_missing_before_any_part_runs():
    import subprocess
    import sys

    from contract.settings import PROJECT_ROOT

    check = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=PROJECT_ROOT, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 1 and check.stderr.strip() == "no CUDA device visible"  # packages and pin are fine


def test_gpu_sh_stops_when_the_wheels_do_not_install(tmp_path):
    """A failed pip install went unnoticed (`source ... || exit` reads only the script's last command): every part
    then ran on the device image's older transformers and failed late, using the device's minutes."""
    import shutil
    import subprocess
    import sys

    from contract.settings import PROJECT_ROOT

    for name in ("bench/gpu.sh", "bench/gpu_env.sh", "deploy/requirements.py", "pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    (tmp_path / ".whl").mkdir()
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "pip: no wheel" >&2; exit 1; fi\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    run = subprocess.run(["bash", str(tmp_path / "bench/gpu.sh")], env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "FAILED: installing the wheels in .whl/" in run.stderr
    assert "part " not in run.stdout
