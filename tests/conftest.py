"""Fixtures: settings, fake and real Redis, the Flask app, the tiny model, and a live stack.

The live stack is real: a redis-server process, Celery worker processes holding the tiny
model, and the web under gunicorn on a loopback port. Tests that use it are marked
`integration` here, so `make test-fast` (unit tests only) never starts a process. torch is
imported only by the fixtures that need a model.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import fakeredis
import pytest

from contract.settings import Settings
from stack.harness import LiveStack
from stack.redis_server import RedisServer

LIVE_FIXTURES = {"redis_server", "live_settings", "live_stack", "paced_stack"}
PACE_SECONDS = 0.05  # the paced worker's pause per step: a 200-step job takes at least 10 s on any machine


def pytest_collection_modifyitems(items) -> None:
    """Mark every test that starts real processes `integration` (and so out of `make test-fast`)."""
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + byte-level BPE tokenizer in Hugging Face format."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    """The tiny model loaded through the same path as real models."""
    from engine.loading import load_engine

    return load_engine(str(tiny_model_dir), "cpu")


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for unit tests (no real Redis)."""
    return Settings(redis_url="redis://fake", data_dir=str(tmp_path), model_name="/models/tiny",
                    secret_key="test-secret", rate_limit="100000 per minute", ip_rate_limit="100000 per minute",
                    accept_jobs_without_workers=True)  # unit tests of the API need no worker; see test_availability


@pytest.fixture
def fake_redis():
    """An in-process fake Redis with Lua support (for fast store and web unit tests only)."""
    return fakeredis.FakeRedis()


@pytest.fixture
def make_app(settings, fake_redis, monkeypatch):
    """`make_app(csrf=False, redis_client=None, **changes)`: the Flask app with some settings changed.

    It talks to fakeredis unless given another client. Jobs sent to the queue are recorded in
    `app.sent_jobs`, not delivered. Rate limits count in memory (the limiter is one object per
    process: every app here enables it).
    """
    from web import create_app

    sent: list[tuple[str, str]] = []
    monkeypatch.setattr("web.jobs.send_job", lambda job_id, queue: sent.append((job_id, queue)))

    def make(csrf: bool = False, redis_client=None, **changes):
        client = fake_redis if redis_client is None else redis_client
        app = create_app({"TESTING": True, "SETTINGS": with_settings(settings, **changes), "REDIS_CLIENT": client,
                          "WTF_CSRF_ENABLED": csrf, "RATELIMIT_STORAGE_URI": "memory://"})
        app.sent_jobs = sent
        return app

    return make


@pytest.fixture
def app(make_app):
    """The Flask app with the unit-test settings."""
    return make_app()


def announce_worker(redis, settings: Settings, model: str | None = None, name: str = "w@test", **fields):
    """Write one worker heartbeat, as a live worker serving `model` (default: the settings' model) would."""
    from contract.tasks import model_id, queue_for_model
    from contract.workers import WorkerInfo, WorkerRegistry

    model = model or model_id(settings.model_name)
    info = WorkerInfo(name=name, model=model, device=fields.pop("device", "cpu"), queue=queue_for_model(model),
                      capacity=fields.pop("capacity", 4), **fields)
    WorkerRegistry(redis, settings.heartbeat_seconds).announce(info)


@pytest.fixture
def client(app):
    """A Flask test client."""
    return app.test_client()


@pytest.fixture(params=["fake", "real"])
def r(request):
    """fakeredis for speed, and the real server for truth, on the test module's REDIS_DB (away from db 0)."""
    if request.param == "fake":
        yield fakeredis.FakeRedis()
        return
    import redis as redis_py

    server = request.getfixturevalue("redis_server")
    client = redis_py.Redis(host=server.host, port=server.port, db=request.module.REDIS_DB)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server process for the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_settings(tiny_model_dir, tmp_path_factory, redis_server) -> Settings:
    """Settings shared by the live stack's processes (short timeouts so fault tests finish quickly)."""
    return Settings(
        redis_url=redis_server.url,
        model_name=str(tiny_model_dir),
        device="cpu",
        data_dir=str(tmp_path_factory.mktemp("data")),
        secret_key="live-test-secret",
        web_workers=2,
        max_batch=16,
        job_deadline_seconds=60,
        max_queue_age_seconds=60,
        visibility_timeout_seconds=150,
        rate_limit="100000 per minute",
        ip_rate_limit="100000 per minute",
        max_active_jobs_per_client=1000, max_active_jobs_per_address=1000,
        heartbeat_seconds=1,
        dashboard_token="teacher-token",
    )


@pytest.fixture(scope="session")
def live_stack(live_settings, tmp_path_factory):
    """Redis + one Celery worker with the tiny model + the web under gunicorn, for the whole session."""
    stack = LiveStack(live_settings, tmp_path_factory.mktemp("logs"))
    stack.start_web()
    stack.start_worker("w1")
    stack.wait_for_workers(1)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def paced_stack(live_settings, tmp_path_factory):
    """A second stack for tests that watch progress: its own web and one worker that pauses PACE_SECONDS per step.

    It uses Redis database 1 of the same server: its own queue and jobs, so the fast worker never takes its jobs.
    """
    settings = with_settings(live_settings, redis_url=live_settings.redis_url.rsplit("/", 1)[0] + "/1",
                             step_pace_seconds=PACE_SECONDS, web_workers=1)
    stack = LiveStack(settings, tmp_path_factory.mktemp("paced-logs"))
    stack.start_web()
    stack.start_worker("paced")
    stack.wait_for_workers(1)
    yield stack
    stack.stop()


def with_settings(settings: Settings, **changes) -> Settings:
    """A copy of settings with some fields changed."""
    return dataclasses.replace(settings, **changes)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
