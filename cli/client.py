"""A small client for the service's JSON API; one requests.Session keeps the cookie that owns the jobs."""
from __future__ import annotations

import time
from typing import Any, Iterator

import requests

from contract.jobs import TERMINAL

TIMEOUT = 10  # seconds for one HTTP request


class ApiFailure(Exception):
    """The service answered an error, or could not be reached; the message says which, for people."""


class Client:
    """Submit, follow and cancel jobs at `base_url`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = (base_url if "://" in base_url else "http://" + base_url).rstrip("/")  # "localhost:8000"
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        except requests.ConnectionError:
            raise ApiFailure(f"cannot reach the service at {self.base_url}: is it running (make run)?") from None
        except requests.Timeout:
            raise ApiFailure(f"the service at {self.base_url} did not answer within {TIMEOUT} s") from None
        if response.status_code >= 400:
            raise ApiFailure(_error_message(response))
        return response.json()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/jobs; returns {id, status, url, page}."""
        return self._call("POST", "/api/jobs", json=body)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """DELETE /api/jobs/<id>."""
        return self._call("DELETE", f"/api/jobs/{job_id}")

    def follow(self, job_id: str, interval: float = 0.2) -> Iterator[dict[str, Any]]:
        """Poll the job with `since`, yielding each answer (only new steps in it) until the job ends."""
        since = 0
        while True:
            job = self._call("GET", f"/api/jobs/{job_id}", params={"since": since})
            if job["steps"]:
                since = job["steps"][-1]["index"]
            yield job
            if job["status"] in {status.value for status in TERMINAL}:
                return
            time.sleep(interval if job["status"] == "running" else 1.0)


def _error_message(response: requests.Response) -> str:
    """The API's own message (`{"error": {"message", "field"}}`), else the HTTP status."""
    try:
        error = response.json()["error"]
        message = error["message"]
        if error.get("field"):
            message += f" (field: {error['field']})"
    except (ValueError, KeyError, TypeError):
        message = response.reason or "error"
    retry = response.headers.get("Retry-After") if response.status_code in (429, 503) else None
    suffix = f"; try again in {retry} s" if retry else ""
    return f"HTTP {response.status_code}: {message}{suffix}"
