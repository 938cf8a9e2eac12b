"""The `autoregress` command, run as a subprocess or in-process, against a live stack or a stand-in."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli.client import Client
from cli.main import main
from cli.trace import quoted
from contract.jobs import TERMINAL, JobStatus
from contract.tasks import model_id
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


class StoppedService:
    """A Client stand-in: its job runs until following it raises `stop`; it records the jobs cancelled."""

    def __init__(self, stop: BaseException) -> None:
        self.stop, self.cancelled = stop, []

    def submit(self, body: dict) -> dict:
        return {"id": "job-1"}

    def follow(self, job_id: str):
        yield {"id": job_id, "status": "running", "steps": [], "queue_position": None}
        raise self.stop

    def cancel(self, job_id: str) -> dict:
        self.cancelled.append(job_id)
        return {"id": job_id, "status": "running", "cancel": "cancelling"}


@pytest.mark.integration
def test_score_notes_when_a_long_text_was_scored_only_in_part(live_stack, capsys):
    assert main(["score", "word " * 300, "--url", live_stack.url]) == 0
    out, err = capsys.readouterr()
    most = live_stack.settings.max_steps
    assert f"\n{most} tokens · total surprisal" in out
    note = re.fullmatch(rf"note: only the first {most} of the text's (\d+) tokens were scored \(a job takes at "
                        rf"most {most} steps\)\n", err)
    assert note and int(note.group(1)) > most
    assert main(["score", "The cat sat on the mat", "--url", live_stack.url]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.integration
def test_a_model_no_worker_serves_is_named_with_the_models_served(live_stack, capsys):
    served = model_id(live_stack.settings.model_name)
    assert main(["generate", "The cat", "--model", "models/demo", "--url", live_stack.url]) == 1
    assert capsys.readouterr().err == ("autoregress: HTTP 503: the model models/demo is unavailable: no worker is "
                                       f"serving it (field: model); this service serves: {served}\n")
    assert main(["score", "the mat", "--model", " ", "--url", live_stack.url]) == 1
    assert capsys.readouterr().err.endswith(f"(field: model); this service serves: {served}\n")


def test_ctrl_c_while_scoring_cancels_the_job_and_exits_130(monkeypatch, capsys):
    service = StoppedService(KeyboardInterrupt())
    monkeypatch.setattr("cli.main.Client", lambda url: service)
    assert main(["score", "the mat"]) == 130
    assert service.cancelled == ["job-1"] and capsys.readouterr().err == "\ncancelled job job-1\n"


@pytest.mark.parametrize("url, problem", [
    ("localhost:abc", "Port could not be cast to integer value as 'abc'"), ("http://", "it names no host"),
    ("http://127.0.0.1:99999", "Port out of range 0-65535"), ("ftp://x", "its scheme is ftp, not http or https"),
    ("http://[::1", "Invalid IPv6 URL")])
def test_an_unusable_url_is_one_line_saying_what_is_wrong(capsys, url, problem):
    assert main(["generate", "The cat sat", "--url", url]) == 1
    full = url if "://" in url else "http://" + url
    assert capsys.readouterr().err == f"autoregress: the service address {full} is not usable: {problem}\n"


@pytest.mark.parametrize("command, option, value", [
    ("generate", "--temperature", "nan"), ("generate", "--top-p", "NaN"), ("generate", "--temperature", "inf"),
    ("score", "--temperature", "-inf")])
def test_numbers_that_are_not_finite_are_usage_errors(capsys, command, option, value):
    with pytest.raises(SystemExit) as exited:
        main([command, "The cat", f"{option}={value}"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"autoregress {command}: error: argument {option}: {value!r} is not a finite number"


@pytest.mark.integration
def test_a_closed_pipe_ends_generate_quietly_and_cancels_the_job(paced_stack):
    process = subprocess.Popen([str(SCRIPT), "generate", "Once upon a time", "--steps", "120", "--top-k", "3",
                                "--url", paced_stack.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job_id = None
    for line in process.stdout:  # as `| head` does: read a little, then go
        job_id = line.split()[1] if line.startswith("Job ") else job_id
        if line.strip() == "STEP 1":
            break
    process.stdout.close()
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == ""
    assert paced_stack.wait_done(job_id)["status"] == "cancelled"


def test_pull_takes_a_pasted_hub_address_and_refuses_what_is_not_an_id(monkeypatch, capsys):
    pulled = []
    monkeypatch.setattr("stack.hub.pull", lambda model, *args: pulled.append(model) or Path("/cache") / model)
    assert main(["pull", "https://huggingface.co/meta-llama/Llama-3.2-1B"]) == 0
    assert pulled == ["meta-llama/Llama-3.2-1B"]
    assert capsys.readouterr().out.startswith("meta-llama/Llama-3.2-1B is ready in /cache/meta-llama/Llama-3.2-1B\n")
    for bad in ("bad id!", "https://huggingface.co/meta-llama/Llama-3.2-1B/tree/main", "a--b"):
        assert main(["pull", bad]) == 2
        assert capsys.readouterr().err == (f"autoregress: {bad!r} is not a Hugging Face model id: use org/name "
                                           "(letters, digits, '-', '_', '.'), e.g. meta-llama/Llama-3.2-1B\n")
    assert pulled == ["meta-llama/Llama-3.2-1B"]


def test_score_help_says_the_text_follows_the_prompt_directly(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert 'the text follows it directly, so start the text with a space: --prompt "The cat sat on" " the mat"' in \
        " ".join(capsys.readouterr().out.split())
