"""Who is the teacher: the X-Dashboard-Token header, or a browser signed in on the dashboard with that token.

Failed token attempts (answered 403) count per address, on the dashboard and every teacher route alike,
so the token can be guessed nowhere faster than DASHBOARD_SIGNIN_LIMIT allows.
"""
from __future__ import annotations

import hashlib
import hmac

from flask import current_app, request, session
from flask_limiter.util import get_remote_address

from web.errors import ApiError
from web.security import limiter

HEADER = "X-Dashboard-Token"
SESSION_KEY = "dashboard"


def token() -> str:
    """DASHBOARD_TOKEN ("" when there is no teacher sign-in)."""
    return current_app.config["SETTINGS"].dashboard_token


def matches(offered: str, expected: str) -> bool:
    """Whether an offered token is the token (compared in constant time)."""
    return hmac.compare_digest(offered.encode(), expected.encode())


def fingerprint(expected: str) -> str:
    """What the session keeps instead of the token (keyed, so the cookie reveals nothing); a new token signs out."""
    return hmac.new(current_app.secret_key.encode(), b"dashboard:" + expected.encode(), hashlib.sha256).hexdigest()


def signed_in() -> bool:
    """Whether this browser's session signed in with the current token (the X-Dashboard-Token header is a guess)."""
    expected = token()
    return bool(expected) and hmac.compare_digest(str(session.get(SESSION_KEY, "")), fingerprint(expected))


def failed_attempts_limited(counts_as_failed):
    """A decorator (for a view or a blueprint): past DASHBOARD_SIGNIN_LIMIT failed attempts from an address, every
    request it guards from that address answers 429, except from a browser already signed in (it guesses nothing,
    and is often the teacher behind the same address). `counts_as_failed(response)` says which answers count;
    every place shares one count."""
    return limiter.shared_limit(lambda: current_app.config["SETTINGS"].dashboard_signin_limit, "dashboard",
                                key_func=lambda: "dashboard:" + get_remote_address(),
                                deduct_when=counts_as_failed, exempt_when=signed_in,
                                error_message="too many failed sign-ins from this address; wait a minute, then "
                                              "sign in on the dashboard")


# A teacher route outside the dashboard: a request offering a wrong token (403) counts as a failed attempt.
token_guesses_limited = failed_attempts_limited(
    lambda response: response.status_code == 403 and HEADER in request.headers)


def is_teacher() -> bool:
    """True for a request carrying the dashboard token, or from a browser signed in to the dashboard."""
    expected = token()
    if not expected:
        return False
    offered = request.headers.get(HEADER)
    if offered is not None:
        return matches(offered, expected)
    return signed_in()


def require_teacher() -> None:
    """403 (404 while no DASHBOARD_TOKEN is set: there is no teacher then) unless is_teacher()."""
    if not token():
        raise ApiError(404, "not_found", "class rooms need DASHBOARD_TOKEN to be set (there is no teacher sign-in)")
    if not is_teacher():
        raise ApiError(403, "forbidden", "teachers only: sign in on the form at /dashboard first, "
                                         "or send the X-Dashboard-Token header")
