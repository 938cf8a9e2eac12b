"""Class rooms on fakeredis: the RoomStore, validation of every new field, teacher-only views, privacy."""
from __future__ import annotations

import re
import time

import pytest

from contract import keys
from contract.jobs import GenerationParams, JobRequest, JobStatus, Limits, ValidationError, validate_request
from contract.rooms import Room, RoomStore, validate_room_request
from contract.steprecord import pack_record
from contract.store import StepWrite, context_edit
from tests.conftest import announce_worker

TOKEN = "teacher-sesame"
TEACHER = {"X-Dashboard-Token": TOKEN}


@pytest.fixture
def class_app(make_app):
    """The app with DASHBOARD_TOKEN set (teachers exist)."""
    return make_app(dashboard_token=TOKEN)


def open_room(app, **body) -> dict:
    response = app.test_client().post("/api/rooms", json=body, headers=TEACHER)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def finish_with_steps(app, job_id: str, chosen: list[tuple[int, str]], top: list[tuple[int, str, float]]):
    """Run a stored job to the end as a worker would, one step per chosen (id, token), each with `top`."""
    store = app.extensions["store"]
    job = store.get(job_id)
    fence = store.claim(job_id, "w@test", job.queue, max_queue_age=600).fence
    context = job.prompt
    probs = {i: p for i, _, p in top}
    for index, (token_id, token) in enumerate(chosen, 1):
        prob = probs.get(token_id, 0.01)
        record = pack_record([(i, p) for i, _, p in top], (token_id, prob, 1 + sum(p > prob for p in probs.values())),
                             1.0, 1.0)
        edit = context_edit(len(context) - len(chosen[index - 2][1]), chosen[index - 2][1]) if index > 1 \
            else context_edit(0, context)
        texts = {i: t for i, t, _ in top} | {token_id: token}
        store.append_steps([StepWrite(job_id, fence, index, record, edit)], job.model, texts)
        context += token
    store.finish(job_id, fence, "w@test", JobStatus.DONE, finish_reason="length", text=context)


# -- codes and the store ---------------------------------------------------------------------------

def test_room_codes_are_six_characters_without_look_alikes():
    codes = {keys.new_room_code() for _ in range(2000)}
    assert len(codes) > 1990
    assert all(len(c) == 6 and not set(c) & set("0O1Il") for c in codes)
    assert keys.normalize_room_code(" k7pm2q ") == "K7PM2Q"
    assert keys.normalize_room_code("K7PM2O") is None and keys.normalize_room_code("K7PM2") is None


def test_room_store_creates_closes_and_expires(fake_redis):
    rooms = RoomStore(fake_redis, ttl_seconds=100)
    fields = validate_room_request({"title": "Year 9", "prompt": "The cat sat", "temperature": 1, "locked": True})
    now = time.time()
    room = rooms.create(fields, now=now)
    assert room.expires_at == now + 100 and 0 < fake_redis.ttl(keys.room_key(room.code)) <= 100
    assert rooms.get(room.code, now=now + 50) == room
    assert rooms.get(room.code, now=now + 100) is None  # expired, even before Redis drops the key
    assert rooms.add_job(room, "job-a", now=now + 1) == "added" and rooms.job_ids(room.code) == ["job-a"]
    assert 0 < fake_redis.ttl(keys.room_jobs_key(room.code)) <= 101  # the index goes with the room
    rooms.update(room.code, {"locked": False})
    assert rooms.get(room.code).locked is False
    rooms.close(room.code)
    assert rooms.get(room.code).closed
    assert rooms.add_job(room, "job-b") == "closed" and rooms.job_ids(room.code) == ["job-a"]


def test_a_locked_rooms_prompt_and_params_win_and_same_prompt_keeps_the_students_params():
    room = Room("ABCDEF", "t", "The cat sat", GenerationParams(steps=3, top_k=7, temperature=1.0))
    asked = JobRequest("My own prompt", GenerationParams(steps=9, top_k=2, temperature=0.0, seed=4), room="ABCDEF")
    locked = Room(**{**room.__dict__, "locked": True}).apply(asked)
    assert (locked.prompt, locked.params) == ("The cat sat", GenerationParams(3, 7, 1.0, 1.0, seed=4))
    same = Room(**{**room.__dict__, "same_prompt": True}).apply(asked)
    assert (same.prompt, same.params) == ("The cat sat", asked.params)
    assert room.apply(asked) == asked


NEW_FIELDS = [
    ({"prompt": "a", "room": 123}, "room", "type"),
    ({"prompt": "a", "room": "ABC"}, "room", "type"),
    ({"prompt": "a", "room": "ABCDE0"}, "room", "type"),
    ({"prompt": "a", "nickname": 5}, "nickname", "type"),
    ({"prompt": "a", "nickname": "x" * 25}, "nickname", "too_long"),
    ({"prompt": "a", "nickname": "two\nlines"}, "nickname", "invalid"),
    ({"prompt": "a", "nickname": "bidi\u202eevil"}, "nickname", "invalid"),
    ({"prompt": "a", "nickname": "\u200d\u200c"}, "nickname", "invalid"),
    ({"prompt": "a", "guess": 1}, "guess", "type"),
    ({"score": 5}, "score", "type"),
    ({"score": "  "}, "score", "empty"),
    ({"score": "x" * 2001}, "score", "too_long"),
    ({"score": "a\x00b"}, "score", "invalid"),
    ({"score": "the mat", "forced_ids": [1]}, "score", "invalid"),
]


@pytest.mark.parametrize("body, field, code", NEW_FIELDS)
def test_new_job_fields_are_validated(body, field, code):
    with pytest.raises(ValidationError) as caught:
        validate_request(body, Limits())
    assert (caught.value.field, caught.value.code) == (field, code)


@pytest.mark.parametrize("nickname", ["\U0001f9d1\u200d\U0001f4bb Sam", "\U0001f469\u200d\U0001f393Mia",
                                      "\u0646\u06cc\u0644\u0648\u0641\u0631\u200c\u062c\u0627\u0646"])
def test_nicknames_keep_the_joiners_emoji_and_persian_spelling_need(nickname):
    """Zero-width joiners build emoji sequences and Persian words: they were refused as invisible formatting."""
    assert validate_request({"prompt": "a", "nickname": nickname}).nickname == nickname


def test_score_jobs_need_no_prompt_and_default_to_max_steps():
    request = validate_request({"score": "The cat sat on the mat", "nickname": "  Ada  "}, Limits(max_steps=120))
    assert request.prompt == "" and request.params.steps == 120 and request.nickname == "Ada"
    assert validate_request({"prompt": "a", "room": "k7pm2q"}).room == "K7PM2Q"


ROOM_BODIES = [
    ({"title": 5}, "title", "type"),
    ({"title": "x" * 81}, "title", "too_long"),
    ({"prompt": 1}, "prompt", "type"),
    ({"steps": 0}, "steps", "range"),
    ({"top_k": 99}, "top_k", "range"),
    ({"temperature": 11}, "temperature", "range"),
    ({"top_p": 0}, "top_p", "range"),
    ({"locked": "yes", "prompt": "a"}, "locked", "type"),
    ({"locked": True}, "prompt", "empty"),
    ({"seed": 3}, "seed", "unknown_field"),
]


@pytest.mark.parametrize("body, field, code", ROOM_BODIES)
def test_room_bodies_are_validated_over_http(class_app, body, field, code):
    response = class_app.test_client().post("/api/rooms", json=body, headers=TEACHER)
    assert response.status_code == 400
    assert (response.get_json()["error"]["field"], response.get_json()["error"]["code"]) == (field, code)


# -- the API ---------------------------------------------------------------------------------------

def test_only_a_teacher_creates_and_reads_rooms(class_app):
    student = class_app.test_client()
    assert student.post("/api/rooms", json={"title": "x"}).status_code == 403
    assert student.post("/api/rooms", json={"title": "x"}, headers={"X-Dashboard-Token": "wrong"}).status_code == 403
    created = open_room(class_app, title="Year 9", prompt="The cat sat", temperature=1.0)
    assert set(created) >= {"code", "url", "teacher_url"}
    assert created["url"] == f"/r/{created['code']}" and created["teacher_url"] == f"/rooms/{created['code']}"
    assert student.get(f"/api/rooms/{created['code']}").status_code == 403
    assert student.post(f"/api/rooms/{created['code']}/close").status_code == 403

    signed_in = class_app.test_client()  # a browser signed in on the dashboard is a teacher too
    assert signed_in.post("/dashboard/sign-in", data={"token": TOKEN}).status_code == 303
    room = signed_in.get(f"/api/rooms/{created['code'].lower()}").get_json()
    assert room["code"] == created["code"] and room["title"] == "Year 9" and room["jobs"] == []
    assert room["params"] == {"steps": 5, "top_k": 10, "temperature": 1.0, "top_p": 1.0}


def test_a_change_naming_no_field_leaves_the_room_as_it_was(class_app):
    room = open_room(class_app, title="Year 9", prompt="The cat sat")
    response = class_app.test_client().patch(f"/api/rooms/{room['code']}", json={}, headers=TEACHER)
    assert response.status_code == 200 and response.get_json() == room


def test_rooms_are_off_without_a_dashboard_token(client):
    assert client.post("/api/rooms", json={}, headers=TEACHER).status_code == 404


def test_students_join_lock_applies_and_closed_or_unknown_rooms_are_400(class_app):
    code = open_room(class_app, prompt="The cat sat", steps=3, temperature=1.0, locked=True)["code"]
    student = class_app.test_client()
    response = student.post("/api/jobs", json={"prompt": "Mine", "steps": 9, "room": code, "nickname": "Ada"})
    assert response.status_code == 202
    job = student.get(response.get_json()["url"]).get_json()
    assert job["prompt"] == "The cat sat" and job["params"]["steps"] == 3 and job["params"]["temperature"] == 1.0
    assert job["room"] == code and job["nickname"] == "Ada"

    teacher = class_app.test_client()
    assert teacher.patch(f"/api/rooms/{code}", json={"locked": False}, headers=TEACHER).get_json()["locked"] is False
    free = student.post("/api/jobs", json={"prompt": "Mine", "steps": 2, "room": code}).get_json()
    assert student.get(free["url"]).get_json()["prompt"] == "Mine"
    assert teacher.patch(f"/api/rooms/{code}", json={"same_prompt": True}, headers=TEACHER).status_code == 200
    same = student.post("/api/jobs", json={"prompt": "Mine", "steps": 2, "room": code}).get_json()
    assert student.get(same["url"]).get_json()["prompt"] == "The cat sat"

    assert teacher.post(f"/api/rooms/{code}/close", headers=TEACHER).get_json()["closed"] is True
    for room in (code, "ZZZZZZ"):
        response = student.post("/api/jobs", json={"prompt": "a", "room": room})
        assert response.status_code == 400 and response.get_json()["error"]["field"] == "room"
    assert len(teacher.get(f"/api/rooms/{code}", headers=TEACHER).get_json()["jobs"]) == 3  # still readable


def test_a_room_takes_a_bounded_number_of_jobs(class_app, monkeypatch):
    """Cancelled jobs stay in the room: one student submitting and cancelling 600 a minute made every projector
    refresh read thousands of jobs."""
    monkeypatch.setattr("contract.rooms.ROOM_MAX_JOBS", 3)
    monkeypatch.setattr("web.classroom.ROOM_MAX_JOBS", 3)
    code = open_room(class_app, prompt="The cat sat")["code"]
    student = class_app.test_client()
    for _ in range(3):
        job = student.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()
        assert student.delete(job["url"]).status_code == 202
    refused = student.post("/api/jobs", json={"prompt": "x", "room": code})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "room_full"
    assert "ask your teacher to open a new room" in refused.get_json()["error"]["message"]
    assert len(class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()["jobs"]) == 3


def test_an_expired_room_takes_no_jobs_and_is_gone_for_the_teacher(class_app, fake_redis):
    code = open_room(class_app, prompt="The cat sat")["code"]
    fake_redis.hset(keys.room_key(code), "expires_at", repr(time.time() - 1))
    response = class_app.test_client().post("/api/jobs", json={"prompt": "a", "room": code})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "unknown_room"
    assert class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).status_code == 404


def test_a_student_never_sees_another_students_room_job(class_app):
    code = open_room(class_app, prompt="The cat sat")["code"]
    ada, bob = class_app.test_client(), class_app.test_client()
    job = ada.post("/api/jobs", json={"prompt": "secret", "room": code, "nickname": "Ada"}).get_json()
    assert ada.get(job["url"]).status_code == 200
    for path in (job["url"], job["page"], job["page"] + "/download", f"/compare?jobs={job['id']}"):
        assert bob.get(path).status_code == 403, path
    assert bob.delete(job["url"]).status_code == 403
    teacher = class_app.test_client()
    teacher.post("/dashboard/sign-in", data={"token": TOKEN})
    assert teacher.get(job["url"]).status_code == 200


def test_a_room_job_is_no_oracle_for_the_dashboard_token(class_app):
    """Reading a room job with X-Dashboard-Token answered 403 for a wrong token and 200 for the right one, with
    no limit on the guesses: a student could find the token from their own job. Only a signed-in browser reads
    another student's job; the header is the rooms API's (whose wrong guesses are counted)."""
    code = open_room(class_app, prompt="The cat sat")["code"]
    job = class_app.test_client().post("/api/jobs", json={"prompt": "x", "room": code}).get_json()
    stranger = class_app.test_client()
    for offered in [f"guess-{i}" for i in range(20)] + [TOKEN]:
        for path in (job["url"], job["page"], job["page"] + "/download", f"/compare?jobs={job['id']}"):
            assert stranger.get(path, headers={"X-Dashboard-Token": offered}).status_code == 403, (offered, path)
    advice = stranger.get(f"/api/rooms/{code}").get_json()["error"]["message"]
    assert "?token=" not in advice and "sign in on the form at /dashboard" in advice  # a token in a URL is logged


def test_the_teachers_view_lists_nicknames_never_owners_and_tallies_shared_contexts(class_app, fake_redis):
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True)["code"]
    top = [(10, " on", 0.5), (11, " down", 0.3), (12, " up", 0.2)]
    plan = {"Ada": [(10, " on"), (11, " down")], "Bob": [(10, " on"), (12, " up")],
            "Cy": [(11, " down"), (10, " on")], "Di": [(10, " on"), (11, " down")]}
    ids = {}
    for name, chosen in plan.items():
        ids[name] = class_app.test_client().post("/api/jobs", json={"prompt": "x", "room": code,
                                                                    "nickname": name}).get_json()["id"]
        finish_with_steps(class_app, ids[name], chosen, top)
    outside = class_app.test_client().post("/api/jobs", json={"prompt": "The cat sat", "temperature": 1.0}).get_json()
    finish_with_steps(class_app, outside["id"], [(12, " up")], top)

    response = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER)
    room = response.get_json()
    assert [j["nickname"] for j in room["jobs"]] == ["Ada", "Bob", "Cy", "Di"]
    assert room["students"] == 4  # each job from its own session here; a count of sessions, never who they are
    assert {j["id"] for j in room["jobs"]} == set(ids.values())  # the job outside the room is not listed
    assert set(room["jobs"][0]) == {"id", "nickname", "prompt", "status", "text", "steps_done", "steps_total",
                                    "params", "score"}
    text = response.get_data(as_text=True)
    for job_id in ids.values():
        assert fake_redis.hget(keys.job_key(job_id), "owner").decode() not in text
    assert "owner" not in text and "127.0.0.1" not in text

    tally = room["tally"]
    assert [(e["step"], e["context"], e["total"]) for e in tally] == [(1, "The cat sat", 4), (2, "The cat sat on", 3)]
    assert tally[0]["chosen"] == [{"token": " on", "id": 10, "count": 3}, {"token": " down", "id": 11, "count": 1}]
    assert tally[1]["chosen"] == [{"token": " down", "id": 11, "count": 2}, {"token": " up", "id": 12, "count": 1}]
    assert tally[0]["model"] == [{"token": " on", "id": 10, "prob": 0.5}, {"token": " down", "id": 11, "prob": 0.3},
                                 {"token": " up", "id": 12, "prob": 0.2}]
    for e in tally:  # the counts are exactly the jobs' chosen tokens at that step
        assert sum(c["count"] for c in e["chosen"]) == e["total"]


def test_the_tally_counts_one_models_jobs_only(class_app, fake_redis):
    """Token ids mean different tokens in different models: a room whose students pick two models tallies the
    model most of them use, and says which."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True)["code"]
    announce_worker(fake_redis, class_app.config["SETTINGS"], model="other/model", name="w2@test")
    top = [(10, " on", 0.5), (11, " down", 0.3), (12, " up", 0.2)]
    default_jobs = [class_app.test_client().post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"]
                    for _ in range(3)]
    other_jobs = [class_app.test_client().post("/api/jobs", json={"prompt": "x", "room": code,
                                                                  "model": "other/model"}).get_json()["id"]
                  for _ in range(2)]
    for job_id in default_jobs:
        finish_with_steps(class_app, job_id, [(10, " on")], top)
    for job_id in other_jobs:  # in the other model id 11 is another token
        finish_with_steps(class_app, job_id, [(11, " sur")], [(11, " sur", 0.9), (10, " le", 0.1)])

    room = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()
    assert len(room["jobs"]) == 5
    assert room["tally_model"] == class_app.extensions["store"].get(default_jobs[0]).model
    step1 = room["tally"][0]
    assert step1["total"] == 3 and step1["chosen"] == [{"token": " on", "id": 10, "count": 3}]
    assert [c["token"] for c in step1["model"]] == [" on", " down", " up"]


def test_guesses_are_scored_by_the_models_probability_and_shown_to_the_teacher(class_app):
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True)["code"]
    top = [(10, " on", 0.5), (11, " down", 0.3), (12, " mat", 0.089)]
    students = [class_app.test_client() for _ in range(3)]
    jobs = [s.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"] for s in students]
    for job_id in jobs:
        finish_with_steps(class_app, job_id, [(10, " on")], top)
    answers = [s.post(f"/api/jobs/{j}/guesses", json={"step": 1, "guess": g}).get_json()
               for s, j, g in zip(students, jobs, ["mat", " on", "zebra"])]
    assert answers[0]["match"] == {"token": " mat", "id": 12, "prob": 0.089, "rank": 3} and not answers[0]["correct"]
    assert answers[1]["correct"] and answers[2]["match"] is None and answers[2]["top"] == 3
    again = students[0].post(f"/api/jobs/{jobs[0]}/guesses", json={"step": 1, "guess": " on"}).get_json()
    assert again["first"] is False  # only the first guess of a step counts for the class
    assert students[1].post(f"/api/jobs/{jobs[0]}/guesses", json={"step": 1, "guess": "on"}).status_code == 403
    for body, field in (({"step": 2, "guess": "on"}, "step"), ({"step": "1", "guess": "on"}, "step"),
                        ({"step": 1, "guess": ""}, "guess"), ({"step": 1, "guess": "\ud800"}, "guess"),
                        ({"step": 1, "guess": "on", "hint": 1}, "hint"),
                        ([1], None), ("x", None), (True, None)):
        response = students[0].post(f"/api/jobs/{jobs[0]}/guesses", json=body)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field

    guesses = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()["guesses"]
    assert guesses["step"] == 1 and guesses["total"] == 3
    assert {(g["token"], g["count"], g["prob"]) for g in guesses["guessed"]} == {
        (" mat", 1, 0.089), (" on", 1, 0.5), ("zebra", 1, None)}
    assert guesses["model"][0] == {"token": " on", "id": 10, "prob": 0.5}


def test_a_student_reads_back_their_guesses_and_a_second_guess_at_a_step_answers_the_first(class_app):
    """A reloaded guess page asked step 1 again and counted the repeat guess's points (the class kept the first)."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True, guess=True)["code"]
    student, other = class_app.test_client(), class_app.test_client()
    job_id = student.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"]
    top = [(10, " on", 0.5), (11, " the", 0.3), (12, " mat", 0.2)]
    finish_with_steps(class_app, job_id, [(10, " on"), (11, " the")], top)
    assert student.get(f"/api/jobs/{job_id}/guesses").get_json() == {"guesses": []}
    first = student.post(f"/api/jobs/{job_id}/guesses", json={"step": 1, "guess": "mat"}).get_json()
    again = student.post(f"/api/jobs/{job_id}/guesses", json={"step": 1, "guess": " on"}).get_json()
    assert again["first"] is False and again["guess"] == " on" and again["correct"]  # scored as before
    assert again["kept"]["guess"] == "mat" and again["kept"]["match"] == first["match"]  # the one that counts
    student.post(f"/api/jobs/{job_id}/guesses", json={"step": 2, "guess": "the"})
    kept = student.get(f"/api/jobs/{job_id}/guesses").get_json()["guesses"]
    assert [(g["step"], g["guess"], g["correct"]) for g in kept] == [(1, "mat", False), (2, "the", True)]
    assert kept[0]["match"] == {"token": " mat", "id": 12, "prob": 0.2, "rank": 3}
    refused = other.get(f"/api/jobs/{job_id}/guesses")
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert student.get("/api/jobs/" + "A" * 22 + "/guesses").status_code == 404


def test_a_candidate_whose_token_is_a_control_byte_can_be_guessed_from_its_chip(class_app):
    """A chip posts its candidate's token as the guess: one that is the byte 0x00 was refused as text."""
    code = open_room(class_app, prompt="The cat sat", guess=True)["code"]
    student = class_app.test_client()
    job_id = student.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"]
    finish_with_steps(class_app, job_id, [(10, " on")], [(10, " on", 0.6), (189, "\x00", 0.1)])
    answer = student.post(f"/api/jobs/{job_id}/guesses", json={"step": 1, "guess": "\x00"})
    assert answer.status_code == 200 and answer.get_json()["match"] == {"token": "\x00", "id": 189, "prob": 0.1,
                                                                        "rank": 2}


def test_the_tally_leaves_out_jobs_sampled_with_another_top_p(class_app):
    """A job sampled from its nucleus cannot draw the model's whole distribution the tally sets it against."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0)["code"]
    top = [(10, " on", 0.5), (11, " down", 0.3), (12, " up", 0.2)]
    whole = [class_app.test_client().post("/api/jobs", json={"prompt": "The cat sat", "room": code,
                                                             "temperature": 1.0}).get_json()["id"] for _ in range(2)]
    nucleus = class_app.test_client().post("/api/jobs", json={"prompt": "The cat sat", "room": code, "temperature": 1.0,
                                                              "top_p": 0.5}).get_json()["id"]
    for job_id in [*whole, nucleus]:
        finish_with_steps(class_app, job_id, [(10, " on")], top)
    assert class_app.extensions["store"].get(nucleus).params.top_p == 0.5
    room = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()
    assert len(room["jobs"]) == 3 and room["tally"][0]["total"] == 2


def test_the_projector_counts_students_not_jobs(class_app):
    code = open_room(class_app, prompt="The cat sat")["code"]
    ada, bo = class_app.test_client(), class_app.test_client()
    for student in (ada, ada, bo):
        assert student.post("/api/jobs", json={"prompt": "x", "room": code}).status_code == 202
    room = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()
    assert (room["students"], len(room["jobs"])) == (2, 3)


def test_the_rooms_guess_switch_applies_to_join_forms_opened_before_it(class_app):
    """Guess mode lived only in the job page's address, taken from the form's checkbox as the page was loaded:
    a student whose join page was open when the teacher switched it on got every step shown."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, same_prompt=True)["code"]
    student = class_app.test_client()
    assert 'name="guess" checked' not in student.get(f"/r/{code}").get_data(as_text=True)
    class_app.test_client().patch(f"/api/rooms/{code}", json={"guess": True}, headers=TEACHER)
    submitted = student.post(f"/r/{code}", data={"prompt": "The cat sat", "steps": "3", "nickname": "Ada"})
    page = submitted.headers["Location"]
    job = student.get("/api/jobs/" + page.split("/")[-1].split("?")[0]).get_json()
    assert job["guess"] is True
    assert 'data-guess="1"' in student.get(page.split("?")[0]).get_data(as_text=True)  # from the job, not the URL


def test_a_guess_mode_room_scores_a_text_without_turning_it_into_a_game(class_app):
    """The room's guess mode was set on score jobs too: the page asked the student to guess their own text."""
    code = open_room(class_app, prompt="The cat sat", guess=True)["code"]
    student = class_app.test_client()
    job = student.post("/api/jobs", json={"score": "on the mat", "room": code}).get_json()
    assert student.get(job["url"]).get_json()["guess"] is False


def test_a_join_page_opened_while_guess_mode_was_on_follows_the_room_when_it_is_switched_off(class_app):
    """The join page pre-ticked the guess box from the room: switched off, the room still got guess jobs from pages
    opened before, each sending the box as it was drawn."""
    code = open_room(class_app, prompt="The cat sat", same_prompt=True, guess=True)["code"]
    student = class_app.test_client()
    page = student.get(f"/r/{code}").get_data(as_text=True)
    sent = {"guess": "on"} if re.search(r'<input[^>]*name="guess"[^>]*checked', page) else {}
    class_app.test_client().patch(f"/api/rooms/{code}", json={"guess": False}, headers=TEACHER)
    submitted = student.post(f"/r/{code}", data={"prompt": "The cat sat", "steps": "3", "nickname": "Ada"} | sent)
    job = student.get("/api/jobs/" + submitted.headers["Location"].split("/")[-1].split("?")[0]).get_json()
    assert job["guess"] is False
    assert 'id="guess-hint"' in page  # the page said the room plays it, instead of a box to tick


def test_the_new_room_form_keeps_its_switches_when_it_comes_back_with_an_error(class_app):
    teacher = class_app.test_client()
    teacher.post("/dashboard/sign-in", data={"token": TOKEN})

    def ticked(form: dict) -> set[str]:
        page = teacher.post("/rooms", data={"title": "Y9", "steps": "3", "temperature": "-1"} | form)
        assert page.status_code == 400
        return set(re.findall(r'<input[^>]*name="(\w+)"[^>]*checked', page.get_data(as_text=True)))

    assert ticked({"locked": "on", "guess": "on", "prompt": "x"}) == {"locked", "guess"}
    assert ticked({"same_prompt": "on", "prompt": "x"}) == {"same_prompt"}
    assert set(re.findall(r'<input[^>]*name="(\w+)"[^>]*checked', teacher.get("/rooms").get_data(as_text=True))) == {
        "same_prompt"}  # a new room's default


def test_a_teacher_opening_a_guessing_students_job_sees_its_steps_not_a_game_they_cannot_play(class_app):
    """Only the student who submitted a job can guess its steps: others were shown the game, every guess refused."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True, guess=True)["code"]
    student = class_app.test_client()
    job_id = student.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"]
    teacher = class_app.test_client()
    assert teacher.post("/dashboard/sign-in", data={"token": TOKEN}).status_code == 303
    for url in (f"/jobs/{job_id}", f"/jobs/{job_id}?guess=1"):
        assert 'data-guess="0"' in teacher.get(url).get_data(as_text=True)
    assert 'data-guess="1"' in student.get(f"/jobs/{job_id}").get_data(as_text=True)


def test_the_projector_shows_a_guessing_students_text_only_as_far_as_they_have_guessed(class_app):
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True, guess=True)["code"]
    student = class_app.test_client()
    job_id = student.post("/api/jobs", json={"prompt": "x", "room": code, "nickname": "Ada"}).get_json()["id"]
    top = [(10, " on", 0.5), (11, " the", 0.3), (12, " mat", 0.2)]
    finish_with_steps(class_app, job_id, [(10, " on"), (11, " the"), (12, " mat")], top)

    def shown() -> str:
        jobs = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()["jobs"]
        return jobs[0]["text"]

    assert shown() == "The cat sat"  # no step guessed: the projector must not give the answers away
    student.post(f"/api/jobs/{job_id}/guesses", json={"step": 1, "guess": "on"})
    assert shown() == "The cat sat on"
    for step in (2, 3):
        student.post(f"/api/jobs/{job_id}/guesses", json={"step": step, "guess": "mat"})
    assert shown() == "The cat sat on the mat"


def test_a_guessing_students_api_and_download_show_each_step_only_once_guessed(class_app):
    """The page hid the steps, but its own poll (and its Download JSON button) carried every step and the whole
    text: a student read the answers before guessing them."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True, guess=True)["code"]
    student = class_app.test_client()
    job_id = student.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"]
    top = [(10, " on", 0.5), (11, " the", 0.3), (12, " mat", 0.2)]
    finish_with_steps(class_app, job_id, [(10, " on"), (11, " the"), (12, " mat")], top)

    def seen(url=f"/api/jobs/{job_id}") -> dict:
        return student.get(url).get_json()

    for body in (seen(), seen(f"/jobs/{job_id}/download")):
        assert (body["steps"], body["text"], body["guessed"], body["steps_done"]) == ([], "The cat sat", 0, 3)
        assert body["params"]["seed"] is None  # with it, the same job submitted again gave every hidden token
        assert body["guess_next"] == {"step": 1, "context": "The cat sat", "candidates": [" mat", " on", " the"]}
    student.post(f"/api/jobs/{job_id}/guesses", json={"step": 1, "guess": "mat"})
    body = seen()
    assert [s["index"] for s in body["steps"]] == [1] and body["text"] == "The cat sat on"
    assert body["guess_next"]["step"] == 2 and body["guess_next"]["context"] == "The cat sat on"
    assert seen(f"/api/jobs/{job_id}?since=1")["steps"] == []
    skipped = student.post(f"/api/jobs/{job_id}/guesses", json={"step": 3, "guess": "mat"})
    assert skipped.status_code == 400 and skipped.get_json()["error"]["field"] == "step"  # steps go in order
    for step in (2, 3):
        student.post(f"/api/jobs/{job_id}/guesses", json={"step": step, "guess": "mat"})
    body = seen()
    assert [s["index"] for s in body["steps"]] == [1, 2, 3] and body["text"] == "The cat sat on the mat"
    assert (body["guessed"], body["guess_next"]) == (3, None)
    assert body["params"]["seed"] == class_app.extensions["store"].get(job_id).params.seed  # the game is over

    teacher = class_app.test_client()
    teacher.post("/dashboard/sign-in", data={"token": TOKEN})
    other = student.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"]
    finish_with_steps(class_app, other, [(10, " on")], top)
    body = teacher.get(f"/api/jobs/{other}").get_json()
    assert len(body["steps"]) == 1 and body["text"] == "The cat sat on" and body["guessed"] is None
    assert body["params"]["seed"] is not None


def test_a_guess_job_outside_a_room_hides_its_steps_from_every_reader(class_app):
    player, stranger = class_app.test_client(), class_app.test_client()
    job_id = player.post("/api/jobs", json={"prompt": "The cat sat", "guess": True}).get_json()["id"]
    finish_with_steps(class_app, job_id, [(10, " on")], [(10, " on", 0.5)])
    for reader in (player, stranger):
        body = reader.get(f"/api/jobs/{job_id}").get_json()
        assert (body["steps"], body["text"], body["guess_next"]["step"]) == ([], "The cat sat", 1)
    plain = player.post("/api/jobs", json={"prompt": "The cat sat"}).get_json()["id"]
    finish_with_steps(class_app, plain, [(10, " on")], [(10, " on", 0.5)])
    body = player.get(f"/api/jobs/{plain}").get_json()
    assert len(body["steps"]) == 1 and (body["guessed"], body["guess_next"]) == (None, None)


def test_the_tally_counts_a_guessing_students_steps_only_once_guessed(class_app):
    """The projector's tally listed every step of every guessing job: in a greedy room, all the answers."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True, guess=True)["code"]
    top = [(10, " on", 0.5), (11, " the", 0.3), (12, " mat", 0.2)]
    students = [class_app.test_client() for _ in range(3)]
    jobs = [s.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"] for s in students]
    for job_id in jobs:
        finish_with_steps(class_app, job_id, [(10, " on"), (11, " the")], top)
    for student, job_id in zip(students[:2], jobs):
        student.post(f"/api/jobs/{job_id}/guesses", json={"step": 1, "guess": "on"})
    tally = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()["tally"]
    assert [(e["step"], e["total"]) for e in tally] == [(1, 2)]


def test_the_projector_shows_only_the_steps_guessed_in_order(class_app):
    """Guesses were counted, not read as a prefix: a guess kept for step 2 alone showed step 1's token."""
    code = open_room(class_app, prompt="The cat sat", temperature=1.0, locked=True, guess=True)["code"]
    student = class_app.test_client()
    job_id = student.post("/api/jobs", json={"prompt": "x", "room": code}).get_json()["id"]
    top = [(10, " on", 0.5), (11, " the", 0.3)]
    finish_with_steps(class_app, job_id, [(10, " on"), (11, " the")], top)
    rooms = RoomStore(class_app.extensions["redis"], 600)
    rooms.record_guess(job_id, 2, {"step": 2, "guess": "the"}, 600)  # as kept before guesses had to go in order
    jobs = class_app.test_client().get(f"/api/rooms/{code}", headers=TEACHER).get_json()["jobs"]
    assert jobs[0]["text"] == "The cat sat"
    assert student.get(f"/api/jobs/{job_id}").get_json()["guessed"] == 0


def test_a_finished_score_job_carries_consistent_surprisal(class_app):
    student = class_app.test_client()
    job = student.post("/api/jobs", json={"score": " on down"}).get_json()
    top = [(10, " on", 0.5), (11, " down", 0.25)]
    assert student.get(job["url"]).get_json()["surprisal"] is None
    finish_with_steps(class_app, job["id"], [(10, " on"), (11, " down")], top)
    body = student.get(job["url"]).get_json()
    assert body["score"] == " on down"
    assert body["surprisal"] == {"bits": [1.0, 2.0], "total_bits": 3.0, "perplexity": 2 ** 1.5}


# -- pages -----------------------------------------------------------------------------------------

def test_a_cross_site_form_cannot_close_a_room_in_a_signed_in_teachers_name(class_app):
    """The rooms API is not CSRF-checked because its changes come as JSON (or with the token header), which a
    cross-site page cannot send without a preflight. Closing a room has no body: a plain form post did it."""
    code = open_room(class_app, title="Y9")["code"]
    teacher = class_app.test_client()
    assert teacher.post("/dashboard/sign-in", data={"token": TOKEN}).status_code == 303
    forged = teacher.post(f"/api/rooms/{code}/close", data={"x": "1"})  # what a form on another site sends
    assert forged.status_code == 400 and forged.get_json()["error"]["code"] == "invalid_body"
    assert teacher.get(f"/api/rooms/{code}").get_json()["closed"] is False
    assert teacher.post(f"/api/rooms/{code}/close", json={}).get_json()["closed"] is True  # the room page's call


def test_a_room_title_or_prompt_with_half_a_surrogate_pair_is_a_400_naming_it(class_app):
    for body, field in (({"title": "\ud800"}, "title"), ({"prompt": "The cat \udc00"}, "prompt")):
        response = class_app.test_client().post("/api/rooms", json=body, headers=TEACHER)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field


def test_a_class_behind_one_address_joins_from_the_link_without_the_address_cap(make_app):
    """Phones that open the join link (the QR code) and submit are each their own client, not one address: the
    page gives the session its client id, as the home page does. Before, every first job counted against the
    address's cap for cookieless clients (5), so the sixth student behind a school's NAT got 429."""
    app = make_app(dashboard_token=TOKEN, max_active_jobs_per_address=5)
    code = open_room(app, title="Y9", prompt="The cat sat")["code"]
    statuses = []
    for student in range(8):
        phone = app.test_client()  # a fresh phone, the same school address
        phone.get(f"/r/{code}")
        statuses.append(phone.post(f"/r/{code}", data={"prompt": "The cat sat", "nickname": f"s{student}"}).status_code)
    assert statuses == [303] * 8


def test_teacher_pages_join_form_qr_and_job_page_with_the_room_title(class_app):
    teacher = class_app.test_client()
    assert teacher.get("/rooms").status_code == 403
    teacher.post("/dashboard/sign-in", data={"token": TOKEN})
    assert teacher.get("/rooms").status_code == 200
    opened = teacher.post("/rooms", data={"title": "Year 9", "prompt": "The cat sat", "steps": "3", "top_k": "5",
                                          "temperature": "1", "same_prompt": "on", "locked": "on"})
    assert opened.status_code == 303
    code = opened.headers["Location"].rsplit("/", 1)[1]
    projector = teacher.get(f"/rooms/{code}").get_data(as_text=True)
    assert f'data-code="{code}"' in projector and f"/r/{code}" in projector and 'src="/static/room.js"' in projector
    assert 'class="wide projector"' in projector
    qr = teacher.get(f"/rooms/{code}/qr.svg")
    assert qr.mimetype == "image/svg+xml" and b"<svg" in qr.get_data() and b"<script" not in qr.get_data()

    student = class_app.test_client()
    form = student.get(f"/r/{code.lower()}").get_data(as_text=True)
    assert 'id="nickname"' in form and "Year 9" in form and "readonly" in form
    assert student.get(f"/rooms/{code}").status_code == 403
    submitted = student.post(f"/r/{code}", data={"nickname": "Ada <b>", "prompt": "changed", "steps": "9",
                                                 "guess": "on"})
    assert submitted.status_code == 303 and submitted.headers["Location"].endswith("?guess=1")
    page = student.get(submitted.headers["Location"]).get_data(as_text=True)
    assert 'id="room-name">Year 9<' in page and "Ada &lt;b&gt;" in page and 'data-guess="1"' in page
    assert student.get("/r/ZZZZZZ").status_code == 404
    teacher.post(f"/api/rooms/{code}/close", headers=TEACHER)
    assert student.get(f"/r/{code}").status_code == 410


def test_a_rooms_form_fields_keep_the_newlines_typed_not_the_browsers_crlf(class_app):
    teacher = class_app.test_client()
    teacher.post("/dashboard/sign-in", data={"token": TOKEN})
    opened = teacher.post("/rooms", data={"title": "Year 9", "prompt": "Dear class,\r\nThe cat sat", "steps": "3"})
    code = opened.headers["Location"].rsplit("/", 1)[1]
    assert teacher.get(f"/api/rooms/{code}", headers=TEACHER).get_json()["prompt"] == "Dear class,\nThe cat sat"
    student = class_app.test_client()
    submitted = student.post(f"/r/{code}", data={"nickname": "Ada", "prompt": "Hi\r\nthere", "steps": "2"})
    job = student.get("/api/jobs/" + submitted.headers["Location"].rsplit("/", 1)[1]).get_json()
    assert job["prompt"] == "Hi\nthere"


def test_a_projector_opened_at_localhost_warns_that_phones_cannot_follow_its_link(make_app):
    """The join link and QR code use the address the projector page was opened at: 127.0.0.1 on a phone is the
    phone itself, and under `make run`'s defaults the service listens on this computer only."""
    for web_host, advice in (("127.0.0.1", "WEB_HOST=0.0.0.0 make run"), ("0.0.0.0", "network address instead")):
        app = make_app(dashboard_token=TOKEN, web_host=web_host)
        code = open_room(app, prompt="The cat sat")["code"]
        local = app.test_client().get(f"/rooms/{code}", headers=TEACHER).get_data(as_text=True)
        assert 'id="loopback-warning"' in local and "Phones cannot open this link" in local and advice in local
        lan = app.test_client().get(f"/rooms/{code}", headers=TEACHER, base_url="http://192.168.1.20:8000")
        html = lan.get_data(as_text=True)
        assert "loopback-warning" not in html and "http://192.168.1.20:8000/r/" + code in html


def test_a_rooms_temperature_that_is_no_multiple_of_a_tenth_can_be_submitted(class_app):
    """The browser refused 0.75 in a field with step 0.1 ("the nearest valid values are 0.7 and 0.8")."""
    code = open_room(class_app, prompt="The cat sat", temperature=0.75)["code"]
    form = class_app.test_client().get(f"/r/{code}").get_data(as_text=True)
    temperature = re.search(r'<input id="temperature"[^>]*>', form).group(0)
    assert 'value="0.75"' in temperature and 'step="any"' in temperature


def test_a_student_types_the_room_code_on_the_home_page(class_app):
    """The projector says "or go to the site and type the code": the home page had nowhere to type it."""
    code = open_room(class_app, prompt="The cat sat")["code"]
    student = class_app.test_client()
    assert 'id="room-code"' in student.get("/").get_data(as_text=True)
    for typed in (code.lower(), f" {code[:3]} {code[3:]} ", f"{code[:3]}-{code[3:]}"):
        answer = student.get("/join", query_string={"code": typed})
        assert answer.status_code == 303 and answer.headers["Location"].endswith(f"/r/{code}"), typed
    assert student.get(f"/r/{code}").status_code == 200
    wrong = student.get("/join", query_string={"code": "hello"})
    assert wrong.status_code == 400 and "6 letters and digits" in wrong.get_data(as_text=True)


def test_a_made_up_host_cannot_make_the_qr_code_expensive(class_app):
    """The QR code encodes a link built from the request's Host: a 2,000-character one cost 140 ms a request
    (a 500 and a traceback past 2,400), on a route anyone who reads the projector can call."""
    code = open_room(class_app, prompt="The cat sat")["code"]
    client = class_app.test_client()
    assert client.get(f"/rooms/{code}/qr.svg").status_code == 200
    long_host = ".".join(["a" * 60] * 30)
    refused = client.get(f"/rooms/{code}/qr.svg", headers={"Host": long_host})
    assert refused.status_code == 400 and "open the projector page at this computer&#39;s address" in refused.get_data(
        as_text=True)


def test_the_index_offers_scoring_and_a_score_job_page_says_so(client):
    assert 'action="/score"' in client.get("/").get_data(as_text=True)
    response = client.post("/score", data={"score": "The cat sat on the mat"})
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Scoring <q" in page and 'id="score-view"' in page


def test_the_compare_page_uses_the_screen_width(client):
    ids = ",".join(client.post("/api/jobs", json={"prompt": "a"}).get_json()["id"] for _ in range(3))
    assert '<main id="content" tabindex="-1" class="wide">' in client.get(f"/compare?jobs={ids}").get_data(as_text=True)
