"""The HTML pages on fakeredis: form, job page, compare, download, Plotly.js, teacher dashboard, CSP hygiene."""
from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from contract import keys
from contract.workers import WorkerInfo, WorkerRegistry
from contract.jobs import TERMINAL, JobStatus
from contract.tasks import queue_for_model

WEB = Path(__file__).resolve().parent.parent / "web"
XSS = "<img src=x onerror=alert(1)>"


def submit_form(client, **fields):
    return client.post("/jobs", data={"prompt": "The cat sat", **fields})


def job_id_of(response) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"].rsplit("/", 1)[1]


def test_index_labels_every_field_and_offers_the_comparison(client):
    html = client.get("/").get_data(as_text=True)
    for field in ("prompt", "steps", "top_k", "temperature", "top_p", "seed", "model", "temperatures"):
        assert f'<label for="{field}"' in html and f'id="{field}"' in html
    assert 'formaction="/compare"' in html and 'name="csrf_token"' in html
    assert '<option value="local/tiny"' in html


def test_form_creates_a_job_and_its_page_loads_the_live_script(client, app):
    job_id = job_id_of(submit_form(client, steps="3", top_k="4", temperature="0.5", top_p="0.9", seed="7"))
    job = client.get(f"/api/jobs/{job_id}").get_json()
    assert job["params"] == {"steps": 3, "top_k": 4, "temperature": 0.5, "top_p": 0.9, "seed": 7}
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'data-job-id="{job_id}"' in html
    assert 'type="module" src="/static/job.js"' in html
    assert 'data-plotly-src="/vendor/plotly.min.js"' in html
    assert f'href="/jobs/{job_id}/download"' in html and f"/jobs/{job_id}</" not in html  # permalink is a value


def test_newlines_typed_in_a_form_reach_the_model_as_typed_not_as_the_browsers_crlf(client):
    """Browsers send a text box's newlines as CRLF: the model must see the "\\n" the student typed."""
    typed = job_id_of(submit_form(client, prompt="Dear class,\r\nThe cat\rsat"))
    assert client.get(f"/api/jobs/{typed}").get_json()["prompt"] == "Dear class,\nThe cat\nsat"
    scored = client.post("/score", data={"score": "One\r\ntwo", "score_prompt": "Lines:\r\n"})
    job = client.get(f"/api/jobs/{job_id_of(scored)}").get_json()
    assert (job["score"], job["prompt"]) == ("One\ntwo", "Lines:\n")


def test_form_errors_name_the_field(client, app):
    response = submit_form(client, steps="many")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "steps must be a number" in html and 'id="steps"' in html and 'aria-invalid="true"' in html
    assert app.sent_jobs == []


def test_prompt_markup_is_escaped_on_the_job_page(client):
    job_id = job_id_of(submit_form(client, prompt=XSS))
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html


def test_branch_job_page_shows_the_breadcrumb(client):
    parent = client.post("/api/jobs", json={"prompt": "The cat sat", "steps": 4}).get_json()["id"]
    child = client.post("/api/jobs", json={"prompt": "The cat sat", "steps": 2, "forced_ids": [5, 9],
                                           "branch": {"parent": parent, "step": 2}}).get_json()["id"]
    html = client.get(f"/jobs/{child}").get_data(as_text=True)
    assert "Branched from" in html and f'href="/jobs/{parent}#step-2"' in html and "at step 2" in html
    assert "Branched from" not in client.get(f"/jobs/{parent}").get_data(as_text=True)


def test_compare_runs_one_job_per_temperature_with_one_seed(client, app):
    response = client.post("/compare", data={"prompt": "The cat sat", "steps": "3", "temperatures": "0, 0.7 1.5"})
    assert response.status_code == 303
    ids = parse_qs(urlparse(response.headers["Location"]).query)["jobs"][0].split(",")
    jobs = [client.get(f"/api/jobs/{i}").get_json() for i in ids]
    assert [j["params"]["temperature"] for j in jobs] == [0.0, 0.7, 1.5]
    assert len({j["params"]["seed"] for j in jobs}) == 1 and all(j["params"]["steps"] == 3 for j in jobs)
    assert len(app.sent_jobs) == 3
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert html.count('<th scope="col" data-job-id=') == 3 and "Temperature 1.5" in html


def test_a_comparison_costs_one_submission_per_job_and_leaves_none_behind_when_refused(make_app):
    """POST /compare counted one submission for up to 4 jobs, and a refusal part-way left the jobs already made
    running, unseen."""
    app = make_app(rate_limit="4 per minute", max_active_jobs_per_client=100)
    client = app.test_client()
    client.get("/")  # a session, as a browser has from the form page (cookieless clients are capped per address)
    body = {"prompt": "The cat sat", "steps": "3"}
    assert client.post("/compare", data=body | {"temperatures": "0, 0.5, 1, 1.5"}).status_code == 303
    assert client.post("/compare", data=body | {"temperatures": "0, 1"}).status_code == 429  # 4 + 2 > 4 a minute
    busy = make_app(max_active_jobs_per_client=5).test_client()
    busy.get("/")
    assert busy.post("/compare", data=body | {"temperatures": "0, 0.5, 1, 1.5"}).status_code == 303
    refused = busy.post("/compare", data=body | {"temperatures": "0, 1"})  # the 6th job is over the cap
    assert refused.status_code == 429
    assert busy.post("/api/jobs", json={"prompt": "x"}).status_code == 202  # the 5th was taken back: room for it


@pytest.mark.parametrize("temperatures, message", [
    ("0", "give 2 to 4 different temperatures"),
    ("0, 0", "give 2 to 4 different temperatures"),
    ("0, 1, 2, 3, 4", "give 2 to 4 different temperatures"),
    ("cold, hot", "numbers separated by commas"),
    ("0, 11", "between 0.01 and 10"),
    ("0, 0.001", "between 0.01 and 10"),  # logits / T would overflow
])
def test_compare_rejects_bad_temperatures_before_queuing_anything(client, app, temperatures, message):
    response = client.post("/compare", data={"prompt": "The cat sat", "temperatures": temperatures})
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert app.sent_jobs == []


@pytest.mark.parametrize("query, status", [("", 400), ("jobs=not-an-id", 400), ("jobs=" + "a" * 22, 404)])
def test_compare_page_rejects_bad_or_unknown_ids(client, query, status):
    assert client.get(f"/compare?{query}").status_code == status


def test_download_is_the_whole_job_as_a_json_attachment(client):
    job_id = job_id_of(submit_form(client))
    response = client.get(f"/jobs/{job_id}/download")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == f'attachment; filename="job-{job_id}.json"'
    body = response.get_json()
    assert body["id"] == job_id and body["prompt"] == "The cat sat" and "owner" not in body
    assert client.get("/jobs/" + "b" * 22 + "/download").status_code == 404


def test_plotly_is_served_from_the_installed_package(client):
    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert "max-age=86400" in response.headers["Cache-Control"]
    assert response.get_data()[:40].startswith(b"/**\n* plotly.js v")


def test_unknown_job_page_is_a_404_page(client):
    response = client.get("/jobs/" + "c" * 22)
    assert response.status_code == 404 and "no such job" in response.get_data(as_text=True)


# -- teacher dashboard -------------------------------------------------------------------------

TOKEN = "sesame-token"


@pytest.fixture
def teacher_app(make_app):
    """The app with DASHBOARD_TOKEN set."""
    return make_app(dashboard_token=TOKEN)


def announce_worker(r, name="w1@host", active=2):
    info = WorkerInfo(name=name, model="local/tiny", device="cpu", queue=queue_for_model("local/tiny"), capacity=16,
                      active=active, steps_total=40, last_progress=time.time())
    WorkerRegistry(r, 5).announce(info)


def test_dashboard_is_off_without_a_token(client):
    assert client.get("/dashboard").status_code == 404
    assert client.get("/dashboard/data").status_code == 404


def test_dashboard_signs_in_through_a_form_post_then_keeps_the_session(teacher_app):
    teacher = teacher_app.test_client()
    form = teacher.get("/dashboard")
    assert form.status_code == 200 and 'action="/dashboard/sign-in"' in form.get_data(as_text=True)
    assert 'method="post"' in form.get_data(as_text=True) and "dashboard.js" not in form.get_data(as_text=True)
    assert teacher.get("/dashboard/data").status_code == 403
    wrong = teacher.post("/dashboard/sign-in", data={"token": "wrong"})
    assert wrong.status_code == 403 and "not the dashboard token" in wrong.get_data(as_text=True)
    signed_in = teacher.post("/dashboard/sign-in", data={"token": TOKEN})
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/dashboard"
    page = teacher.get("/dashboard")
    assert page.status_code == 200 and 'src="/static/dashboard.js"' in page.get_data(as_text=True)
    assert teacher.get("/dashboard/data").status_code == 200
    assert teacher_app.test_client().get("/dashboard/data").status_code == 403  # another browser
    assert teacher_app.test_client().get("/dashboard/data", headers={"X-Dashboard-Token": TOKEN}).status_code == 200
    assert teacher.post("/dashboard/sign-out").status_code == 303
    assert teacher.get("/dashboard/data").status_code == 403


def test_a_token_in_the_url_never_signs_in_and_leaves_the_address_bar(teacher_app):
    teacher = teacher_app.test_client()
    answer = teacher.get(f"/dashboard?token={TOKEN}")
    assert answer.status_code == 303 and answer.headers["Location"] == "/dashboard"
    assert teacher.get("/dashboard/data").status_code == 403


def test_dashboard_data_counts_queue_workers_rate_and_recent_jobs_without_owners(teacher_app, fake_redis):
    student = teacher_app.test_client()
    waiting = student.post("/api/jobs", json={"prompt": "still waiting"}).get_json()["id"]
    finished = student.post("/api/jobs", json={"prompt": "The cat sat", "steps": 1}).get_json()["id"]
    owner = fake_redis.hget(keys.job_key(finished), "owner").decode()
    store = teacher_app.extensions["store"]
    claim = store.claim(finished, "w1@host", queue_for_model("local/tiny"), max_queue_age=60)
    store.finish(finished, claim.fence, "w1@host", JobStatus.DONE, finish_reason="length", text="The cat sat on")
    announce_worker(fake_redis)
    fake_redis.set(keys.step_rate_key(int(time.time()) - 5), 30)

    response = teacher_app.test_client().get("/dashboard/data", headers={"X-Dashboard-Token": TOKEN})
    data = response.get_json()
    assert data["queued"] == 1 and data["running"] == 2
    assert [(q["queue"], q["waiting"]) for q in data["queues"]] == [(queue_for_model("local/tiny"), 1)]
    assert data["recent_outcomes"] == {"done": 1}
    assert [(w["name"], w["model"], w["device"]) for w in data["workers"]] == [("w1@host", "local/tiny", "cpu")]
    assert data["steps_last_minute"] == 30 and data["steps_per_second"] == 0.5
    assert [(j["id"], j["status"], j["prompt"]) for j in data["recent"]] == [(finished, "done", "The cat sat")]
    assert waiting not in [j["id"] for j in data["recent"]]
    text = response.get_data(as_text=True)
    assert owner not in text and '"owner"' not in text


def test_the_scripts_take_the_terminal_statuses_from_the_page(client):
    """dom.js reads contract.jobs.TERMINAL from <body data-terminal>; no script spells a status list itself."""
    job_id = job_id_of(submit_form(client))
    for path in ("/", f"/jobs/{job_id}", f"/compare?jobs={job_id}"):
        carried = re.search(r'<body data-terminal="([^"]*)"', client.get(path).get_data(as_text=True))
        assert carried and set(carried.group(1).split()) == {status.value for status in TERMINAL}, path
    assert 'TERMINAL = document.body.dataset.terminal.split(" ")' in (WEB / "static" / "dom.js").read_text()
    statuses = "|".join(status.value for status in JobStatus)
    for script in (WEB / "static").glob("*.js"):
        assert not re.search(rf'\[\s*"({statuses})"', script.read_text()), script.name


# -- CSP hygiene: nothing inline, model text never parsed as HTML --------------------------------

def test_templates_have_no_inline_scripts_styles_or_handlers():
    for template in (WEB / "templates").glob("*.html"):
        html = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), template.name
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), template.name


def test_scripts_never_parse_strings_as_html():
    for script in (WEB / "static").glob("*.js"):
        code = script.read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", code), script.name


def test_pages_carry_the_strict_content_security_policy(client):
    csp = client.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp


def test_the_dashboards_recent_jobs_say_when_they_started(teacher_app):
    """The page's "Took" column needs started_at: the data left it out, so the column was always empty."""
    store = teacher_app.extensions["store"]
    job_id = teacher_app.test_client().post("/api/jobs", json={"prompt": "x"}).get_json()["id"]
    job = store.get(job_id)
    fence = store.claim(job_id, "w@test", job.queue, max_queue_age=600).fence
    store.finish(job_id, fence, "w@test", JobStatus.DONE, text="x")
    recent = teacher_app.test_client().get("/dashboard/data", headers={"X-Dashboard-Token": TOKEN}).get_json()["recent"]
    assert recent[0]["started_at"] == store.get(job_id).started_at is not None


@pytest.mark.parametrize("field, raw", [("steps", "5_0"), ("steps", "\u0663"), ("temperature", "1_0"),
                                        ("top_k", "1e1"), ("temperature", "\u0661.5")])
def test_a_form_number_is_plain_ascii_digits(make_app, field, raw):
    """Python's int() and float() read "5_0" as 50 and Arabic-Indic digits as numbers: the form took them."""
    page = make_app().test_client().post("/jobs", data={"prompt": "The cat sat", field: raw})
    assert page.status_code == 400 and f"{field} must be a number" in page.get_data(as_text=True)


def test_compared_temperatures_are_plain_ascii_numbers(make_app):
    page = make_app().test_client().post("/compare", data={"prompt": "The cat sat", "temperatures": "0, 1_0"})
    assert page.status_code == 400 and "temperatures must be numbers" in page.get_data(as_text=True)
