"""HTML pages: the form and the live job page (which polls the JSON API)."""
from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request

from contract.jobs import ValidationError
from web import jobs
from web.errors import ApiError
from web.security import submit_limits

bp = Blueprint("pages", __name__)

FORM_FIELDS = {"steps": int, "top_k": int, "temperature": float, "top_p": float, "seed": int}


@bp.get("/")
def index() -> str:
    """The form: prompt, steps, top-k, temperature."""
    return render_template("index.html", form={}, error=None, settings=jobs.settings())


@bp.post("/jobs")
@submit_limits
def submit_form() -> Response | tuple[str, int]:
    """Create a job from the HTML form (CSRF-protected) and go to its page."""
    try:
        created = jobs.submit(_form_to_request(request.form))
    except ValidationError as exc:
        return render_template("index.html", form=request.form, error=exc, settings=jobs.settings()), 400
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 429:
            return render_template("index.html", form=request.form, error=exc, settings=jobs.settings()), exc.status
        raise
    return redirect(created["page"], code=303)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    """The live page for one job; its script polls /api/jobs/<id>?since=N."""
    job = jobs.load(job_id)
    return render_template("job.html", job=job)


def _form_to_request(form) -> dict[str, object]:
    """Form strings to the JSON request shape; a malformed number is reported against its field."""
    data: dict[str, object] = {"prompt": form.get("prompt", "")}
    for name, kind in FORM_FIELDS.items():
        raw = form.get(name, "").strip()
        if raw == "":
            continue
        try:
            data[name] = kind(raw)
        except ValueError:
            raise ValidationError(name, f"{name} must be a number", "type") from None
    if form.get("model"):
        data["model"] = form["model"]
    return data
