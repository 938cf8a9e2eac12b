"""The teacher view: queue depth, running jobs, workers, throughput and recent jobs, behind DASHBOARD_TOKEN."""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for

from contract.tasks import queue_for_model
from web import jobs
from web.backend import live_workers, queue_snapshot, recent_jobs, recent_status_counts, steps_last_minute
from web.errors import ApiError

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

SESSION_KEY = "dashboard"
HEADER = "X-Dashboard-Token"
RECENT_SHOWN = 20
RECENT_FIELDS = ("id", "status", "prompt", "model", "steps_done", "steps_total", "finish_reason", "error",
                 "created_at", "started_at", "finished_at")


@bp.before_request
def _require_token() -> Response | None:
    """404 while no token is configured; 403 until the token is shown once (query or header), then the session."""
    token = jobs.settings().dashboard_token
    if not token:
        abort(404)
    offered = request.args.get("token") or request.headers.get(HEADER)
    if offered is not None:
        if not hmac.compare_digest(offered.encode(), token.encode()):
            raise ApiError(403, "forbidden", "wrong dashboard token")
        session[SESSION_KEY] = _fingerprint(token)
        if "token" in request.args:  # keep the token out of the address bar and the history
            return redirect(url_for(request.endpoint), code=303)
        return None
    if not hmac.compare_digest(str(session.get(SESSION_KEY, "")), _fingerprint(token)):
        raise ApiError(403, "forbidden", "open /dashboard?token=<DASHBOARD_TOKEN> once to sign in")
    return None


@bp.get("")
def page() -> str:
    """The page; dashboard.js fills it from /dashboard/data and refreshes it."""
    return render_template("dashboard.html")


@bp.get("/data")
def data() -> dict[str, Any]:
    """Everything the dashboard shows, as JSON (no owner ids, no secrets)."""
    workers = live_workers()
    queues = sorted({str(w["queue"]) for w in workers} | {queue_for_model(jobs.default_model())})
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


def _fingerprint(token: str) -> str:
    """What the session keeps instead of the token (keyed, so the cookie reveals nothing); a new token signs out."""
    return hmac.new(current_app.secret_key.encode(), b"dashboard:" + token.encode(), hashlib.sha256).hexdigest()
