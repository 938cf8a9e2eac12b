"""Import boundaries of the process harness: one harness in stack/, used by the bench without the tests."""
from __future__ import annotations

import subprocess
import sys

from contract.settings import PROJECT_ROOT


def imported_after(code: str) -> set[str]:
    """Top-level modules loaded by a fresh interpreter after running `code` in the project root."""
    out = subprocess.run([sys.executable, "-c", f"import sys; {code}; print(' '.join(sys.modules))"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_bench_uses_the_harness_from_stack_not_from_the_tests():
    loaded = imported_after("import bench.stack_bench, bench.gpu_stack")
    assert "stack" in loaded and "tests" not in loaded


def test_the_test_fixtures_do_not_import_torch_for_every_session():
    loaded = imported_after("import tests.conftest, stack.harness, stack.launcher")
    assert "torch" not in loaded and "transformers" not in loaded
