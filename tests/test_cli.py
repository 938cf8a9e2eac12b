"""The `autoregress` console script, run as a subprocess against the live stack; its client's polling."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli.client import Client
from cli.trace import quoted
from contract.jobs import TERMINAL, JobStatus
from stack.redis_server import free_port

SCRIPT = Path(sys.executable).parent / "autoregress"
CANDIDATE = re.compile(r'^\s+\d+\. ".*"\s+\u2588*\s*\d\.\d{4} \(\d+\.\d\d%\)')


def autoregress(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), "the console script is missing: run `make install` (pip install -e .)"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8"} | (env or {}))


@pytest.mark.integration
def test_trace_has_one_step_block_per_step_with_k_candidates(live_stack):
    result = autoregress("generate", "The cat sat", "--steps", "4", "--top-k", "10", "--url", live_stack.url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.findall(r"^STEP (\d+)$", out, re.M) == ["1", "2", "3", "4"]
    blocks = re.split(r"^STEP \d+$", out, flags=re.M)[1:]
    for block in blocks:
        lines = block.splitlines()
        assert sum(bool(CANDIDATE.match(line)) for line in lines) == 10, block
        assert sum(line.startswith("SELECTED: ") for line in lines) == 1
        assert sum(line.startswith("NEW context: ") for line in lines) == 1
    job_id = re.search(r"^Job (\S+) ", out, re.M).group(1)
    job = live_stack.job(job_id)
    assert job["status"] == "done"
    assert f"Final output: {quoted(job['text'])}" in out
    assert out.index('Starting context: "The cat sat"') < out.index("STEP 1") < out.index("GENERATION COMPLETE!")
    entropies = [float(e) for e in re.findall(r"next-token predictions \(entropy ([\d.]+) bits\):", out)]
    assert entropies == pytest.approx([s["entropy"] / math.log(2) for s in job["steps"]], abs=0.006)  # bits, not nats


@pytest.mark.integration
def test_trace_is_printed_while_the_job_runs(paced_stack):
    steps = 120  # the paced worker pauses after each step: the job lasts at least 6 s on any machine
    process = subprocess.Popen([str(SCRIPT), "generate", "Once upon a time", "--steps", str(steps), "--top-k", "3",
                                "--url", paced_stack.url], stdout=subprocess.PIPE, text=True)
    try:
        job_id = None
        for line in process.stdout:
            if line.startswith("Job "):
                job_id = line.split()[1]
            if line.strip() == "STEP 1":
                break
        job = paced_stack.job(job_id)
        assert job["status"] == "running" and job["steps_done"] < steps, (
            f"the first step was printed only after the job ended ({job['status']}, {job['steps_done']} steps)")
    finally:
        process.kill()
        process.wait()


@pytest.mark.integration
def test_json_prints_the_whole_finished_job(live_stack):
    result = autoregress("generate", "The dog", "--steps", "3", "--top-k", "5", "--temperature", "0.9",
                         "--seed", "11", "--json", "--url", live_stack.url)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "done" and job["params"]["seed"] == 11 and job["params"]["temperature"] == 0.9
    assert [s["index"] for s in job["steps"]] == [1, 2, 3] and all(len(s["top"]) == 5 for s in job["steps"])


@pytest.mark.integration
def test_api_errors_print_the_api_message_and_exit_nonzero(live_stack):
    result = autoregress("generate", "The cat sat", "--steps", "0", "--url", live_stack.url)
    assert result.returncode == 1 and result.stdout == ""
    assert "HTTP 400: steps must be between 1 and" in result.stderr and "(field: steps)" in result.stderr


def test_unreachable_service_gets_a_friendly_message():
    url = f"http://127.0.0.1:{free_port()}"
    result = autoregress("generate", "The cat sat", "--url", url)
    assert result.returncode == 1
    assert result.stderr.strip() == f"autoregress: cannot reach the service at {url}: is it running (make run)?"


def test_a_url_without_its_scheme_means_http_and_a_bad_setting_is_one_line():
    port = free_port()
    result = autoregress("generate", "The cat sat", "--url", f"localhost:{port}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"autoregress: cannot reach the service at http://localhost:{port}: is it " \
                                    "running (make run)?"
    pulled = autoregress("pull", "org/name", env={"HEARTBEAT_SECONDS": "often"})
    assert pulled.returncode == 2 and "Traceback" not in pulled.stderr
    assert pulled.stderr.strip() == "autoregress: HEARTBEAT_SECONDS must be an integer, got 'often'"


@pytest.mark.parametrize("status", list(JobStatus))
def test_following_a_job_stops_exactly_at_the_terminal_statuses(monkeypatch, status):
    answers = iter([{"status": status.value, "steps": []}, {"status": "done", "steps": []}])
    client = Client("http://service.invalid")
    monkeypatch.setattr(client, "_call", lambda *args, **kwargs: next(answers))
    monkeypatch.setattr("cli.client.time.sleep", lambda seconds: None)
    polls = list(client.follow("job"))
    assert len(polls) == (1 if status in TERMINAL else 2)
