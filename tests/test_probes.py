"""/healthz, /readyz and /api/health's Celery ping: probes read heartbeats, never broadcast; health pings rarely."""
from __future__ import annotations

import time

import pytest
import redis
import requests

from contract import keys
from stack.redis_server import free_port
from tests.test_metrics import MODEL, announce, scrape


@pytest.fixture
def pings(app, monkeypatch) -> list[float]:
    """Every Celery ping broadcast the app sends (none reaches a broker here)."""
    sent: list[float] = []

    def ping(timeout: float) -> list[dict]:
        sent.append(timeout)
        return [{"w1@host": {"ok": "pong"}}]

    monkeypatch.setattr(app.extensions["celery"].control, "ping", ping)
    return sent


def test_healthz_answers_while_redis_is_down(make_app):
    app = make_app(redis_client=redis.Redis(port=free_port(), socket_connect_timeout=0.5))
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "redis_unreachable"


def test_readyz_is_not_ready_while_the_default_model_failed_to_load(make_app, fake_redis):
    """Scaled from zero, readiness skipped the worker check: it said ready while every submission answered 503
    model_unavailable (the model's worker could not load it)."""
    from contract.workers import ModelState, WorkerRegistry

    app = make_app(accept_jobs_without_workers=True)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    WorkerRegistry(fake_redis, 5).report_model(MODEL, ModelState.FAILED, "w@test", "OSError: no config.json")
    assert client.post("/api/jobs", json={"prompt": "x"}).status_code == 503
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "model_failed"
    assert "OSError: no config.json" in answer.get_json()["error"]["message"]


def test_metrics_still_answer_while_redis_is_down_and_say_so(make_app):
    """A scrape during an outage was a 503 HTML page: the target looked down, and the latency histogram that
    shows the outage's 503s was lost exactly then."""
    down = make_app(redis_client=redis.Redis(port=free_port(), socket_connect_timeout=0.5)).test_client()
    down.get("/api/jobs/" + "x" * 22)  # a request answered while Redis is away
    text, samples = scrape(down)
    assert ("genq_redis_up", {}, 0.0) in samples and "genq_http_request_duration_seconds_bucket" in text


@pytest.fixture
def strict_client(make_app):
    """A client of an app that needs a live worker (no scale-from-zero)."""
    return make_app(accept_jobs_without_workers=False).test_client()


def test_readyz_needs_a_live_worker_serving_the_default_model(strict_client, fake_redis):
    client = strict_client
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "no_worker"
    assert MODEL in answer.get_json()["error"]["message"]
    announce(fake_redis, "g1@gpu", model="meta-llama/Llama-3.2-1B")
    assert client.get("/readyz").status_code == 503, "a worker of another model is not enough"
    announce(fake_redis, "w1@cpu")
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() | {"workers": None} == {"status": "ready", "redis": "ok", "default_model": MODEL,
                                                     "workers": None}
    assert ready.get_json()["workers"] == ["w1@cpu"]


def test_readyz_ignores_a_worker_whose_heartbeat_stopped(strict_client, fake_redis):
    client = strict_client
    announce(fake_redis, "w1@cpu")
    fake_redis.zadd(keys.workers_key(), {"w1@cpu": time.time() - 600})
    assert client.get("/readyz").status_code == 503


def test_probes_never_broadcast_to_celery(client, fake_redis, pings):
    announce(fake_redis, "w1@cpu")
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
    assert pings == []


def test_api_health_broadcasts_a_ping_at_most_once_per_cache_period(app, client, pings, monkeypatch):
    """Waiting pages poll /api/health every 3 s; each broadcast holds a web thread for its whole timeout."""
    for _ in range(5):
        body = client.get("/api/health").get_json()
        assert body["ping"] == ["w1@host"]
    assert len(pings) == 1
    cache = app.extensions["celery_ping"]
    monkeypatch.setattr(cache, "_at", cache._at - cache.max_age)  # the cached answer is now too old
    client.get("/api/health")
    assert len(pings) == 2


@pytest.mark.integration
def test_live_probes_under_gunicorn(live_stack):
    assert requests.get(f"{live_stack.url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{live_stack.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert any(name.startswith("w1@") for name in ready.json()["workers"])
