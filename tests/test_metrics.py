"""GET /metrics: Prometheus text with per-model queue, age and worker figures, read by the autoscale recipe."""
from __future__ import annotations

import time

import pytest
import requests

from contract import keys
from contract.tasks import queue_for_model
from deploy import autoscale
from web.metrics import CONTENT_TYPE, Family

MODEL = "local/tiny"  # model_id of the unit-test settings' MODEL_NAME


def scrape(client) -> tuple[str, list[tuple[str, dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    text = response.get_data(as_text=True)
    return text, autoscale.parse(text)


def announce(redis, name: str, *, model: str = MODEL, device: str = "cpu", active: int = 0, steps: int = 0) -> None:
    """Write a worker heartbeat the way worker.runtime does."""
    now = time.time()
    redis.hset(keys.worker_key(name), mapping={
        "name": name, "model": model, "device": device, "queue": queue_for_model(model), "capacity": 8,
        "active": active, "steps_total": steps, "last_progress": repr(now), "last_beat": repr(now),
    })
    redis.zadd(keys.workers_key(), {name: now})


def test_every_sample_belongs_to_a_declared_family(client):
    text, samples = scrape(client)
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
        elif line.startswith("# TYPE "):
            _, _, type_name, kind = line.split()
            assert type_name == name, "TYPE follows its HELP line"
            declared[type_name] = kind
    assert {n for n, _, _ in samples} <= set(declared)
    assert set(declared.values()) <= {"gauge", "counter"}
    assert client.get("/metrics").headers["Cache-Control"] == "no-store"


def test_idle_service_reports_the_default_model_with_no_worker(client):
    _, samples = scrape(client)
    assert autoscale.value(samples, "genq_queue_waiting_jobs", model=MODEL) == 0
    assert ("genq_workers", {"model": MODEL, "device": "none"}, 0.0) in samples
    assert autoscale.value(samples, "genq_steps_last_minute") == 0


def test_queue_age_workers_steps_and_outcomes(client, fake_redis):
    announce(fake_redis, "w1@a", active=5, steps=120)
    announce(fake_redis, "w2@b", device="cuda", steps=30)
    announce(fake_redis, "g1@c", model="meta-llama/Llama-3.2-1B", device="cuda")
    for _ in range(3):
        assert client.post("/api/jobs", json={"prompt": "hi"}).status_code == 202
    queue = queue_for_model(MODEL)
    fake_redis.zadd(keys.queued_key(queue), {"x" * 22: time.time() - 42})  # a job waiting since 42 s ago
    fake_redis.lpush(queue, "m1", "m2")  # Celery messages no worker has taken yet
    fake_redis.set(keys.step_rate_key(int(time.time()) - 5), 17)
    for job_id, status in (("a" * 22, "done"), ("b" * 22, "done"), ("c" * 22, "failed")):
        fake_redis.hset(keys.job_key(job_id), "status", status)
        fake_redis.lpush(keys.recent_jobs_key(), job_id)

    _, samples = scrape(client)
    assert autoscale.value(samples, "genq_queue_waiting_jobs", model=MODEL) == 4
    assert 41 <= autoscale.value(samples, "genq_queue_oldest_job_age_seconds", model=MODEL) < 60
    assert autoscale.value(samples, "genq_queue_broker_messages", model=MODEL) == 2
    assert autoscale.value(samples, "genq_workers", model=MODEL) == 2
    assert autoscale.value(samples, "genq_workers", model=MODEL, device="cuda") == 1
    assert autoscale.value(samples, "genq_worker_slots", model=MODEL) == 16
    assert autoscale.value(samples, "genq_active_jobs", model=MODEL) == 5
    assert autoscale.value(samples, "genq_workers", model="meta-llama/Llama-3.2-1B") == 1
    assert autoscale.value(samples, "genq_queue_waiting_jobs", model="meta-llama/Llama-3.2-1B") == 0
    assert autoscale.value(samples, "genq_worker_steps_total", worker="w1@a") == 120
    assert autoscale.value(samples, "genq_steps_last_minute") == 17
    assert autoscale.value(samples, "genq_recent_jobs", status="done") == 2
    assert autoscale.value(samples, "genq_recent_jobs", status="failed") == 1


def test_labels_are_escaped_and_parse_back():
    family = Family("genq_x", "gauge", "test")
    family.add(1.5, model='we"ird\\name\nx')
    [(name, labels, value)] = autoscale.parse(family.render())
    assert (name, labels, value) == ("genq_x", {"model": 'we"ird\\name\nx'}, 1.5)


def test_parse_rejects_garbage():
    with pytest.raises(ValueError):
        autoscale.parse("genq_x{model=unquoted} 1 2 3\n")


@pytest.mark.parametrize(("waiting", "active", "wanted"), [(0, 0, 1), (3, 5, 2), (9, 0, 3), (400, 0, 5)])
def test_autoscale_wants_a_slot_for_every_job_within_bounds(waiting, active, wanted):
    samples = [("genq_queue_waiting_jobs", {"model": MODEL}, waiting), ("genq_active_jobs", {"model": MODEL}, active),
               ("genq_queue_waiting_jobs", {"model": "other"}, 1000)]
    assert autoscale.wanted_workers(samples, MODEL, slots=4, minimum=1, maximum=5) == wanted


def test_autoscale_recipe_reads_metrics_and_prints_the_compose_command(client, tmp_path, capsys):
    for _ in range(5):
        client.post("/api/jobs", json={"prompt": "hi"})
    page = tmp_path / "metrics.txt"
    page.write_text(client.get("/metrics").get_data(as_text=True))
    code = autoscale.main(["--url", page.as_uri(), "--model", MODEL, "--slots", "2", "--dry-run"])
    assert code == 0
    assert capsys.readouterr().out.strip() == "docker compose up -d --no-recreate --scale worker=3 worker"


@pytest.mark.integration
def test_live_metrics_show_the_worker_and_its_steps(live_stack):
    created = live_stack.submit(prompt="The cat sat", steps=3)
    assert live_stack.wait_done(created["id"])["status"] == "done"
    model = live_stack.job(created["id"])["model"]
    # the worker's counter arrives with its next heartbeat; the per-minute sum counts whole seconds only
    deadline = time.monotonic() + 10
    while True:
        samples = autoscale.parse(requests.get(f"{live_stack.url}/metrics", timeout=10).text)
        counted = (autoscale.value(samples, "genq_worker_steps_total", model=model),
                   autoscale.value(samples, "genq_steps_last_minute"))
        if min(counted) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert autoscale.value(samples, "genq_workers", model=model, device="cpu") >= 1
    assert autoscale.value(samples, "genq_worker_steps_total", model=model) >= 3
    assert autoscale.value(samples, "genq_steps_last_minute") >= 3
    assert autoscale.value(samples, "genq_queue_waiting_jobs", model=model) == 0
