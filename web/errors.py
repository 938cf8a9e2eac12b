"""Every failure answers with a clear status and, under /api, a JSON body naming what went wrong."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from redis import exceptions as redis_errors
from werkzeug.exceptions import HTTPException

from contract.jobs import ValidationError
from web.security import seconds_until_allowed

log = logging.getLogger(__name__)
REDIS_RETRY_AFTER = 5  # seconds a client should wait while Redis is unreachable
# Redis unreachable, slow, loading, failing over or full: retrying later can succeed (503). Any
# other Redis error (a script error, a key of the wrong type) is a bug that retrying repeats (500).
REDIS_UNAVAILABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ReadOnlyError,
                     redis_errors.OutOfMemoryError, redis_errors.TryAgainError, redis_errors.ClusterDownError)


DRAIN_LIMIT = 1 << 20  # a refused body up to this size is read and dropped: its connection stays usable


def _drain_refused_body() -> None:
    """Read and drop a body refused unread (413), up to DRAIN_LIMIT bytes. gunicorn drains only 64 KiB of what an
    answer left behind and then closes the connection, after an answer that said keep-alive: the client's next
    request on it failed. A larger body still closes it."""
    length = request.content_length or 0
    if length > DRAIN_LIMIT:
        return
    stream = request.environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


class ApiError(Exception):
    """An expected failure with its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.retry_after = status, code, message, field, retry_after


def error_response(status: int, code: str, message: str, field: str | None = None,
                   retry_after: int | None = None) -> Response:
    """JSON for API clients, a small page for browsers."""
    if request.path.startswith("/api/") or request.is_json or request.accept_mimetypes.best == "application/json":
        response = jsonify({"error": {"code": code, "field": field, "message": message}})
    else:
        response = Response(render_template("error.html", status=status, message=message), mimetype="text/html")
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def init_app(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.retry_after)

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError) -> Response:
        return error_response(400, exc.code, exc.message, exc.field)

    @app.errorhandler(redis_errors.RedisError)
    def _redis_error(exc: redis_errors.RedisError) -> Response:
        if not isinstance(exc, REDIS_UNAVAILABLE):
            return _unexpected(exc)
        log.warning("Redis unavailable: %s", exc)
        return error_response(503, "unavailable", "the job store is unreachable; try again shortly",
                              retry_after=REDIS_RETRY_AFTER)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        retry = None
        if exc.code == 429:
            retry = seconds_until_allowed()
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description
        if exc.code == 413:
            message = "the request body is too large"
            _drain_refused_body()
        if exc.code == 400 and request.path.startswith("/api/") and "CSRF" in str(exc.description):
            message = "this request needs a CSRF token"
        return error_response(exc.code or 500, code, message, retry_after=retry)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "something went wrong on our side")
