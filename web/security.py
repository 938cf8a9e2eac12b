"""Who is asking (a session client id), how often they may ask, and the headers every answer carries."""
from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

from flask import Flask, Response, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)

csrf = CSRFProtect()
# No rate-limit headers on answers: the limiter's put `Retry-After` on every accepted job too. A refusal (429)
# says when to come back (web.errors, from `seconds_until_allowed`).
limiter = Limiter(key_func=get_remote_address, swallow_errors=True)

# A running job's page polls its job about four times a second. That read has no rate limit, so it
# skips the limiter's per-request work altogether (resolving limits for the endpoint, headers).
UNLIMITED_POLLS = frozenset({"api.status"})


@limiter.request_filter
def _is_unlimited_poll() -> bool:
    return request.endpoint in UNLIMITED_POLLS


def client_id() -> str:
    """This browser's (or CLI session's) id, kept in the signed session cookie; owns its jobs."""
    cid = session.get("client")
    if not isinstance(cid, str):
        cid = session["client"] = secrets.token_urlsafe(16)
        g.new_client = True  # no (valid) cookie came in: such clients are also capped per address
    return cid


def has_session_cookie() -> bool:
    """True when the request's signed session cookie already carried a client id (the client keeps cookies)."""
    client_id()
    return not g.get("new_client", False)


def client_address() -> str:
    """The client's address (the configured proxy hops already applied by ProxyFix)."""
    return get_remote_address() or "unknown"


def init_app(app: Flask) -> None:
    """Enable CSRF for form posts, rate limits backed by Redis, and security headers."""
    settings = app.config["SETTINGS"]
    csrf.init_app(app)
    app.session_interface = SchemeAwareSessions()
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_url or "memory://")
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 2, "socket_timeout": 2})
    limiter.init_app(app)
    app.after_request(_security_headers)


class SchemeAwareSessions(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie is Secure whenever the request came over HTTPS (directly, or through a
    trusted proxy's X-Forwarded-Proto): a teacher's signed-in session never travels over plain http after that,
    while `make run` on a LAN, plain http, keeps working."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def submit_limits(func=None, *, cost: Callable[[], int] | int = 1):
    """Rate limits for creating jobs: per session (a classroom shares one address) and, looser, per IP.

    `cost`: how many jobs one request creates (a callable reads it from the request)."""
    if func is None:
        return lambda view: submit_limits(view, cost=cost)

    def per_session() -> str:
        return current_app.config["SETTINGS"].rate_limit

    def per_ip() -> str:
        return current_app.config["SETTINGS"].ip_rate_limit

    def said(limit: Callable[[], str], whose: str) -> Callable[[], str]:
        return lambda: f"too many jobs submitted {whose} (at most {limit()}); wait a little and try again"

    # one budget for every route that makes jobs (the API and each form), per session and per address
    limited = limiter.shared_limit(per_session, "submit-session", key_func=lambda: "client:" + client_id(), cost=cost,
                                   error_message=said(per_session, "from this browser"))(func)
    return limiter.shared_limit(per_ip, "submit-address", key_func=lambda: "ip:" + get_remote_address(), cost=cost,
                                error_message=said(per_ip, "from this address"))(limited)


def seconds_until_allowed(default: int = 10) -> int:
    """Seconds until the rate limit this request broke lets it through again (`default` when unknown)."""
    broken = limiter.current_limit
    return max(1, math.ceil(broken.reset_at - time.time())) if broken is not None else default


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response
