"""The process harness: one in stack/, used by the bench without the tests; its children never outlive the launcher."""
from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

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


def test_a_child_of_a_killed_launcher_is_stopped_not_orphaned():
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "from stack.harness import stop_when_parent_dies\n"
         "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
         " preexec_fn=stop_when_parent_dies)\n"
         "print(child.pid, flush=True)\n"
         "time.sleep(120)\n"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    parent.kill()  # SIGKILL: the launcher gets no chance to stop its children
    parent.wait()
    child.wait(timeout=20)  # psutil.TimeoutExpired if it were left running (not our child: no exit code)
    assert not child.is_running()


def test_an_empty_hf_hub_offline_still_leaves_the_children_offline(monkeypatch, tmp_path):
    """`HF_HUB_OFFLINE=` (an empty .env line) was kept as it was: the workers then asked the Hub for a cached model,
    retrying each file, and were not serving a minute later."""
    from contract.settings import Settings
    from stack.harness import LiveStack

    stack = LiveStack(Settings(data_dir=str(tmp_path), redis_url="redis://127.0.0.1:1/0"), None)  # never dialled
    for value, expected in (("", "1"), ("0", "0"), ("1", "1")):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert stack.env()["HF_HUB_OFFLINE"] == expected


@pytest.mark.integration
def test_a_web_restarted_after_its_master_was_killed_gets_the_port_back_from_its_orphaned_workers(live_settings,
                                                                                                 tmp_path):
    """A SIGKILLed gunicorn master leaves its workers holding the port until they notice (7 s once, busy with a
    poll): the restart failed with "Connection in use" and counted as a crash in a row."""
    from stack.harness import LiveStack

    stack = LiveStack(live_settings, tmp_path)
    stack.start_web()
    orphans: list[psutil.Process] = []
    try:
        master = psutil.Process(stack.web.pid)
        orphans = master.children()
        assert orphans
        for worker in orphans:
            worker.suspend()  # as busy as can be: they will not notice their parent is gone
        master.kill()
        stack.web.wait()
        stack.start_web(timeout=20)
        assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in orphans)
    finally:
        stack.stop()
        for worker in orphans:  # suspended: left behind for good if the restart did not end them
            try:
                worker.kill()
            except psutil.NoSuchProcess:
                pass
