"""The class-room JSON API: rooms (teacher only) and students' guesses."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from contract.jobs import Limits, ValidationError, check_body, unicode_problem
from contract.record import JobRecord
from contract.rooms import validate_room_request
from web import classroom, jobs
from web.errors import ApiError
from web.security import client_id, csrf
from web.teacher import HEADER, require_teacher, token_guesses_limited

bp = Blueprint("rooms_api", __name__, url_prefix="/api")
csrf.exempt(bp)  # changes come as JSON or with the token header (checked below): neither crosses sites unpreflighted
MAX_GUESS_CHARS = 100
GUESS_FIELDS = ("step", "guess")


@bp.post("/rooms")
@token_guesses_limited
def create() -> tuple[Response, int, dict[str, str]]:
    """Open a room (teacher only): 201 {code, url, teacher_url, ...the room}."""
    require_teacher()
    s = jobs.settings()
    fields = validate_room_request(_json_body(), Limits(s.max_steps, s.max_top_k, s.max_prompt_chars))
    room = classroom.get_rooms().create(fields)
    return jsonify(room.to_dict()), 201, {"Location": f"/api/rooms/{room.code}"}


@bp.get("/rooms/<code>")
@token_guesses_limited
def show(code: str) -> dict[str, Any]:
    """The room with its jobs, the class tally and the step-1 guesses (teacher only)."""
    require_teacher()
    return classroom.room_view(classroom.room_or_404(code))


@bp.patch("/rooms/<code>")
@token_guesses_limited
def change(code: str) -> dict[str, Any]:
    """Lock or unlock, switch "same prompt for everyone" or guess mode, or change title, prompt, params."""
    require_teacher()
    room = classroom.room_or_404(code)
    s = jobs.settings()
    changes = validate_room_request(_json_body(), Limits(s.max_steps, s.max_top_k, s.max_prompt_chars), current=room)
    classroom.get_rooms().update(room.code, changes)
    return classroom.room_or_404(code).to_dict()


@bp.post("/rooms/<code>/close")
@token_guesses_limited
def close(code: str) -> dict[str, Any]:
    """Close the room: it takes no new jobs; the teacher still sees it until it expires.

    It has no body, but must come as JSON or with the token header, as every change here: a form posted
    from another site with a signed-in teacher's cookie closes nothing.
    """
    require_teacher()
    if not request.is_json and HEADER not in request.headers:
        raise ValidationError(None, "send it as JSON (Content-Type: application/json)", "invalid_body")
    room = classroom.room_or_404(code)
    classroom.get_rooms().close(room.code)
    return classroom.room_or_404(code).to_dict()


@bp.get("/jobs/<job_id>/guesses")
def guesses(job_id: str) -> dict[str, Any]:
    """The owner's guesses so far, in step order, as `POST` answered them."""
    return {"guesses": classroom.guesses_of(_own_job(job_id))}


@bp.post("/jobs/<job_id>/guesses")
def guess(job_id: str) -> dict[str, Any]:
    """Score the owner's guess for a step before it is shown: the model's probability and rank for it."""
    job = _own_job(job_id)
    body = _json_body()
    if not isinstance(body, dict):
        raise ValidationError(None, "send a JSON object: {\"step\": 1, \"guess\": \" on\"}", "invalid_body")
    check_body(body, GUESS_FIELDS)
    step, text = body.get("step"), body.get("guess")
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValidationError("step", "step must be a positive integer (the step guessed)", "type")
    if not isinstance(text, str) or not text or len(text) > MAX_GUESS_CHARS or unicode_problem(text):
        raise ValidationError("guess", f"guess must be a token's text, 1 to {MAX_GUESS_CHARS} characters", "type")
    return classroom.score_guess(job, step, text)


def _json_body() -> Any:
    if not request.is_json:
        raise ValidationError(None, "send a JSON body with Content-Type: application/json", "invalid_body")
    data = request.get_json(silent=True)
    if data is None:
        raise ValidationError(None, "the request body is not valid JSON", "invalid_json")
    return data


def _own_job(job_id: str) -> JobRecord:
    """The job, when this client submitted it (guesses are the student's own)."""
    job = jobs.load(job_id)
    if job.owner != client_id():
        raise ApiError(403, "forbidden", "only the student who submitted a job can guess its tokens")
    return job
