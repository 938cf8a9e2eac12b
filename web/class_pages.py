"""Class pages: the teacher's new-room form and projector view, the students' join form, scoring, the QR code."""
from __future__ import annotations

import functools
import io

import segno
from flask import Blueprint, Response, redirect, render_template, request, url_for

from contract import keys
from contract.defaults import LOOPBACK_HOSTS
from contract.jobs import Limits, ValidationError
from contract.rooms import Room, validate_room_request
from web import classroom, jobs
from web.errors import ApiError
from web.pages import form_text, form_to_request
from web.security import client_id, submit_limits
from web.teacher import require_teacher, token_guesses_limited

bp = Blueprint("class_pages", __name__)
SWITCH_FIELDS = ("locked", "same_prompt", "guess")


@bp.get("/rooms")
@token_guesses_limited
def new_room() -> str:
    """The teacher's form for a new room."""
    require_teacher()
    return render_template("room_new.html", form={}, error=None, settings=jobs.settings())


@bp.post("/rooms")
@token_guesses_limited
def create_room() -> Response | tuple[str, int]:
    """Create a room from the form (CSRF-protected) and go to its projector view."""
    require_teacher()
    s = jobs.settings()
    try:
        data = form_to_request(request.form)
        data.pop("seed", None)
        data.pop("model", None)
        data["title"] = form_text(request.form, "title")
        data |= {name: request.form.get(name) == "on" for name in SWITCH_FIELDS}
        room = classroom.get_rooms().create(validate_room_request(data, Limits(s.max_steps, s.max_top_k, s.max_prompt_chars)))
    except ValidationError as exc:
        return render_template("room_new.html", form=request.form, error=exc, settings=s), 400
    return redirect(url_for("class_pages.projector", code=room.code), code=303)


MAX_JOIN_LINK_CHARS = 200  # a join link longer than this comes from a made-up Host header, not a school network


@bp.get("/rooms/<code>")
@token_guesses_limited
def projector(code: str) -> str:
    """The teacher's projector view: join code, link and QR code, the students' jobs, the class tally."""
    require_teacher()
    room = classroom.room_or_404(code)
    return render_template("room.html", room=room, join_url=url_for("class_pages.join", code=room.code, _external=True),
                           loopback=request.host.rsplit(":", 1)[0].strip("[]") in LOOPBACK_HOSTS,
                           listens_on_network=jobs.settings().web_host not in LOOPBACK_HOSTS)


@bp.get("/rooms/<code>/qr.svg")
def qr_code(code: str) -> Response:
    """The join link as a QR code (SVG, made here: no outside service)."""
    room = classroom.room_or_404(code)
    link = url_for("class_pages.join", code=room.code, _external=True)
    if len(link) > MAX_JOIN_LINK_CHARS:  # the Host header sets its length: a long one made each code cost 140 ms
        raise ApiError(400, "invalid_host", f"the join link would be {len(link)} characters long; open the "
                                            "projector page at this computer's address")
    return Response(_qr_svg(link, room.code), mimetype="image/svg+xml", headers={"Cache-Control": "max-age=3600"})


@functools.lru_cache(maxsize=256)
def _qr_svg(link: str, code: str) -> bytes:
    """The QR code of a join link (drawn once per link: the projector and every reload share it)."""
    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="svg", scale=10, border=2, dark="#000", light="#fff", xmldecl=False,
                                     title=f"QR code for joining room {code}")
    return out.getvalue()


@bp.get("/join")
def join_by_code() -> Response | tuple[str, int]:
    """The home page's "room code" form: on to the room's join page, or a page saying what a code looks like."""
    code = keys.normalize_room_code(request.args.get("code", ""))
    if code is None:
        return render_template("error.html", status=400, message="a room code has 6 letters and digits, like "
                               "K7PM2Q: check it with your teacher"), 400
    return redirect(url_for("class_pages.join", code=code), code=303)


@bp.get("/r/<code>")
def join(code: str) -> tuple[str, int]:
    """The students' form: pre-filled from the room, read-only where the room decides, plus a nickname.

    The session gets its client id here, as on the home page: a class behind one address joins from this
    link, and each phone's first job must be its own, not its address's.
    """
    room = classroom.room_or_404(code)
    client_id()
    return _join_page(room, {}, None)


@bp.post("/r/<code>")
@submit_limits
def submit(code: str) -> Response | tuple[str, int]:
    """A student's job in the room; then the usual job page (in guess mode when chosen)."""
    room = classroom.room_or_404(code)
    guess = request.form.get("guess") == "on"
    try:
        data = form_to_request(request.form) | {"room": room.code, "nickname": request.form.get("nickname", ""),
                                                "guess": guess}
        created = jobs.submit(data)
    except (ValidationError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status >= 500:
            raise
        return _join_page(room, request.form, exc, 400 if isinstance(exc, ValidationError) else exc.status)
    page = created["page"] + ("?guess=1" if guess or room.guess else "")
    return redirect(page, code=303)


@bp.post("/score")
@submit_limits
def score() -> Response | tuple[str, int]:
    """Score a text from the form: one step per token, each with the model's probability and rank for it."""
    data = {"score": form_text(request.form, "score"), "prompt": form_text(request.form, "score_prompt")}
    try:
        created = jobs.submit({k: v for k, v in data.items() if v})
    except (ValidationError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status >= 500:
            raise
        return render_template("error.html", status=400, message=exc.message), 400
    return redirect(created["page"], code=303)


def _join_page(room: Room, form, error, status: int = 200) -> tuple[str, int]:
    if room.closed:
        raise ApiError(410, "closed_room", f"room {room.code} is closed: ask your teacher for a new code")
    return render_template("room_join.html", room=room, form=form, error=error, settings=jobs.settings()), status
