"""Fixtures: settings, fake and real Redis, the Flask app, the tiny model, and a live stack.

The live stack is real: a redis-server process, Celery worker processes holding the tiny
model, and the web under gunicorn on a loopback port.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import fakeredis
import pytest

from contract.settings import Settings
from stack.redis_server import RedisServer
from tests.live import LiveStack
from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + byte-level BPE tokenizer in Hugging Face format."""
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
def app(settings, fake_redis, monkeypatch):
    """The Flask app on fakeredis; jobs sent to the queue are recorded, not delivered."""
    from web import create_app

    sent: list[tuple[str, str]] = []
    monkeypatch.setattr("web.jobs.send_job", lambda job_id, queue: sent.append((job_id, queue)))
    app = create_app({"TESTING": True, "SETTINGS": settings, "REDIS_CLIENT": fake_redis,
                      "WTF_CSRF_ENABLED": False, "RATELIMIT_STORAGE_URI": "memory://"})
    app.sent_jobs = sent
    return app


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


def with_settings(settings: Settings, **changes) -> Settings:
    """A copy of settings with some fields changed."""
    return dataclasses.replace(settings, **changes)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
