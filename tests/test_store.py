"""JobStore on fakeredis: caps, fencing, idempotent steps, cancel, attempts."""
from __future__ import annotations

import pytest

from contract.jobs import GenerationParams, JobRequest, JobStatus
from contract.store import ClientBusy, JobStore, QueueFull, StepWrite

CAPS = dict(max_queued=3, max_active=2, active_window=600)


@pytest.fixture
def store(fake_redis):
    return JobStore(fake_redis, ttl_seconds=100)


def create(store, job_id, owner="alice", **caps):
    request = JobRequest("The cat sat", GenerationParams(steps=3))
    store.create(job_id, request, owner=owner, model="m", queue="q", seed=5, **(CAPS | caps))


def step(index):
    return {"index": index, "context": "x", "top": [], "chosen": {"id": index}, "entropy": 0.0}


def test_create_stores_a_queued_job_with_its_seed_and_ttl(store, fake_redis):
    create(store, "job1")
    job = store.get("job1")
    assert job["status"] == "queued" and job["params"]["seed"] == 5 and job["steps_total"] == 3
    assert store.queue_position("job1", "q") == 1
    assert 0 < fake_redis.ttl("genq:job:job1") <= 100


def test_queue_cap_and_client_cap(store):
    create(store, "a", owner="alice")
    create(store, "b", owner="alice")
    with pytest.raises(ClientBusy):
        create(store, "c", owner="alice")
    create(store, "c", owner="bob")
    with pytest.raises(QueueFull):
        create(store, "d", owner="carol")
    assert store.get("d") is None


def test_claim_fences_out_the_older_attempt(store):
    create(store, "j")
    first = store.claim("j", "w1", max_attempts=3, max_queue_age=60)
    second = store.claim("j", "w2", max_attempts=3, max_queue_age=60)
    assert (first.outcome, second.outcome) == ("run", "run") and second.fence > first.fence
    assert store.append_steps([StepWrite("j", first.fence, 1, step(1))]) == [-1]
    assert store.append_steps([StepWrite("j", second.fence, 1, step(1))]) == [0]
    assert not store.finish("j", first.fence, JobStatus.DONE)
    assert store.get("j")["status"] == "running"


def test_rewriting_a_step_index_is_harmless(store):
    create(store, "j")
    fence = store.claim("j", "w", max_attempts=3, max_queue_age=60).fence
    store.append_steps([StepWrite("j", fence, 1, step(1)), StepWrite("j", fence, 2, step(2))])
    store.append_steps([StepWrite("j", fence, 2, step(2))])
    assert [s["index"] for s in store.steps("j", 0, store.get("j")["steps_done"])] == [1, 2]
    assert [s["index"] for s in store.steps("j", 1, 2)] == [2]


def test_attempts_are_capped(store):
    create(store, "j")
    outcomes = [store.claim("j", "w", max_attempts=2, max_queue_age=60).outcome for _ in range(3)]
    assert outcomes == ["run", "run", "exhausted"]
    job = store.get("j")
    assert job["status"] == "failed" and "2 attempts" in job["error"]


def test_old_queued_jobs_are_failed_not_run(store):
    request = JobRequest("p", GenerationParams())
    store.create("old", request, owner="o", model="m", queue="q", seed=1, now=1000.0, **CAPS)
    assert store.claim("old", "w", max_attempts=3, max_queue_age=60).outcome == "expired"
    assert "queue" in store.get("old")["error"]


def test_cancel_needs_the_owner_and_ends_queued_jobs_at_once(store):
    create(store, "j", owner="alice")
    assert store.cancel("j", "mallory") == "forbidden"
    assert store.cancel("j", "alice") == "cancelled"
    assert store.get("j")["status"] == "cancelled"
    assert store.claim("j", "w", max_attempts=3, max_queue_age=60).outcome == "terminal"


def test_cancel_of_a_running_job_is_seen_by_the_next_step_write(store):
    create(store, "j", owner="alice")
    fence = store.claim("j", "w", max_attempts=3, max_queue_age=60).fence
    assert store.cancel("j", "alice") == "cancelling"
    assert store.append_steps([StepWrite("j", fence, 1, step(1))]) == [1]


def test_finish_frees_the_owners_slot(store):
    create(store, "a")
    create(store, "b")
    fence = store.claim("a", "w", max_attempts=3, max_queue_age=60).fence
    assert store.finish("a", fence, JobStatus.DONE, finish_reason="length", text="t")
    create(store, "c")  # alice has room again
    assert store.get("a")["text"] == "t"


def test_unknown_job_is_none(store):
    assert store.get("nope") is None
    assert store.claim("nope", "w", max_attempts=3, max_queue_age=60).outcome == "missing"


def test_a_job_whose_message_was_lost_is_swept_once_per_grace_period(store, fake_redis):
    request = JobRequest("p", GenerationParams())
    store.create("lost", request, owner="o", model="m", queue="q", seed=1, now=1000.0, **CAPS)
    store.create("fresh", request, owner="o", model="m", queue="q", seed=1, now=1096.0, **CAPS)
    assert store.stranded("q", grace=10, now=1100.0) == ["lost"]
    assert store.stranded("q", grace=10, now=1105.0) == []  # swept 5 s ago
    assert store.stranded("q", grace=10, now=1111.0) == ["lost", "fresh"]
    fake_redis.rpush("q", "a message")  # a backlog in the broker: nothing is stranded yet
    assert store.stranded("q", grace=10, now=1200.0) == []
    store.claim("lost", "w", max_attempts=3, max_queue_age=10_000)
    fake_redis.delete("q")
    assert store.stranded("q", grace=10, now=1300.0) == ["fresh"]
