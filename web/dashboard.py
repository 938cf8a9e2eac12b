"""The teacher view: queue depth, running jobs, workers, throughput and recent jobs, behind DASHBOARD_TOKEN.

The teacher signs in through a form POST, so the token never appears in a URL, a browser's
history or an access log; scripts send the X-Dashboard-Token header instead.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, session, url_for

from contract.tasks import queue_for_model
from web.backend import (live_workers, queue_snapshot, recent_jobs, recent_status_counts, reported_models,
                         steps_last_minute)
from web.errors import ApiError
from web.teacher import HEADER, SESSION_KEY, failed_attempts_limited, fingerprint, matches, signed_in, token

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

RECENT_SHOWN = 20
RECENT_FIELDS = ("id", "status", "prompt", "model", "steps_done", "steps_total", "finish_reason", "error",
                 "created_at", "started_at", "finished_at")

# Against token guessing: every failed attempt here (a wrong form token or header, answered 403) counts.
failed_attempts_limited(lambda response: response.status_code == 403)(bp)


@bp.before_request
def _require_sign_in() -> Response | tuple[str, int] | None:
    """404 while no token is configured; the sign-in form until signed in; X-Dashboard-Token for scripts."""
    expected = token()
    if not expected:
        abort(404)
    if "token" in request.args:  # an old bookmark: drop the token from the address bar, never sign in with it
        return redirect(url_for("dashboard.page"), code=303)
    if request.endpoint == "dashboard.sign_in":
        return None
    offered = request.headers.get(HEADER)
    if offered is not None:
        if not matches(offered, expected):
            raise ApiError(403, "forbidden", "wrong dashboard token")
        return None
    if signed_in():
        return None
    if request.endpoint == "dashboard.page":
        return render_template("dashboard_signin.html", error=None), 200
    raise ApiError(403, "forbidden", "sign in at /dashboard, or send the X-Dashboard-Token header")


@bp.post("/sign-in")
def sign_in() -> Response | tuple[str, int]:
    """The sign-in form's POST (CSRF-protected): the token travels in the body, the session keeps a flag."""
    expected = token()
    if not matches(request.form.get("token", ""), expected):
        return render_template("dashboard_signin.html", error="That is not the dashboard token."), 403
    session[SESSION_KEY] = fingerprint(expected)
    return redirect(url_for("dashboard.page"), code=303)


@bp.post("/sign-out")
def sign_out() -> Response:
    """Forget the sign-in of this browser."""
    session.pop(SESSION_KEY, None)
    return redirect(url_for("dashboard.page"), code=303)


@bp.get("")
def page() -> str:
    """The page; dashboard.js fills it from /dashboard/data and refreshes it."""
    return render_template("dashboard.html")


@bp.get("/data")
def data() -> dict[str, Any]:
    """Everything the dashboard shows, as JSON (no owner ids, no secrets)."""
    workers = live_workers()
    queues = sorted({str(w["queue"]) for w in workers} | {queue_for_model(m) for m in reported_models(workers)})
    snapshots = [{"queue": q} | queue_snapshot(q) for q in queues]
    steps = steps_last_minute()
    return {
        "queues": snapshots,
        "queued": sum(int(q["waiting"]) for q in snapshots),
        "running": sum(int(w["active"]) for w in workers),
        "workers": workers,
        "steps_last_minute": steps,
        "steps_per_second": round(steps / 60, 2),
        "recent": [{k: job.get(k) for k in RECENT_FIELDS} for job in recent_jobs(RECENT_SHOWN)],
        "recent_outcomes": recent_status_counts(),
    }

