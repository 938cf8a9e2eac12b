"""A small client for the service's JSON API; one requests.Session keeps the cookie that owns the jobs."""
from __future__ import annotations

import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import requests

from contract.jobs import TERMINAL

TIMEOUT = 10  # seconds for one HTTP request


class ApiFailure(Exception):
    """The service answered an error, or could not be reached; the message says which, for people.

    `field` is the request field the service blamed; `retry_after` its Retry-After, in seconds, when it gave one.
    """

    def __init__(self, message: str, field: str | None = None, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.retry_after = message, field, retry_after

    def __str__(self) -> str:
        return self.message + (f"; try again in {self.retry_after} s" if self.retry_after else "")


class Client:
    """Submit, follow and cancel jobs at `base_url`.

    Raises:
        ApiFailure: `base_url` is not a usable http(s) address.
    """

    def __init__(self, base_url: str) -> None:
        url = base_url if "://" in base_url else "http://" + base_url  # "localhost:8000"
        problem = url_problem(url)
        if problem:
            raise ApiFailure(f"the service address {url} is not usable: {problem}")
        self.base_url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        except requests.ConnectionError:
            raise ApiFailure(f"cannot reach the service at {self.base_url}: is it running (make run)?") from None
        except requests.Timeout:
            raise ApiFailure(f"the service at {self.base_url} did not answer within {TIMEOUT} s") from None
        except requests.RequestException as exc:  # an address requests cannot use, too many redirects, ...
            raise ApiFailure(f"the request to {self.base_url} failed: {exc}") from None
        if response.status_code >= 400:
            raise _failure(response)
        return response.json()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/jobs; returns {id, status, url, page}. A refused model is named with the models served."""
        try:
            return self._call("POST", "/api/jobs", json=body)
        except ApiFailure as failure:
            if failure.field != "model":
                raise
            raise self._naming_served_models(failure, body.get("model")) from None

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

    def _naming_served_models(self, failure: ApiFailure, model: str | None) -> ApiFailure:
        """`failure` (about `model`, None for the default) with the models served (GET /api/models); it keeps its
        retry hint only for one of them: a model this service does not serve will not come by waiting."""
        try:
            served = self._call("GET", "/api/models")["models"]  # the default first, then those workers serve
        except ApiFailure:
            return failure
        retry = failure.retry_after if model is None or model in served else None
        return ApiFailure(f"{failure.message}; this service serves: {', '.join(served)}", failure.field, retry)


def url_problem(url: str) -> str | None:
    """What makes `url` unusable as the service's address, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # reading it raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        return str(exc)
    if parts.scheme not in {"http", "https"}:
        return f"its scheme is {parts.scheme}, not http or https"
    return None if parts.hostname else "it names no host"


def _failure(response: requests.Response) -> ApiFailure:
    """The API's own message (`{"error": {"message", "field"}}`), else the HTTP status; Retry-After on 429 and 503."""
    field = None
    try:
        error = response.json()["error"]
        message, field = error["message"], error.get("field")
    except (ValueError, KeyError, TypeError):
        message = response.reason or "error"
    if field:
        message += f" (field: {field})"
    retry = response.headers.get("Retry-After") if response.status_code in (429, 503) else None
    return ApiFailure(f"HTTP {response.status_code}: {message}", field, retry)
