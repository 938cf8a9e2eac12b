"""End to end through a real Redis, a real Celery worker with the tiny model, and the web over HTTP."""
from __future__ import annotations

import socket
import time

import pytest
import requests

pytestmark = pytest.mark.integration


def test_job_runs_to_done_with_every_step(live_stack):
    created = live_stack.submit(prompt="The cat sat", steps=4, top_k=10)
    assert created["status"] == "queued"
    job = live_stack.wait_done(created["id"])
    assert job["status"] == "done", job
    assert [s["index"] for s in job["steps"]] == [1, 2, 3, 4]
    assert all(len(s["top"]) == 10 for s in job["steps"])
    assert job["finish_reason"] == "length"
    assert job["text"].startswith("The cat sat")


def test_steps_are_written_one_at_a_time_while_the_job_runs(paced_stack):
    created = paced_stack.submit(prompt="Once upon a time", steps=150, top_k=3)  # at least 7.5 s on the paced worker
    seen_counts = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = paced_stack.job(created["id"])
        seen_counts.append((job["status"], job["steps_done"]))
        if job["status"] == "done":
            break
        time.sleep(0.02)
    running = {n for status, n in seen_counts if status == "running"}
    # the poller saw the job running with several different partial step counts strictly between 0 and 150
    assert len({n for n in running if 0 < n < 150}) >= 3, seen_counts[:50]


def test_health_reports_worker_and_model(live_stack):
    body = requests.get(f"{live_stack.url}/api/health", timeout=10).json()
    assert body["redis"] == "ok"
    assert body["workers"] and body["workers"][0]["model"] == body["default_model"]


def test_a_body_refused_as_too_large_does_not_spoil_the_next_request_on_its_connection(live_stack):
    """gunicorn kept the connection of a 413 open with the unread body still in it: the client's next request on
    that connection was read after those bytes and failed (seen with requests as RemoteDisconnected)."""
    from urllib.parse import urlsplit

    address = urlsplit(live_stack.url)
    body = b'{"prompt": "' + b"a" * 200_000 + b'"}'
    head = (b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        try:
            sock.sendall(head + body)
        except OSError:
            pass  # the server may answer and close before taking the whole body: that is a clean outcome too
        answer = sock.makefile("rb")
        status = answer.readline()
        headers = {}
        for line in iter(answer.readline, b"\r\n"):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        assert b" 413 " in status
        answer.read(int(headers["content-length"]))
        if headers.get("connection") == "close":
            return  # the client knows not to use the connection again
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.readline().startswith(b"HTTP/1.1 200"), "the next request on the connection failed"
