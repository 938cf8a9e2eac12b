"""GET /metrics: Prometheus text with per-model queue, age and worker figures, read by the autoscale recipe."""
from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from contract import keys
from contract.workers import WorkerInfo, WorkerRegistry
from contract.tasks import queue_for_model
from deploy import autoscale
from web.metrics import CONTENT_TYPE

MODEL = "local/tiny"  # model_id of the unit-test settings' MODEL_NAME


def scrape(client) -> tuple[str, list[tuple[str, dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    text = response.get_data(as_text=True)
    return text, autoscale.parse(text)


def announce(redis, name: str, *, model: str = MODEL, device: str = "cpu", active: int = 0, steps: int = 0) -> None:
    """Write a worker heartbeat through the WorkerRegistry, as worker.runtime does."""
    info = WorkerInfo(name=name, model=model, device=device, queue=queue_for_model(model), capacity=8,
                      active=active, steps_total=steps, last_progress=time.time())
    WorkerRegistry(redis, heartbeat_seconds=5).announce(info)


FIGURES = {"genq_queue_waiting_jobs": "gauge", "genq_queue_oldest_job_age_seconds": "gauge",
           "genq_queue_broker_messages": "gauge", "genq_workers": "gauge", "genq_workers_stalled": "gauge",
           "genq_worker_slots": "gauge", "genq_active_jobs": "gauge", "genq_steps_last_minute": "gauge",
           "genq_worker_steps": "counter", "genq_recent_jobs": "gauge",
           "genq_http_request_duration_seconds": "histogram"}


def test_the_page_parses_with_prometheus_clients_parser_and_keeps_every_figure(client):
    client.get("/api/models")
    text, _ = scrape(client)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: families[name].type for name in FIGURES} == FIGURES
    assert client.get("/metrics").headers["Cache-Control"] == "no-store"


def test_request_latency_is_a_histogram_by_endpoint_method_and_status(client):
    for _ in range(3):
        client.get("/api/models")
    client.get("/api/jobs/" + "x" * 22)  # 404
    client.get("/no/such/page")
    text, _ = scrape(client)
    [latency] = [f for f in text_string_to_metric_families(text) if f.name == "genq_http_request_duration_seconds"]
    counts = {(s.labels["endpoint"], s.labels["method"], s.labels["status"]): s.value
              for s in latency.samples if s.name.endswith("_count")}
    # the histogram lives for the whole test process: other tests' requests are in it too
    assert counts[("api.models", "GET", "200")] >= 3
    assert counts[("api.status", "GET", "404")] >= 1
    assert counts[("unmatched", "GET", "404")] >= 1, "unknown paths share one label"
    assert not any("/no/such/page" in endpoint for endpoint, _, _ in counts)


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


def test_labels_are_escaped_and_parse_back(client, fake_redis):
    model = 'we"ird\\name\nx'
    announce(fake_redis, "w1@a", model=model, steps=7)
    text, samples = scrape(client)
    assert autoscale.value(samples, "genq_worker_steps_total", model=model) == 7
    [steps] = [f for f in text_string_to_metric_families(text) if f.name == "genq_worker_steps"]
    assert [(s.labels["model"], s.value) for s in steps.samples] == [(model, 7.0)]


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
def test_live_request_latency_counts_every_gunicorn_process(live_stack):
    """gunicorn runs 2 web processes here; a scrape reaches one, and must count every process's requests."""
    assert live_stack.settings.web_workers >= 2

    def healthz_count() -> float:
        text = requests.get(f"{live_stack.url}/metrics", timeout=10).text
        return autoscale.value(autoscale.parse(text), "genq_http_request_duration_seconds_count",
                               endpoint="probes.healthz", method="GET", status="200")

    before = healthz_count()
    for _ in range(20):  # a new connection each time: gunicorn hands them to either process
        assert requests.get(f"{live_stack.url}/healthz", timeout=10).status_code == 200
    assert [healthz_count() for _ in range(6)] == [before + 20] * 6
    text = requests.get(f"{live_stack.url}/metrics", timeout=10).text
    assert text.count("# TYPE genq_workers gauge") == 1, "the Redis figures appear once, not once per process"


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


def test_jobs_waiting_for_a_model_no_live_worker_serves_are_counted(make_app, fake_redis):
    """Scale from zero: the GPU model has no worker until its queue wakes one. Its waiting jobs were in no series
    (only the default model and live workers' models were), so the KEDA trigger never fired, and the dashboard
    showed 0 waiting."""
    from contract.jobs import GenerationParams, JobRequest

    app = make_app(accept_jobs_without_workers=True, dashboard_token="sesame")
    store = app.extensions["store"]
    gpu = "meta-llama/Llama-3.2-1B"
    for n in range(3):
        store.create(f"j{n}", JobRequest("x", GenerationParams()), owner=f"o{n}", model=gpu,
                     queue=queue_for_model(gpu), seed=1, max_queued=10, max_active=10, active_window=600)
    _, samples = scrape(app.test_client())
    assert ("genq_queue_waiting_jobs", {"model": gpu}, 3.0) in samples
    data = app.test_client().get("/dashboard/data", headers={"X-Dashboard-Token": "sesame"}).get_json()
    assert data["queued"] == 3 and queue_for_model(gpu) in [q["queue"] for q in data["queues"]]


def test_a_job_put_back_in_the_queue_has_waited_since_then(client, fake_redis, app):
    """The queue keeps a requeued job's place by its creation time; its wait is counted from its requeue, as the
    claim's MAX_QUEUE_AGE check counts it. The oldest-age gauge jumped by the job's whole running time."""
    store = app.extensions["store"]
    job_id = client.post("/api/jobs", json={"prompt": "x"}).get_json()["id"]
    job = store.get(job_id)
    fake_redis.hset(keys.job_key(job_id), "created_at", job.created_at - 500)  # it ran for a long time
    fence = store.claim(job_id, "w@test", job.queue, max_queue_age=6000).fence
    store.hand_back(job_id, fence, "w@test", max_failures=3, counted=True, reason="its worker died")
    _, samples = scrape(client)
    age = next(v for name, labels, v in samples if name == "genq_queue_oldest_job_age_seconds")
    assert age < 60
