"""Abuse and bad input: backpressure, rate limits, CSRF, expiry, token limits, untrusted text."""
from __future__ import annotations

import re
import time

import pytest
import requests

from contract.jobs import GenerationParams, JobRequest
from contract.store import JobStore


def post_json(client, body):
    return client.post("/api/jobs", json=body)


def test_full_queue_answers_503_with_retry_after(make_app):
    app = make_app(max_queued_jobs=2)
    answers = [post_json(app.test_client(), {"prompt": "a"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 503]
    assert answers[2].headers["Retry-After"] and answers[2].get_json()["error"]["code"] == "queue_full"


def test_one_client_cannot_hold_more_than_its_active_jobs(make_app):
    app = make_app(max_active_jobs_per_client=2)
    student, classmate = app.test_client(), app.test_client()
    codes = [post_json(student, {"prompt": "a"}).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert post_json(classmate, {"prompt": "a"}).status_code == 202  # same address, own allowance


def test_rate_limit_is_per_session_with_a_looser_cap_per_address(make_app):
    app = make_app(rate_limit="3 per minute", ip_rate_limit="5 per minute", max_active_jobs_per_client=100)
    alice, bob = app.test_client(), app.test_client()
    codes = [post_json(alice, {"prompt": "a"}).status_code for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    blocked = post_json(alice, {"prompt": "a"})
    assert blocked.get_json()["error"]["code"] == "too_many_requests" and blocked.headers["Retry-After"]
    assert [post_json(bob, {"prompt": "a"}).status_code for _ in range(3)] == [202, 202, 429]  # per-IP cap: 5


def test_a_sessions_submissions_share_one_budget_across_the_api_and_every_form(make_app):
    """Each submitting route had its own 60 a minute: a session that spent its budget on the API went on through
    the form, the score form, the comparison form and a room's join form."""
    app = make_app(rate_limit="3 per minute", max_active_jobs_per_client=100)
    student = app.test_client()
    student.get("/")
    assert [post_json(student, {"prompt": "a"}).status_code for _ in range(3)] == [202] * 3
    for url, form in (("/jobs", {"prompt": "The cat sat"}), ("/score", {"score": "The cat sat"}),
                      ("/compare", {"prompt": "The cat sat", "temperatures": "0, 1"})):
        assert student.post(url, data=form).status_code == 429, url


def test_only_a_refused_submission_carries_retry_after(make_app):
    """Every accepted job answered `Retry-After: 60` (the limiter's headers), telling a client to wait before
    its next poll or job."""
    app = make_app(rate_limit="1 per minute", max_active_jobs_per_client=100)
    client = app.test_client()
    accepted, refused = post_json(client, {"prompt": "a"}), post_json(client, {"prompt": "a"})
    assert accepted.status_code == 202 and "Retry-After" not in accepted.headers
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "1 per 1 minute" not in refused.get_json()["error"]["message"]  # said in words, not the limiter's syntax


def test_polling_a_job_skips_the_rate_limiter_and_submitting_does_not(app, monkeypatch):
    from web.security import limiter

    resolved = []
    resolve = limiter.limit_manager.resolve_limits
    monkeypatch.setattr(limiter.limit_manager, "resolve_limits",
                        lambda app, endpoint, *args: resolved.append(endpoint) or resolve(app, endpoint, *args))
    client = app.test_client()
    job = post_json(client, {"prompt": "a"}).get_json()
    assert client.get(job["url"] + "?since=0").status_code == 200
    assert resolved and set(resolved) == {"api.create"}


def test_form_posts_need_a_csrf_token_but_json_clients_do_not(make_app):
    app = make_app(csrf=True)
    browser = app.test_client()
    assert browser.post("/jobs", data={"prompt": "The cat sat"}).status_code == 400
    page = browser.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = browser.post("/jobs", data={"prompt": "The cat sat", "csrf_token": token, "steps": "4"})
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/jobs/")
    assert post_json(app.test_client(), {"prompt": "The cat sat"}).status_code == 202


def test_expired_jobs_answer_404_json(app, fake_redis):
    JobStore(fake_redis, ttl_seconds=2).create(
        "E" * 22, JobRequest("a", GenerationParams()), owner="o", model="m", queue="q", seed=1,
        max_queued=10, max_active=10, active_window=10)
    assert app.test_client().get("/api/jobs/" + "E" * 22).status_code == 200
    time.sleep(2.2)
    answer = app.test_client().get("/api/jobs/" + "E" * 22)
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


PROXY = "192.0.2.7"  # the address the web sees when a proxy forwards every request


def post_via_proxy(app, forwarded_for: str):
    """A new session (no cookie) posting through the proxy, which sends `forwarded_for` as X-Forwarded-For."""
    return app.test_client().post("/api/jobs", json={"prompt": "a"}, headers={"X-Forwarded-For": forwarded_for},
                                  environ_base={"REMOTE_ADDR": PROXY})


def test_the_session_cookie_is_secure_whenever_the_page_came_over_https(make_app):
    """Behind a TLS proxy the teacher's signed-in cookie went without Secure, so a plain-http request sent it too."""
    app = make_app(trusted_proxies=1)
    over_tls = app.test_client().get("/", headers={"X-Forwarded-Proto": "https"}, environ_base={"REMOTE_ADDR": PROXY})
    plain = app.test_client().get("/", environ_base={"REMOTE_ADDR": PROXY})
    direct = make_app().test_client().get("/", base_url="https://class.example")
    assert "; Secure" in over_tls.headers["Set-Cookie"] and "; Secure" in direct.headers["Set-Cookie"]
    assert "; Secure" not in plain.headers["Set-Cookie"]  # plain http on a LAN (make run) keeps working


def test_behind_one_proxy_the_per_ip_limit_keys_on_the_hop_the_proxy_added(make_app):
    app = make_app(trusted_proxies=1, ip_rate_limit="1 per minute")
    assert post_via_proxy(app, "10.0.0.1").status_code == 202
    assert post_via_proxy(app, "10.0.0.2").status_code == 202  # another student behind the proxy: own budget
    assert post_via_proxy(app, "10.0.0.1").status_code == 429  # same student, new cookie: same address
    # the student forges a first hop; the proxy appends the address it really saw, and only that one counts
    assert post_via_proxy(app, "6.6.6.6, 10.0.0.1").status_code == 429


def test_without_a_trusted_proxy_a_forged_forwarded_for_cannot_dodge_the_per_ip_limit(make_app):
    app = make_app(trusted_proxies=0, ip_rate_limit="2 per minute")
    codes = [post_via_proxy(app, f"10.0.1.{i}").status_code for i in range(3)]
    assert codes == [202, 202, 429]  # every request keyed on the real peer address, whatever the header says

@pytest.mark.integration
@pytest.mark.parametrize("prompt", [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "Tom & Jerry \u202eevil\u202c \u2066isolate\u2069 \"quotes\" 'single'",
])
def test_untrusted_text_comes_back_exactly_as_sent(live_stack, prompt):
    job = live_stack.wait_done(live_stack.submit(prompt=prompt, steps=2, top_k=3)["id"])
    assert job["prompt"] == prompt
    assert job["text"].startswith(prompt)
    page = requests.get(f"{live_stack.url}/jobs/{job['id']}", timeout=10)
    assert prompt not in page.text  # the page's HTML carries it escaped, never raw
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


@pytest.mark.integration
def test_prompt_too_long_in_tokens_fails_with_a_clear_reason(live_stack):
    job = live_stack.wait_done(live_stack.submit(prompt="zq xv " * 330, steps=5)["id"])
    assert job["status"] == "failed"
    assert "tokens long" in job["error"] and job["steps"] == []


TEACHER_TOKEN = "teacher-sesame"
TOKEN_HEADER = "X-Dashboard-Token"


def teacher_app(make_app):
    """The app with the dashboard on and the default limit on failed sign-ins (5 per minute per address)."""
    app = make_app(dashboard_token=TEACHER_TOKEN)
    assert app.config["SETTINGS"].dashboard_signin_limit == "5 per minute"
    return app


def test_dashboard_token_guessing_through_the_form_is_limited_per_address(make_app):
    app = teacher_app(make_app)
    guesser = app.test_client()
    codes = [guesser.post("/dashboard/sign-in", data={"token": f"guess-{i}"}).status_code for i in range(6)]
    assert codes == [403] * 5 + [429]
    blocked = guesser.post("/dashboard/sign-in", data={"token": TEACHER_TOKEN})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0, "even the right token waits"
    assert guesser.get("/dashboard/data", headers={TOKEN_HEADER: "guess-7"}).status_code == 429
    teacher = app.test_client()
    teacher.environ_base["REMOTE_ADDR"] = "10.0.0.7"  # another address: its own allowance
    assert teacher.post("/dashboard/sign-in", data={"token": TEACHER_TOKEN}).status_code == 303
    assert teacher.get("/dashboard/data").status_code == 200


def test_a_teacher_signed_in_keeps_the_dashboard_while_a_student_on_the_same_address_guesses(make_app):
    """The limit counts and stops guesses; a browser already signed in guesses nothing. Before, five wrong tokens a
    minute from one student locked every dashboard request behind the school's address, the teacher's too."""
    app = teacher_app(make_app)
    teacher, student = app.test_client(), app.test_client()  # one school address
    assert teacher.post("/dashboard/sign-in", data={"token": TEACHER_TOKEN}).status_code == 303
    codes = [student.post("/dashboard/sign-in", data={"token": f"guess-{i}"}).status_code for i in range(6)]
    assert codes == [403] * 5 + [429]
    assert teacher.get("/dashboard/data").status_code == 200
    assert teacher.get("/dashboard").status_code == 200


def test_token_guesses_through_the_rooms_api_count_with_the_dashboards(make_app):
    """Teacher routes outside the dashboard (rooms, their pages) answer a wrong token with 403 too: those answers
    count against the same per-address allowance. Before, the rooms API took guesses without limit, and a right
    guess showed (404 for an unknown room instead of 403)."""
    app = teacher_app(make_app)
    guesser = app.test_client()
    codes = [guesser.get("/api/rooms/ABCDEF", headers={TOKEN_HEADER: f"guess-{i}"}).status_code for i in range(3)]
    codes += [guesser.get("/rooms/ABCDEF", headers={TOKEN_HEADER: f"guess-{i}"}).status_code for i in range(3, 5)]
    codes.append(guesser.post("/api/rooms", json={}, headers={TOKEN_HEADER: "guess-5"}).status_code)
    assert codes == [403] * 5 + [429]
    assert guesser.post("/dashboard/sign-in", data={"token": TEACHER_TOKEN}).status_code == 429  # one allowance
    teacher = app.test_client()
    teacher.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    assert teacher.get("/api/rooms/ABCDEF", headers={TOKEN_HEADER: TEACHER_TOKEN}).status_code == 404


def test_dashboard_header_guesses_are_limited_but_the_right_header_never_is(make_app):
    app = teacher_app(make_app)
    script = app.test_client()
    assert all(script.get("/dashboard/data", headers={TOKEN_HEADER: TEACHER_TOKEN}).status_code == 200
               for _ in range(12)), "a script polling with the header is not limited"
    guesser = app.test_client()
    guesser.environ_base["REMOTE_ADDR"] = "10.0.0.8"
    codes = [guesser.get("/dashboard/data", headers={TOKEN_HEADER: f"guess-{i}"}).status_code for i in range(6)]
    assert codes == [403] * 5 + [429]
    assert guesser.get("/dashboard/data", headers={"Accept": "application/json"}).get_json()["error"]["code"] == \
        "too_many_requests"


def test_dropping_the_cookie_never_raises_one_addresss_unfinished_jobs_above_its_cap(make_app):
    app = make_app(max_active_jobs_per_client=5, max_active_jobs_per_address=5, max_steps=200)
    script = app.test_client(use_cookies=False)  # a new session on every request
    codes = [post_json(script, {"prompt": "long job", "steps": 200}).status_code for _ in range(30)]
    assert codes.count(202) == 5 and codes[5:] == [429] * 25
    browser = app.test_client()  # a browser behind the same address keeps its cookie: its own allowance
    browser.get("/")  # the form page gives the session its client id
    assert [post_json(browser, {"prompt": "a"}).status_code for _ in range(5)] == [202] * 5


@pytest.mark.integration
def test_dashboard_sign_in_keeps_the_token_out_of_every_url_and_the_access_log(live_stack):
    token = live_stack.settings.dashboard_token
    teacher = requests.Session()
    form = teacher.get(f"{live_stack.url}/dashboard", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    answer = teacher.post(f"{live_stack.url}/dashboard/sign-in", data={"token": token, "csrf_token": csrf},
                          timeout=10)
    assert answer.status_code == 200 and answer.url == f"{live_stack.url}/dashboard"
    assert 'src="/static/dashboard.js"' in answer.text
    assert not any(token in r.url or token in r.headers.get("Location", "") for r in [*answer.history, answer])
    assert teacher.get(f"{live_stack.url}/dashboard/data", timeout=10).status_code == 200
    api = requests.get(f"{live_stack.url}/dashboard/data", headers={TOKEN_HEADER: token}, timeout=10)
    assert api.status_code == 200 and "workers" in api.json()
    log = (live_stack.log_dir / "web.log").read_text()
    assert "POST /dashboard/sign-in" in log and "GET /dashboard/data" in log, "the access log is on"
    assert token not in log
