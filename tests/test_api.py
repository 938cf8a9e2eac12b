"""The JSON API on fakeredis: the validation table, one case per row, and the job lifecycle answers."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from contract.settings import PROJECT_ROOT
from tests.conftest import announce_worker


def post(client, body=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else json.dumps(body)
    return client.post("/api/jobs", data=data, content_type=content_type)


def test_create_answers_202_with_location_and_queues_the_job(client, app):
    response = post(client, {"prompt": "The cat sat"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and response.headers["Location"] == body["url"] == f"/api/jobs/{body['id']}"
    assert body["page"] == f"/jobs/{body['id']}"
    assert len(body["id"]) == 22  # 128 random bits, URL-safe
    assert app.sent_jobs == [(body["id"], app.sent_jobs[0][1])]
    job = client.get(body["url"]).get_json()
    assert job["params"] | {"seed": None} == {"steps": 5, "top_k": 10, "temperature": 0.0, "top_p": 1.0, "seed": None}
    assert isinstance(job["params"]["seed"], int)
    assert job["status"] == "queued" and job["queue_position"] == 1 and job["steps"] == [] and job["mine"] is True


BAD_REQUESTS = [
    ({}, "prompt", "required"),
    ({"prompt": "\ud800 hi"}, "prompt", "invalid"),  # half a surrogate pair: JSON allows it, UTF-8 cannot hold it
    ({"prompt": "hi", "nickname": "\udc00"}, "nickname", "invalid"),
    ({"score": "a \ud83d"}, "score", "invalid"),
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": "   \n\t"}, "prompt", "empty"),
    ({"prompt": "x" * 2001}, "prompt", "too_long"),
    ({"prompt": 42}, "prompt", "type"),
    ({"prompt": "a", "steps": "5"}, "steps", "type"),
    ({"prompt": "a", "steps": True}, "steps", "type"),
    ({"prompt": "a", "steps": 0}, "steps", "range"),
    ({"prompt": "a", "steps": 201}, "steps", "range"),
    ({"prompt": "a", "top_k": 1.5}, "top_k", "type"),
    ({"prompt": "a", "top_k": 0}, "top_k", "range"),
    ({"prompt": "a", "top_k": 51}, "top_k", "range"),
    ({"prompt": "a", "temperature": -0.1}, "temperature", "range"),
    ({"prompt": "a", "temperature": "hot"}, "temperature", "type"),
    ({"prompt": "a", "temperature": 1e-40}, "temperature", "range"),  # logits / T overflow: NaN probabilities
    ({"prompt": "a", "temperature": 0.009}, "temperature", "range"),
    ({"prompt": "a", "top_p": 0}, "top_p", "range"),
    ({"prompt": "a", "top_p": 1e-50}, "top_p", "range"),  # 0 in single precision: the nucleus held no token
    ({"prompt": "a", "top_p": 1.5}, "top_p", "range"),
    ({"prompt": "a", "seed": -1}, "seed", "range"),
    ({"prompt": "a", "seed": "x"}, "seed", "type"),
    ({"prompt": "a", "seed": 2**64}, "seed", "range"),
    ({"prompt": "a", "seed": 2**53}, "seed", "range"),  # a page's JSON.parse rounds it: its branch ran another seed
    ({"prompt": "a", "forced_ids": [1, -2]}, "forced_ids", "type"),
    ({"prompt": "a", "branch": {"parent": "x"}}, "branch", "type"),
    ({"prompt": "a", "branch": {"parent": "x", "step": 2}}, "branch", "type"),
    ({"prompt": "a", "branch": {"parent": "../" * 7 + "x", "step": 2}}, "branch", "type"),
    ({"prompt": "a", "branch": {"parent": "A" * 23, "step": 2}}, "branch", "type"),
    ({"prompt": "a", "stpes": 3}, "stpes", "unknown_field"),
]


@pytest.mark.parametrize("body, field, code", BAD_REQUESTS)
def test_bad_field_is_a_400_naming_it(client, app, body, field, code):
    response = post(client, body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["field"], error["code"]) == (field, code)
    assert error["message"]
    assert app.sent_jobs == []


def test_a_forced_id_outside_the_vocabulary_its_models_workers_announce_is_a_400(client, app, fake_redis):
    """Refused before the job is stored, naming the field, instead of a job the worker then fails."""
    announce_worker(fake_redis, app.config["SETTINGS"], vocab_size=4096)
    response = post(client, {"prompt": "a", "forced_ids": [7, 4096]})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["field"], error["code"]) == ("forced_ids", "range") and "4096" in error["message"]
    assert app.sent_jobs == []
    assert post(client, {"prompt": "a", "forced_ids": [4095]}).status_code == 202


def test_a_worker_that_announces_no_vocabulary_leaves_the_forced_ids_check_to_itself(client, fake_redis, app):
    """An older worker's heartbeat has no size: the job is queued, and the worker fails it if an id is out of range."""
    announce_worker(fake_redis, app.config["SETTINGS"])
    assert post(client, {"prompt": "a", "forced_ids": [10**6]}).status_code == 202


def test_a_top_p_that_single_precision_cannot_tell_from_1_is_1(client):
    """The device reads top_p in single precision: 0.99999999 is 1 there, so it is 1 everywhere (whole
    distribution), not a nucleus on one path and the whole distribution on the other."""
    job_id = post(client, {"prompt": "a", "temperature": 0.8, "top_p": 0.99999999}).get_json()["id"]
    assert client.get(f"/api/jobs/{job_id}").get_json()["params"]["top_p"] == 1.0
    job_id = post(client, {"prompt": "a", "temperature": 0.8, "top_p": 0.9999999}).get_json()["id"]
    assert client.get(f"/api/jobs/{job_id}").get_json()["params"]["top_p"] == 0.9999999


@pytest.mark.parametrize("raw", ['{"prompt": "a", "temperature": NaN}', '{"prompt": "a", "temperature": Infinity}'])
def test_temperature_must_be_finite(client, raw):
    response = post(client, raw=raw)
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "temperature"


@pytest.mark.parametrize("raw, content_type", [("not json", "application/json"), ("[1, 2]", "application/json"),
                                               ("prompt=a", "application/x-www-form-urlencoded")])
def test_body_must_be_a_json_object(client, raw, content_type):
    response = post(client, raw=raw, content_type=content_type)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in ("invalid_json", "invalid_body")


def test_oversized_body_is_413_json(client):
    response = post(client, raw=json.dumps({"prompt": "x" * 70_000}))
    assert response.status_code == 413 and "too large" in response.get_json()["error"]["message"]


def test_unknown_and_malformed_ids_are_404_json(client):
    for path in ("/api/jobs/AAAAAAAAAAAAAAAAAAAAAA", "/api/jobs/..%2F..", "/api/jobs/x"):
        response = client.get(path)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_since_must_be_a_step_index(client):
    job_id = post(client, {"prompt": "a"}).get_json()["id"]
    for since in ("-1", "\u00b2", "\u0663"):  # a superscript two and an Arabic-Indic three are digits to str.isdigit
        response = client.get(f"/api/jobs/{job_id}?since={since}")
        assert response.status_code == 400 and response.get_json()["error"]["field"] == "since"


def test_only_the_owner_can_cancel(app):
    owner, other = app.test_client(), app.test_client()
    job_id = post(owner, {"prompt": "a"}).get_json()["id"]
    assert other.delete(f"/api/jobs/{job_id}").status_code == 403
    assert other.get(f"/api/jobs/{job_id}").get_json()["mine"] is False
    response = owner.delete(f"/api/jobs/{job_id}")
    assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
    assert owner.get(f"/api/jobs/{job_id}").get_json()["status"] == "cancelled"


def test_model_without_a_worker_is_rejected(client):
    response = post(client, {"prompt": "a", "model": "meta-llama/Llama-3.2-1B"})
    error = response.get_json()["error"]
    assert response.status_code == 503 and error["field"] == "model" and error["code"] == "model_unavailable"
    assert "meta-llama/Llama-3.2-1B" in error["message"]


def test_security_headers_on_every_answer(client):
    for path in ("/", "/api/openapi.json"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "unsafe-inline" not in headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"


def test_redis_down_is_503_json_with_retry_after(app, monkeypatch):
    import redis

    def down(*args, **kwargs):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(app.extensions["redis"], "execute_command", down)  # every command fails
    response = app.test_client().get("/api/jobs/AAAAAAAAAAAAAAAAAAAAAA")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "unavailable"


@pytest.mark.parametrize("error, status, code", [
    ("ResponseError:ERR Error running script (call to f_0): wrong number of arguments", 500, "internal_error"),
    ("ResponseError:WRONGTYPE Operation against a key holding the wrong kind of value", 500, "internal_error"),
    ("ReadOnlyError:READONLY You can't write against a read only replica.", 503, "unavailable"),
    ("OutOfMemoryError:OOM command not allowed when used memory > 'maxmemory'.", 503, "unavailable"),
    ("TimeoutError:Timeout reading from socket", 503, "unavailable"),
])
def test_a_redis_bug_is_a_500_and_only_redis_being_unavailable_is_a_503(app, monkeypatch, caplog, error, status, code):
    """A script error or a wrong key type will not go away by retrying: never answer "try again shortly"."""
    import redis

    kind, message = error.split(":", 1)

    def fail(*args, **kwargs):
        raise getattr(redis.exceptions, kind)(message)

    monkeypatch.setattr(app.extensions["redis"], "execute_command", fail)
    response = app.test_client().get("/api/jobs/AAAAAAAAAAAAAAAAAAAAAA")
    assert (response.status_code, response.get_json()["error"]["code"]) == (status, code)
    assert ("Retry-After" in response.headers) == (status == 503)
    assert any(message in r.getMessage() or (r.exc_info and message in str(r.exc_info[1])) for r in caplog.records)


def test_web_and_contract_never_import_torch():
    code = "import sys, web, web.api, web.pages, contract.store; web.create_app; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_health_flags_a_worker_that_beats_but_makes_no_progress(app, fake_redis, monkeypatch):
    import time

    from contract.workers import WorkerInfo, WorkerRegistry

    now = time.time()
    for name, last_progress in (("busy@a", now - 1), ("stuck@b", now - 120)):
        WorkerRegistry(fake_redis, 5).announce(WorkerInfo(name=name, model="local/tiny", device="cpu", queue="q",
                                                          capacity=4, active=2, steps_total=10,
                                                          last_progress=last_progress))
    monkeypatch.setattr(app.extensions["celery_ping"], "names", lambda: [])  # no broker here; heartbeats are tested
    body = app.test_client().get("/api/health").get_json()
    assert body["stalled"] == ["stuck@b"] and body["status"] == "degraded"
    assert {w["name"]: w["stalled"] for w in body["workers"]} == {"busy@a": False, "stuck@b": True}


def test_the_openapi_document_describes_every_api_route(app, client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    described = {(path, method.upper()) for path, operations in paths.items() for method in operations}
    served = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert described == served, (sorted(served - described), sorted(described - served))


def test_the_openapi_job_schema_lists_every_field_the_api_returns(client):
    job_id = post(client, {"prompt": "The cat sat"}).get_json()["id"]
    job = client.get(f"/api/jobs/{job_id}").get_json()
    schema = client.get("/api/openapi.json").get_json()["components"]["schemas"]["Job"]["properties"]
    assert set(job) <= set(schema), sorted(set(job) - set(schema))


def test_the_openapi_request_and_step_schemas_admit_what_the_api_takes_and_gives(client):
    """The document required a prompt (a score job needs none), refused null model and branch and room codes
    typed with spaces or dashes, all of which the API takes, and its steps lacked `forced` and `computed_at`."""
    from contract.steprecord import pack_record, to_step, unpack_record

    schemas = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    request = schemas["JobRequest"]
    assert post(client, {"score": "The cat sat"}).status_code == 202 and "prompt" not in request.get("required", [])
    assert post(client, {"prompt": "a", "model": None, "branch": None}).status_code == 202
    assert request["properties"]["model"]["nullable"] and request["properties"]["branch"]["nullable"]
    assert request["properties"]["room"].get("maxLength", 99) > 6
    step = to_step(unpack_record(pack_record([(5, 0.5)], (5, 0.5, 1), 1.0, 2.0, forced=True)), 1, {5: "a"})
    assert step.get("forced") and set(step) | {"context"} <= set(schemas["Step"]["properties"])


def test_a_job_ended_without_its_worker_shows_the_text_its_steps_made(client, app):
    """Recovery can end a job (its worker died too often, or its student had cancelled it): no worker wrote its
    text, and the page's final text, the CLI and the room's list showed an empty one."""
    from contract.steprecord import pack_record
    from contract.store import StepWrite, context_edit

    store = app.extensions["store"]
    job_id = post(client, {"prompt": "The cat", "steps": 5}).get_json()["id"]
    untouched = post(client, {"prompt": "A dog", "steps": 5}).get_json()["id"]
    job = store.get(job_id)
    fence = store.claim(job_id, "w@test", job.queue, max_queue_age=600).fence
    for index, (token_id, token, keep, tail) in enumerate([(10, " sat", 0, "The cat"), (11, " on", 7, " sat")], 1):
        record = pack_record([(token_id, 0.9)], (token_id, 0.9, 1), 1.0, 1.0)
        store.append_steps([StepWrite(job_id, fence, index, record, context_edit(keep, tail))], job.model,
                           {token_id: token})
    assert store.hand_back(job_id, fence, "w@test", max_failures=1, counted=True, reason="its worker died").value \
        == "failed"
    store.fail_queued(untouched, "no worker")
    assert client.get(f"/api/jobs/{job_id}").get_json()["text"] == "The cat sat on"
    assert client.get(f"/api/jobs/{job_id}?since=2").get_json()["text"] == "The cat sat on"
    assert client.get(f"/api/jobs/{untouched}").get_json()["text"] == "A dog"


def test_guess_mode_is_a_job_field(client):
    assert post(client, {"prompt": "x", "guess": "yes"}).get_json()["error"]["field"] == "guess"
    guessing = post(client, {"prompt": "x", "guess": True}).get_json()
    assert client.get(guessing["url"]).get_json()["guess"] is True
    assert client.get(post(client, {"prompt": "x"}).get_json()["url"]).get_json()["guess"] is False
    scored = post(client, {"score": "The cat sat", "guess": True})  # its tokens are the student's own text
    assert scored.status_code == 400 and scored.get_json()["error"]["field"] == "guess"


@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_a_number_too_large_for_a_float_is_a_400_naming_its_field(client, field):
    """A 400-digit integer temperature raised OverflowError in float(): a 500."""
    response = client.post("/api/jobs", data='{"prompt": "a", "%s": %s}' % (field, "9" * 400),
                           content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["field"] == field
