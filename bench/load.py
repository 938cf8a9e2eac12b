"""A bounded load generator on loopback: N simulated students submit jobs and poll them.

Each student (a thread with its own cookie session) submits a job, polls it with `since`
until it ends, and repeats until the time window closes; then every job still open is
followed to its end. Nothing runs past `duration + drain` seconds.
"""
from __future__ import annotations

import math
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import orjson

from contract.jobs import TERMINAL

TransportError = (OSError, ValueError)


class Browser:
    """One student's browser: a keep-alive HTTP/1.1 connection and the session cookie the web gave it.

    It speaks just the HTTP the web answers (a status line, headers, a Content-Length body) over a
    plain socket, and reads JSON with orjson: the generator shares the machine with the service it
    measures. With `http.client` it took 21-22% of a core at 128 students, this way 12%.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.connection: socket.socket | None = None
        self.pending = b""  # bytes read from the connection past the last response
        self.cookie = ""

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        return self._request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        return self._request("POST", path, orjson.dumps(body))

    def _request(self, method: str, path: str, data: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or None); raises one of TransportError."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if data is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        if self.cookie:
            lines.append(f"Cookie: {self.cookie}")
        if self.connection is not None and select.select([self.connection], [], [], 0)[0]:
            self.close()  # the server closed the idle connection: a new one, before sending anything
        try:
            if self.connection is None:
                self.connection = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (data or b""))
            status, headers, raw = self._response()
        except TransportError:
            self.close()
            raise
        if headers.get("Connection", "").lower() == "close":
            self.close()
        cookie = headers.get("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        is_json = "json" in headers.get("Content-Type", "")
        return status, headers, orjson.loads(raw) if is_json and raw else None

    def _response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one response: its status, headers (as sent) and Content-Length body."""
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, code, *_ = status_line.split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1 response: {status_line!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        if "chunked" in headers.get("Transfer-Encoding", ""):
            raise ValueError("chunked responses are not expected from the web")
        return int(code), headers, self._read_exactly(int(headers.get("Content-Length", 0)))

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.pending:
            self._receive()
        head, _, self.pending = self.pending.partition(marker)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self.pending) < n:
            self._receive()
        body, self.pending = self.pending[:n], self.pending[n:]
        return body

    def _receive(self) -> None:
        chunk = self.connection.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection mid-response")
        self.pending += chunk

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self.pending = b""  # what a closed connection left unread belongs to no later response


@dataclass
class LoadReport:
    """What the students saw."""

    students: int
    duration: float
    submitted: int = 0
    rejected: int = 0  # 429/503 answers (backpressure), retried by the student
    completed: int = 0  # jobs seen in a terminal state
    steps_seen: int = 0  # steps the students received
    statuses: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0  # responses >= 500 other than 503 backpressure
    transport_errors: int = 0
    lost: list[str] = field(default_factory=list)  # submitted jobs never seen in a terminal state
    first_step_latency: list[float] = field(default_factory=list)  # submit -> first step visible (s)
    visible_latency: list[float] = field(default_factory=list)  # step computed -> seen in a poll (s)
    bad_steps: list[str] = field(default_factory=list)  # jobs whose steps were not exactly 1..n
    errors: dict[str, int] = field(default_factory=dict)  # failed jobs by error message
    elapsed: float = 0.0

    def summary(self) -> dict[str, float]:
        """The figures, rounded for printing."""
        return {
            "students": self.students,
            "jobs submitted": self.submitted,
            "jobs completed": self.completed,
            "jobs lost": len(self.lost),
            "responses >= 500 (not 503)": self.server_errors,
            "backpressure answers (429/503)": self.rejected,
            "jobs per minute": round(self.completed / self.elapsed * 60, 1) if self.elapsed else 0.0,
            "steps per second": round(self.steps_seen / self.elapsed, 1) if self.elapsed else 0.0,
            "p50 submit -> first step (s)": round(percentile(self.first_step_latency, 50), 3),
            "p95 submit -> first step (s)": round(percentile(self.first_step_latency, 95), 3),
            "p95 step computed -> visible (s)": round(percentile(self.visible_latency, 95), 3),
        }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank, q in 0..100), or NaN when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run_load(url: str, students: int, duration: float, *, steps: int = 8, top_k: int = 5,
             poll_interval: float = 0.3, drain: float = 120.0, temperature: float | None = None) -> LoadReport:
    """Simulate `students` for `duration` seconds against the web at `url`.

    `temperature` for every job, or None: odd students sample at 0.7, even ones are greedy.
    """
    report = LoadReport(students=students, duration=duration)
    lock = threading.Lock()
    start = time.monotonic()
    stop_submitting = start + duration
    hard_stop = stop_submitting + drain

    def student(number: int) -> None:
        browser = Browser(url)
        try:  # like a browser: the form page gives the session its id (cookieless clients share an address cap)
            browser.get("/")
        except TransportError:
            pass
        while time.monotonic() < stop_submitting:
            body = {"prompt": f"Student {number} says the cat sat", "steps": steps, "top_k": top_k,
                    "temperature": temperature if temperature is not None else (0.7 if number % 2 else 0.0)}
            try:
                status, headers, answer = browser.post("/api/jobs", body)
            except TransportError:
                with lock:
                    report.transport_errors += 1
                time.sleep(1)
                continue
            if status in (429, 503):
                with lock:
                    report.rejected += 1
                time.sleep(min(float(headers.get("Retry-After", 1)), 5))
                continue
            if status >= 500:
                with lock:
                    report.server_errors += 1
                continue
            submitted_at = time.time()
            job_id = answer["id"]
            with lock:
                report.submitted += 1
            _follow(browser, job_id, submitted_at, steps, poll_interval, hard_stop, report, lock)
        browser.close()

    threads = [threading.Thread(target=student, args=(i,), daemon=True) for i in range(students)]
    for t in threads:
        t.start()
        time.sleep(min(0.01, duration / max(students, 1) / 10))  # not all in the same millisecond
    for t in threads:
        t.join(max(0.0, hard_stop - time.monotonic()) + 5)
    report.elapsed = time.monotonic() - start
    return report


def _follow(browser: Browser, job_id, submitted_at, steps, poll_interval, hard_stop, report, lock) -> None:
    since, indices, first_seen = 0, [], None
    while time.monotonic() < hard_stop:
        try:
            status, _, job = browser.get(f"/api/jobs/{job_id}?since={since}")
        except TransportError:
            with lock:
                report.transport_errors += 1
            time.sleep(poll_interval)
            continue
        seen_at = time.time()
        if status >= 500 and status != 503:
            with lock:
                report.server_errors += 1
        if status != 200:
            time.sleep(poll_interval)
            continue
        with lock:
            report.steps_seen += len(job["steps"])
            for step in job["steps"]:
                if "computed_at" in step:
                    report.visible_latency.append(max(0.0, seen_at - step["computed_at"]))
        if job["steps"]:
            indices += [s["index"] for s in job["steps"]]
            since = job["steps"][-1]["index"]
            if first_seen is None:
                first_seen = seen_at
                with lock:
                    report.first_step_latency.append(seen_at - submitted_at)
        if job["status"] in TERMINAL:
            with lock:
                report.completed += 1
                report.statuses[job["status"]] = report.statuses.get(job["status"], 0) + 1
                if job["error"]:
                    report.errors[job["error"]] = report.errors.get(job["error"], 0) + 1
                if job["status"] == "done" and indices != list(range(1, len(indices) + 1)):
                    report.bad_steps.append(job_id)
            return
        time.sleep(poll_interval)
    with lock:
        report.lost.append(job_id)
