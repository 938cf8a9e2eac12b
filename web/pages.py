"""HTML pages: the form, the live job page, the temperature comparison, and the locally served Plotly.js."""
from __future__ import annotations

import functools
import importlib.util
import re
import secrets
from pathlib import Path

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request, send_file, url_for
from redis.exceptions import RedisError

from contract import keys
from contract.jobs import TEMPERATURE_RANGE, ValidationError, temperature_in_range
from web import jobs
from web.backend import default_model, get_store, live_workers
from web.classroom import room_title
from web.errors import ApiError
from web.security import client_id, submit_limits

bp = Blueprint("pages", __name__)

FORM_FIELDS = {"steps": int, "top_k": int, "temperature": float, "top_p": float, "seed": int}
# what a number box sends: ASCII digits (int() and float() would also take "5_0" and other scripts' digits)
FORM_NUMBER = {int: re.compile(r"[+-]?[0-9]+"), float: re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")}
DEFAULT_TEMPERATURES = "0, 0.7, 1.5"
MAX_COMPARED = 4
PLOTLY_MAX_AGE = 86400


@bp.get("/")
def index() -> tuple[str, int]:
    """The form: prompt, steps, top-k, temperature (or several, to compare), top-p, seed, model.

    The session gets its client id here, so a browser's first job is already its own (not its address's).
    """
    client_id()
    return _form_page({}, None)


@bp.post("/jobs")
@submit_limits
def submit_form() -> Response | tuple[str, int]:
    """Create a job from the HTML form (CSRF-protected) and go to its page."""
    try:
        created = jobs.submit(form_to_request(request.form))
    except (ValidationError, ApiError) as exc:
        return _form_error(exc)
    return redirect(created["page"], code=303)


def _compared_jobs() -> int:
    """How many jobs a comparison form creates (one per temperature): what it costs against the rate limits."""
    try:
        return len(_temperatures(request.form.get("temperatures", "")))
    except ValidationError:
        return 1  # refused before any job is made


@bp.post("/compare")
@submit_limits(cost=_compared_jobs)
def submit_compare() -> Response | tuple[str, int]:
    """Create one job per temperature (same prompt and seed) and go to the side-by-side page; all or none."""
    ids: list[str] = []
    try:
        data = form_to_request(request.form)
        temperatures = _temperatures(request.form.get("temperatures", ""))
        data.setdefault("seed", secrets.randbelow(2**31))  # one seed for all: only the temperature differs
        data.pop("temperature", None)
        for t in temperatures:
            ids.append(jobs.submit(data | {"temperature": t})["id"])
    except (ValidationError, ApiError) as exc:
        for job_id in ids:  # a refusal part-way takes back the jobs already made: nobody would see them
            get_store().cancel(job_id, client_id())
        return _form_error(exc)
    return redirect(url_for("pages.compare", jobs=",".join(ids)), code=303)


@bp.get("/compare")
def compare() -> str:
    """Several jobs side by side, step by step; compare.js polls each."""
    ids = [i for i in request.args.get("jobs", "").split(",") if i]
    if not 1 <= len(ids) <= MAX_COMPARED or not all(keys.is_job_id(i) for i in ids):
        raise ApiError(400, "invalid_jobs", f"give 1 to {MAX_COMPARED} job ids: /compare?jobs=ID,ID,ID", field="jobs")
    return render_template("compare.html", jobs=[jobs.load(i) for i in ids])


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    """The live page for one job; its script polls /api/jobs/<id>?since=N. Guess mode is for the job's owner: only
    they can guess its steps (a teacher opening it sees the steps)."""
    job = jobs.load(job_id)
    guess = job.owner == client_id() and (job.guess or request.args.get("guess") == "1")
    return render_template("job.html", job=job, room_title=room_title(job), guess=guess)


@bp.get("/jobs/<job_id>/download")
def download(job_id: str) -> Response:
    """The whole job with every step, as a JSON file."""
    response = jsonify(jobs.present(jobs.load(job_id), 0))
    response.headers["Content-Disposition"] = f'attachment; filename="job-{job_id}.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/vendor/plotly.min.js")
def plotly_js() -> Response:
    """Plotly.js from the installed `plotly` package: the charts work offline, with no CDN."""
    path = _plotly_path()
    if path is None:
        abort(404)
    return send_file(path, mimetype="text/javascript", max_age=PLOTLY_MAX_AGE, conditional=True)


@functools.cache
def _plotly_path() -> Path | None:
    spec = importlib.util.find_spec("plotly")  # located, not imported: the web never needs plotly's Python side
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _form_page(form, error, status: int = 200) -> tuple[str, int]:
    page = render_template("index.html", form=form, error=error, settings=jobs.settings(), models=_models(),
                           unavailable=_unavailable(),
                           default_temperatures=DEFAULT_TEMPERATURES)
    return page, status


def _form_error(exc: ValidationError | ApiError) -> tuple[str, int]:
    """Show the form again with the message; unexpected API errors go to the error handlers."""
    if isinstance(exc, ValidationError):
        return _form_page(request.form, exc, 400)
    if exc.status >= 500 or exc.status in (400, 429):
        return _form_page(request.form, exc, exc.status)
    raise exc


def _unavailable() -> str | None:
    """Why the default model cannot take jobs now (shown above the form), or None."""
    try:
        return jobs.model_availability(default_model())
    except RedisError:
        return None  # the form's submit answers with the real error


def _models() -> list[str]:
    """The default model first, then any other model a live worker serves (just the default if Redis is down)."""
    default = default_model()
    try:
        served = sorted({str(w["model"]) for w in live_workers()} - {default})
    except RedisError:
        served = []
    return [default] + served


def _temperatures(raw: str) -> list[float]:
    """'0, 0.7, 1.5' -> [0.0, 0.7, 1.5]: 2 to MAX_COMPARED distinct values in range."""
    parts = [part for part in re.split(r"[,\s;]+", raw.strip()) if part]
    if not all(FORM_NUMBER[float].fullmatch(part) for part in parts):
        raise ValidationError("temperatures", "temperatures must be numbers separated by commas", "type")
    values = list(dict.fromkeys(float(part) for part in parts))
    if not 2 <= len(values) <= MAX_COMPARED:
        raise ValidationError("temperatures", f"give 2 to {MAX_COMPARED} different temperatures to compare", "range")
    if not all(temperature_in_range(t) for t in values):
        raise ValidationError("temperatures", f"each temperature must be {TEMPERATURE_RANGE}", "range")
    return values


def form_text(form, name: str) -> str:
    """A text field as the person typed it: browsers send a text box's newlines as CRLF, the model should see LF."""
    return form.get(name, "").replace("\r\n", "\n").replace("\r", "\n")


def form_to_request(form) -> dict[str, object]:
    """Form strings to the JSON request shape; a malformed number is reported against its field."""
    data: dict[str, object] = {"prompt": form_text(form, "prompt")}
    for name, kind in FORM_FIELDS.items():
        raw = form.get(name, "").strip()
        if raw == "":
            continue
        if not FORM_NUMBER[kind].fullmatch(raw):
            raise ValidationError(name, f"{name} must be a number", "type")
        data[name] = kind(raw)
    if form.get("model"):
        data["model"] = form["model"]
    return data
