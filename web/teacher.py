"""Who is the teacher: the X-Dashboard-Token header, or a session signed in on the dashboard with that token."""
from __future__ import annotations

import hmac

from flask import current_app, request
from flask_limiter.util import get_remote_address

from web.errors import ApiError
from web.security import limiter

HEADER = "X-Dashboard-Token"


def token_guesses_limited(view):
    """A teacher route whose wrong-token answers (403 to a request offering the header) count against the address's
    allowance of failed dashboard sign-ins, the same count: the token cannot be guessed here instead. A browser
    signed in is exempt, as on the dashboard."""
    from web.dashboard import signed_in  # imported late: the dashboard imports jobs

    return limiter.shared_limit(lambda: current_app.config["SETTINGS"].dashboard_signin_limit, "dashboard",
                                key_func=lambda: "dashboard:" + get_remote_address(),
                                deduct_when=lambda response: response.status_code == 403 and HEADER in request.headers,
                                exempt_when=signed_in)(view)


def is_teacher() -> bool:
    """True for a request carrying the dashboard token, or from a browser signed in to the dashboard."""
    token = current_app.config["SETTINGS"].dashboard_token
    if not token:
        return False
    offered = request.headers.get(HEADER)
    if offered is not None:
        return hmac.compare_digest(offered.encode(), token.encode())
    from web.dashboard import signed_in  # the dashboard owns sign-in; imported late (it imports jobs)

    return signed_in()


def require_teacher() -> None:
    """403 (404 while no DASHBOARD_TOKEN is set: there is no teacher then) unless is_teacher()."""
    if not current_app.config["SETTINGS"].dashboard_token:
        raise ApiError(404, "not_found", "class rooms need DASHBOARD_TOKEN to be set (there is no teacher sign-in)")
    if not is_teacher():
        raise ApiError(403, "forbidden", "teachers only: sign in at /dashboard?token=<DASHBOARD_TOKEN> first, "
                                         "or send the X-Dashboard-Token header")
