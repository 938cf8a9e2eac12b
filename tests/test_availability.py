"""No silent failure: a model no worker serves or can load is refused with the recorded cause, and a
queued job whose model lost every worker fails readably after a bounded wait."""
from __future__ import annotations

import pytest

from contract import keys
from contract.tasks import model_id
from contract.workers import ModelState, WorkerRegistry
from tests.conftest import announce_worker, with_settings

MODEL = model_id("/models/tiny")


@pytest.fixture
def strict_app(make_app):
    """An app that accepts jobs only for a model a worker serves or is loading."""
    return make_app(accept_jobs_without_workers=False, queued_without_worker_seconds=120)


@pytest.fixture
def strict(strict_app):
    """The strict app's settings."""
    return strict_app.config["SETTINGS"]


def post(app, body=None):
    return app.test_client().post("/api/jobs", json=body or {"prompt": "The cat sat"})


def test_no_worker_means_503_model_unavailable_naming_the_model(strict_app):
    response = post(strict_app)
    error = response.get_json()["error"]
    assert response.status_code == 503 and error["code"] == "model_unavailable" and error["field"] == "model"
    assert MODEL in error["message"] and "no worker" in error["message"]


def test_a_load_failure_is_reported_with_its_cause_in_the_api_and_the_form(strict_app, fake_redis, strict):
    registry = WorkerRegistry(fake_redis, strict.heartbeat_seconds)
    registry.report_model(MODEL, ModelState.FAILED, "w1", "OSError: someorg/not-a-model is not a local folder")
    error = post(strict_app).get_json()["error"]
    assert "could not load it" in error["message"] and "not a local folder" in error["message"]
    page = strict_app.test_client().get("/").get_data(as_text=True)
    assert 'id="model-unavailable"' in page and "not a local folder" in page


def test_a_model_being_loaded_or_served_takes_jobs(strict_app, fake_redis, strict):
    WorkerRegistry(fake_redis, strict.heartbeat_seconds).report_model(MODEL, ModelState.LOADING, "w1")
    assert post(strict_app).status_code == 202
    fake_redis.flushall()
    announce_worker(fake_redis, strict)
    assert post(strict_app).status_code == 202
    assert 'id="model-unavailable"' not in strict_app.test_client().get("/").get_data(as_text=True)


def test_scale_from_zero_accepts_jobs_for_the_default_model_with_no_worker(make_app):
    app = make_app(accept_jobs_without_workers=True)
    assert post(app).status_code == 202
    assert post(app, {"prompt": "x", "model": "never/seen"}).status_code == 503


def test_a_queued_job_whose_model_lost_every_worker_fails_after_the_bounded_wait(strict_app, fake_redis, strict):
    announce_worker(fake_redis, strict)
    client = strict_app.test_client()
    job_id = client.post("/api/jobs", json={"prompt": "The cat sat"}).get_json()["id"]
    assert client.get(f"/api/jobs/{job_id}").get_json()["status"] == "queued"
    # Every worker went away 200 s ago, and the job has waited as long.
    fake_redis.delete(keys.workers_key())
    fake_redis.hset(keys.model_status_key(MODEL), "at", 0)
    fake_redis.hset(keys.job_key(job_id), "created_at", 0)
    job = client.get(f"/api/jobs/{job_id}").get_json()
    assert job["status"] == "failed" and MODEL in job["error"] and "120 seconds" in job["error"]


@pytest.mark.integration
def test_a_worker_that_cannot_load_its_model_exits_with_one_line_and_records_why(live_settings, tmp_path):
    from stack.harness import LiveStack

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "vocab_size": "not a number"}')
    settings = with_settings(live_settings, model_name=str(broken))
    stack = LiveStack(settings, tmp_path)
    worker = stack.start_worker("broken")
    try:
        assert worker.wait(timeout=120) == 3
    finally:
        stack.stop()
    log = (tmp_path / "worker-broken.log").read_text()
    lines = [line for line in log.splitlines() if "cannot load model local/broken-model" in line]
    assert len(lines) == 1 and "vocab_size" in lines[0], log[-2000:]
    assert log.index("loading model local/broken-model") < log.index(lines[0])  # announced before it failed
    status = WorkerRegistry(stack.redis, settings.heartbeat_seconds).model_status("local/broken-model")
    assert status.state is ModelState.FAILED and "vocab_size" in status.reason


@pytest.mark.integration
def test_a_worker_says_how_it_serves_its_model(live_settings, tmp_path):
    """dtype, cache, CUDA graphs and how the logits are made: what an operator checks first on a GPU."""
    from stack.harness import LiveStack

    stack = LiveStack(live_settings, tmp_path)
    stack.start_worker("says")
    try:
        stack.wait_for_workers(1, timeout=120)
    finally:
        stack.stop()
    log = (tmp_path / "worker-says.log").read_text()
    line = next(line for line in log.splitlines() if ": serving " in line)
    assert "on cpu (float32, static cache, CUDA graphs off, logits in fp32 (fp32 weights)), queue " in line, line
