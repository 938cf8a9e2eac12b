"""Class rooms on the web side: joining one, the teacher's view of it (jobs, tally, guesses), and guesses."""
from __future__ import annotations

from collections import Counter
from typing import Any

from flask import current_app, g

from contract import keys
from contract.defaults import ROOM_MAX_JOBS
from contract.jobs import JobRequest, ValidationError
from contract.record import JobRecord
from contract.rooms import Room, RoomStore
from contract.scoring import match_guess
from contract.tally import tally
from web.backend import get_store
from web.errors import ApiError
from web.teacher import signed_in

TALLY_MAX_STEPS = 20  # steps read per job for the tally: a class's samples part ways within a few steps at T > 0
GUESS_STEP = 1  # the step whose guesses the teacher's view sets against the model (every job shares its context)


def get_rooms() -> RoomStore:
    """The RoomStore of the current app (made on first use, on the app's Redis connection)."""
    rooms = current_app.extensions.get("rooms")
    if rooms is None:
        settings = current_app.config["SETTINGS"]
        rooms = current_app.extensions["rooms"] = RoomStore(current_app.extensions["redis"], settings.room_ttl_seconds)
    return rooms


def room_or_404(code: str) -> Room:
    """The room a teacher's page or API call names (any spelling of its code); a 404 when unknown or expired."""
    normal = keys.normalize_room_code(code)
    room = get_rooms().get(normal) if normal else None
    if room is None:
        raise ApiError(404, "not_found", "no such room: check the code (rooms expire, and a teacher can close one)")
    return room


def open_room(code: str) -> Room:
    """The room a student joins; a 400 naming `room` when it is unknown, expired or closed."""
    room = get_rooms().get(code)
    if room is None:
        raise ValidationError("room", f"there is no room {code} (unknown code, or the room has expired)", "unknown_room")
    if room.closed:
        raise ValidationError("room", f"room {code} is closed: ask your teacher for a new code", "closed_room")
    return room


def join(request: JobRequest, job_id: str) -> JobRequest:
    """The request as its room runs it, with the job indexed under the room (unchanged outside a room)."""
    if request.room is None:
        return request
    room = open_room(request.room)
    added = get_rooms().add_job(room, job_id)
    if added == "closed":
        raise ValidationError("room", f"room {room.code} is closed: ask your teacher for a new code", "closed_room")
    if added == "full":
        raise ValidationError("room", f"room {room.code} holds its {ROOM_MAX_JOBS} jobs: ask your teacher to open a "
                              "new room", "room_full")
    return room.apply(request)


def room_title(job: JobRecord) -> str | None:
    """The title of the room a job was submitted in, while the room exists."""
    if not job.room:
        return None
    room = get_rooms().get(job.room)
    return (room.title or f"Room {room.code}") if room else None


def room_view(room: Room) -> dict[str, Any]:
    """What the teacher sees: the room, its jobs (nicknames, never owners), the tally and the step-1 guesses."""
    store = get_store()
    jobs = [job for job in (store.get(i) for i in get_rooms().job_ids(room.code)) if job is not None]
    guessed = get_rooms().guessed_steps([job.id for job in jobs if job.guess])
    in_tally = [job for job in jobs if _shares_the_room_prompt(job, room)]
    model = _tally_model(in_tally)
    in_tally = [job for job in in_tally if job.model == model]
    tally_steps = [store.steps(job.id, 0, min(job.steps_done, TALLY_MAX_STEPS, guessed.get(job.id, job.steps_done)),
                               job.model) for job in in_tally]  # a guessing student's steps once guessed
    entries = tally(tally_steps, TALLY_MAX_STEPS)
    return room.to_dict() | {
        "jobs": [_job_summary(store, job, guessed) for job in jobs],
        "students": len({job.owner for job in jobs}),  # a count only: owners are never shown
        "tally": entries,
        "tally_temperature": room.params.temperature,
        "tally_model": model,
        "guesses": _guess_summary([job.id for job in in_tally], entries),
    }


def guessed_so_far(job: JobRecord) -> int | None:
    """How many of a guess job's steps this reader may see: the first ones its student guessed, in order. None
    (every step) for other jobs, and for the teacher signed in on the dashboard. Read once per request."""
    if not job.guess or signed_in():
        return None
    known = g.setdefault("guessed_steps", {})
    if job.id not in known:
        known[job.id] = get_rooms().guessed_steps([job.id])[job.id]
    return known[job.id]


def readable_steps(job: JobRecord) -> int:
    """The last step index a poll reads: every computed step, or a guess job's guessed ones and the next (asked)."""
    guessed = guessed_so_far(job)
    return job.steps_done if guessed is None else min(guessed + 1, job.steps_done)


def next_question(step: dict[str, Any]) -> dict[str, Any]:
    """What a guesser is shown of a step before guessing it: its number, its context and its candidates' texts, in
    an order that gives away neither rank nor choice."""
    return {"step": step["index"], "context": step["context"],
            "candidates": sorted({candidate["token"] for candidate in step["top"]})}


def score_guess(job: JobRecord, step_index: int, guess: str) -> dict[str, Any]:
    """Score and keep a student's guess at one step of their job; the first guess per step counts: a later one is
    scored with `first` False and `kept`, the guess that counts. Steps are guessed in order.

    Raises:
        ValidationError: the step is not computed yet or comes after one not guessed yet.
    """
    if not 1 <= step_index <= job.steps_done:
        raise ValidationError("step", f"step {step_index} is not computed yet", "not_ready")
    guessed = get_rooms().guessed_steps([job.id])[job.id]
    if step_index > guessed + 1:
        raise ValidationError("step", f"guess step {guessed + 1} first: steps are guessed in order", "out_of_order")
    step = get_store().steps(job.id, step_index - 1, step_index, job.model)[0]
    match = match_guess(step, guess)
    outcome = {"step": step_index, "guess": guess, "match": match, "top": len(step["top"]),
               "chosen": step["chosen"], "correct": bool(match and match["id"] == step["chosen"]["id"])}
    first, kept = get_rooms().record_guess(job.id, step_index, outcome, current_app.config["SETTINGS"].job_ttl_seconds)
    return outcome | {"first": True} if first else outcome | {"first": False, "kept": kept}


def guesses_of(job: JobRecord) -> list[dict[str, Any]]:
    """The guesses kept for a job's steps, in step order (a reloaded guess page goes on from them)."""
    return [outcome for _, outcome in sorted(get_rooms().all_guesses(job.id).items())]


def _shares_the_room_prompt(job: JobRecord, room: Room) -> bool:
    """Jobs in the tally: the room's prompt, temperature and top-p, plain generation (no forced tokens)."""
    return (job.prompt == room.prompt and not job.score and not job.forced_ids
            and job.params.temperature == room.params.temperature and job.params.top_p == room.params.top_p)


def _tally_model(jobs: list[JobRecord]) -> str | None:
    """The model most of the tallied jobs ran (the first one's among equals): token ids mean nothing across models."""
    counts = Counter(job.model for job in jobs)
    return max(counts, key=counts.get) if counts else None


def _job_summary(store, job: JobRecord, guessed: dict[str, int]) -> dict[str, Any]:
    return {"id": job.id, "nickname": job.nickname, "prompt": job.prompt, "status": job.status.value,
            "text": _shown_text(store, job, guessed), "steps_done": job.steps_done, "steps_total": job.steps_total,
            "params": job.params.to_dict(), "score": job.score or None}


def _shown_text(store, job: JobRecord, guessed_steps: dict[str, int]) -> str:
    """The job's text as far as the projector may show it: a guessing student's only up to the steps they guessed
    (`guessed_steps`: by job id, for the guessing jobs)."""
    guessed = guessed_steps.get(job.id, job.steps_done)
    if guessed < job.steps_done:
        return store.steps(job.id, guessed, guessed + 1, job.model)[0]["context"]  # before the next un-guessed step
    return job.text or store.text_so_far(job)


def _guess_summary(job_ids: list[str], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The class's guesses at step 1, counted by the token they named, beside the model's probability for it."""
    guesses = get_rooms().guesses(job_ids, GUESS_STEP)
    counts: dict[str, dict[str, Any]] = {}
    for g in guesses.values():
        match = g["match"]
        key = match["token"] if match else g["guess"]
        row = counts.setdefault(key, {"token": key, "id": match["id"] if match else None,
                                      "prob": match["prob"] if match else None,
                                      "rank": match["rank"] if match else None, "count": 0})
        row["count"] += 1
    first = next((e for e in entries if e["step"] == GUESS_STEP), None)
    return {"step": GUESS_STEP, "total": len(guesses),
            "guessed": sorted(counts.values(), key=lambda r: (-r["count"], -(r["prob"] or 0))),
            "model": first["model"] if first else []}
