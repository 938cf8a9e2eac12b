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
    JobStore(fake_redis, ttl_seconds=1).create(
        "E" * 22, JobRequest("a", GenerationParams()), owner="o", model="m", queue="q", seed=1,
        max_queued=10, max_active=10, active_window=10)
    assert app.test_client().get("/api/jobs/" + "E" * 22).status_code == 200
    time.sleep(1.2)
    answer = app.test_client().get("/api/jobs/" + "E" * 22)
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


PROXY = "192.0.2.7"  # the address the web sees when a proxy forwards every request


def post_via_proxy(app, forwarded_for: str):
    """A new session (no cookie) posting through the proxy, which sends `forwarded_for` as X-Forwarded-For."""
    return app.test_client().post("/api/jobs", json={"prompt": "a"}, headers={"X-Forwarded-For": forwarded_for},
                                  environ_base={"REMOTE_ADDR": PROXY})


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
