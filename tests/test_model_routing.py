"""Two models side by side: each worker consumes only its own model's queue."""
from __future__ import annotations

import pytest
import requests

from contract import keys
from tests.conftest import with_settings
from stack.harness import LiveStack
from tests.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration


@pytest.fixture
def second_model_worker(live_stack, live_settings, tmp_path_factory):
    """A worker holding another tiny model (`local/tiny-second`) beside the default one; stopped afterwards."""
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-second", seed=1)
    second = LiveStack(with_settings(live_settings, model_name=str(path)), live_stack.log_dir)
    second.start_worker("second")
    try:
        second.wait_for_workers(1)
        yield "local/tiny-second"
    finally:
        second.stop()  # warm shutdown withdraws its announcement


def test_jobs_run_only_on_workers_holding_their_model(live_stack, second_model_worker):
    models = requests.get(f"{live_stack.url}/api/models", timeout=10).json()
    default = models["default"]
    assert set(models["online"]) == {default, second_model_worker}

    session = requests.Session()
    ids = {}
    for i in range(8):
        model = second_model_worker if i % 2 else default
        ids[live_stack.submit(session, prompt=f"The cat sat {i}", steps=3, model=model)["id"]] = model
    for job_id, model in ids.items():
        job = live_stack.wait_done(job_id)
        assert (job["status"], job["model"]) == ("done", model)
        host = live_stack.redis.hget(keys.job_key(job_id), "worker").decode().split("@")[0]
        assert host == ("second" if model == second_model_worker else "w1"), (job_id, model, host)


def test_a_model_nobody_serves_is_refused(live_stack):
    response = requests.post(f"{live_stack.url}/api/jobs", json={"prompt": "hi", "model": "local/nobody"}, timeout=10)
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"
    assert response.json()["error"]["field"] == "model" and "local/nobody" in response.json()["error"]["message"]
