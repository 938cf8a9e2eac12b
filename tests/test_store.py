"""JobStore, WorkerRegistry and Recovery: every Lua script, on fakeredis and on a real Redis server."""
from __future__ import annotations

import json
import time
from unittest import mock

import pytest
import redis as redis_py
from redis.exceptions import ConnectionError as RedisConnectionError

from contract import keys
from contract.jobs import GenerationParams, JobRequest, JobStatus
from contract.recovery import Recovery
from contract.steprecord import pack_record
from contract.store import (CancelOutcome, ClaimOutcome, ClientBusy, HandBackOutcome, JobEnd, JobStore, QueueFull,
                            StepAnswer, StepWrite, checkpoint_before, context_edit)
from contract.workers import WorkerInfo, WorkerRegistry

CAPS = dict(max_queued=3, max_active=2, active_window=600)


REDIS_DB = 3  # the real server's database for this module (the `r` fixture in conftest)


@pytest.fixture
def store(r):
    return JobStore(r, ttl_seconds=100)


@pytest.fixture
def registry(r):
    return WorkerRegistry(r, heartbeat_seconds=1, job_ttl_seconds=100)


def now_of(r) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1e6


def create(store, job_id, owner="alice", age=0.0, **caps):
    request = JobRequest("The cat sat", GenerationParams(steps=3))
    now = now_of(store.redis) - age
    store.create(job_id, request, owner=owner, model="m", queue="q", seed=5, now=now, **(CAPS | caps))


def claim(store, job_id, worker="w", max_queue_age=60):
    return store.claim(job_id, worker, "q", max_queue_age=max_queue_age)


def write(job_id, fence, index, context=None):
    record = pack_record([], (index, 0.5, 1), 0.0, 1.0)
    return StepWrite(job_id, fence, index, record, context_edit(0, context if context is not None else f"ctx{index}"))


def test_create_stores_a_queued_job_with_its_seed_and_ttl(store, r):
    create(store, "job1")
    job = store.get("job1")
    assert job.status is JobStatus.QUEUED and job.params.seed == 5 and job.steps_total == 3
    assert store.queue_position("job1", "q") == 1
    assert 0 < r.ttl(keys.job_key("job1")) <= 100


def test_queue_cap_and_client_cap(store):
    create(store, "a", owner="alice")
    create(store, "b", owner="alice")
    with pytest.raises(ClientBusy):
        create(store, "c", owner="alice")
    create(store, "c", owner="bob")
    with pytest.raises(QueueFull):
        create(store, "d", owner="carol")
    assert store.get("d") is None


def test_cookieless_clients_are_capped_per_address_whatever_their_session(store):
    request = JobRequest("p", GenerationParams())
    for i in range(2):  # a new session per request, as a client that drops its cookie gets
        store.create(f"j{i}", request, owner=f"session{i}", model="m", queue="q", seed=1, max_queued=100,
                     max_active=5, active_window=600, address="10.0.0.9", max_per_address=2)
    with pytest.raises(ClientBusy):
        store.create("j9", request, owner="session9", model="m", queue="q", seed=1, max_queued=100,
                     max_active=5, active_window=600, address="10.0.0.9", max_per_address=2)
    fence = claim(store, "j0").fence
    store.finish("j0", fence, "w", JobStatus.DONE)  # a finished job frees the address's slot
    store.create("j9", request, owner="session9", model="m", queue="q", seed=1, max_queued=100,
                 max_active=5, active_window=600, address="10.0.0.9", max_per_address=2)


def test_a_job_the_create_script_cannot_store_takes_no_slot_of_its_address(store, r):
    """Redis does not roll back a script that fails half-way: the script reads its job's fields before it writes
    anything. Before, a prompt its JSON decoder refused (half a surrogate pair) had already taken an address slot,
    and five such requests locked a school's address out for the active window."""
    request = JobRequest("\ud800 The cat sat", GenerationParams())  # what validation now refuses
    with pytest.raises(Exception):
        store.create("bad", request, owner="s", model="m", queue="q", seed=1, max_queued=100, max_active=5,
                     active_window=600, address="10.0.0.9", max_per_address=2)
    assert r.zcard(keys.address_jobs_key("10.0.0.9")) == 0 and r.zcard(keys.queued_key("q")) == 0


def test_a_job_ended_after_it_was_handed_back_leaves_no_entry_in_its_queue(store, r):
    """Its worker was taken for dead and the job put back in the queue; the worker came back and ended it (its
    fence was still the job's; finish refuses that now, but a store written before keeps such jobs). The
    duplicate message's claim, or the sweep, removes the queue entry. Before, it stayed for the job's TTL: a
    waiting job too many for the autoscaler, and every student's position one high."""
    for job_id in ("by-claim", "by-sweep"):
        create(store, job_id, owner=job_id)
        fence = claim(store, job_id).fence
        store.hand_back(job_id, fence, "w", max_failures=3, counted=False, reason="its worker was taken for dead")
        r.hset(keys.job_key(job_id), "status", JobStatus.DONE.value)  # as the old attempt's finish left it
    assert r.zcard(keys.queued_key("q")) == 2
    assert claim(store, "by-claim").outcome is ClaimOutcome.TERMINAL
    assert Recovery(r).stranded("q", grace=0) == []
    assert r.zcard(keys.queued_key("q")) == 0


def test_a_job_put_back_in_the_queue_counts_its_wait_from_then(store):
    """A job whose worker shut down (an interruption, not a failure) goes back to the queue; its wait there is
    counted from then. Before, it was counted from its creation, so a job that had waited and run for a while was
    failed as "waited in the queue too long" on its next claim, its attempts not used up."""
    create(store, "j", age=100)
    fence = claim(store, "j", max_queue_age=120).fence
    store.hand_back("j", fence, "w", max_failures=3, counted=False, reason="its worker shut down")
    assert claim(store, "j", max_queue_age=60).outcome is ClaimOutcome.RUN


def test_claim_fences_out_the_older_attempt(store):
    create(store, "j")
    first, second = claim(store, "j", "w1"), claim(store, "j", "w2")
    assert (first.outcome, second.outcome) == (ClaimOutcome.RUN, ClaimOutcome.RUN) and second.fence > first.fence
    assert store.append_steps([write("j", first.fence, 1)]) == [StepAnswer.STALE]
    assert store.append_steps([write("j", second.fence, 1)]) == [StepAnswer.STORED]
    assert not store.finish("j", first.fence, "w1", JobStatus.DONE)
    assert store.get("j").status is JobStatus.RUNNING


def test_only_the_next_index_is_accepted_so_a_lost_step_is_never_skipped(store):
    create(store, "j")
    fence = claim(store, "j").fence
    assert store.append_steps([write("j", fence, 1), write("j", fence, 3)]) == [StepAnswer.STORED, StepAnswer.GAP]
    assert store.append_steps([write("j", fence, 1)]) == [StepAnswer.GAP]  # rewriting is refused too
    assert store.append_steps([write("j", fence, 2)]) == [StepAnswer.STORED]
    assert [s["index"] for s in store.steps("j", 0, store.get("j").steps_done, "m")] == [1, 2]


def test_the_count_of_steps_is_what_is_stored_so_a_rollback_moves_both(store, r):
    """Redis losing its last second (AOF everysec) takes the count back with the steps: no counter to disagree."""
    create(store, "j")
    fence = claim(store, "j").fence
    store.append_steps([write("j", fence, i) for i in (1, 2, 3)])
    assert store.get("j").steps_done == 3 and store.view("j", 0)[0].steps_done == 3
    r.hdel(keys.steps_key("j"), "3", "c3")
    assert store.get("j").steps_done == store.view("j", 0)[0].steps_done == 2
    assert store.append_steps([write("j", fence, 4), write("j", fence, 3)]) == [StepAnswer.GAP, StepAnswer.STORED]


def test_a_step_renews_its_jobs_updated_at_only_once_it_is_a_second_old(store, r):
    """The job hash is not rewritten at every step (that cost Redis more than the step); stale recovery reads it."""
    create(store, "j")
    fence = claim(store, "j").fence
    ahead = now_of(r) + 100
    r.hset(keys.job_key("j"), "updated_at", ahead)
    assert store.append_steps([write("j", fence, 1)]) == [StepAnswer.STORED]
    assert store.get("j").updated_at == ahead  # less than PROGRESS_STAMP_SECONDS old: left alone
    r.hset(keys.job_key("j"), "updated_at", now_of(r) - 5)
    before = now_of(r)
    assert store.append_steps([write("j", fence, 2)]) == [StepAnswer.STORED]
    assert before <= store.get("j").updated_at <= now_of(r)


def test_ends_that_carry_their_owner_free_the_owners_cap_as_looked_up_ones_do(store, r):
    for job_id in ("a", "b", "c"):
        create(store, job_id, max_active=3)
    fences = {job_id: claim(store, job_id).fence for job_id in ("a", "b", "c")}
    ends = [JobEnd("a", fences["a"], JobStatus.DONE, owner="alice", address=""),  # as a worker's handle knows them
            JobEnd("b", fences["b"], JobStatus.DONE),  # looked up
            JobEnd("c", fences["c"] + 1, JobStatus.DONE, owner="alice", address="")]  # stale: refused
    assert store.finish_many("w", ends) == [True, True, False]
    assert r.zrange(keys.client_jobs_key("alice"), 0, -1) == [b"c"]
    assert [store.get(j).status for j in "abc"] == [JobStatus.DONE, JobStatus.DONE, JobStatus.RUNNING]


def test_a_step_sent_ahead_is_stored_and_answered_as_append_steps_does(store, r):
    create(store, "j")
    fence = claim(store, "j").fence
    sent = store.send_steps([write("j", fence, 1), write("j", fence + 1, 2)], "m", {5: " sat"})
    answers = sent.answers()
    assert answers == [StepAnswer.STORED, StepAnswer.STALE] and answers.vocabulary_size == 1
    assert store.send_steps([write("j", fence, 2)], "m").answers() == [StepAnswer.STORED]


def test_steps_sent_one_after_another_are_answered_in_the_order_sent(store, r):
    """A worker sends step n + 1 before it reads step n's answers: both wait on the one connection."""
    create(store, "j")
    fence = claim(store, "j").fence
    first, second = [store.send_steps([write("j", fence, i)], "m") for i in (1, 2)]
    assert first.answers() == [StepAnswer.STORED] and second.answers() == [StepAnswer.STORED]
    assert store.get("j").steps_done == 2


def test_a_lost_reply_takes_the_replies_still_due_with_it_so_none_is_misread(store, r, monkeypatch):
    create(store, "j")
    fence = claim(store, "j").fence
    first, second = [store.send_steps([write("j", fence, i)], "m") for i in (1, 2)]
    monkeypatch.setattr(store._lane.connection, "read_response", mock.Mock(side_effect=RedisConnectionError("reset")))
    with pytest.raises(RedisConnectionError):
        first.answers()
    monkeypatch.undo()
    third = store.send_steps([write("j", fence + 1, 3)], "m")  # on a new connection; stale, so told apart
    with pytest.raises(RedisConnectionError):
        second.answers()  # its reply went with the old connection: reading now would take the third's
    assert third.answers() == [StepAnswer.STALE]


def test_a_health_check_due_while_a_reply_is_awaited_never_takes_that_reply(redis_server):
    """A worker's client checks a connection's health after it sat idle (a PING, and its reply read). On the step
    connection a step's reply may still be due then: the PING must not read it, nor move the replies still due."""
    client = redis_py.Redis(host=redis_server.host, port=redis_server.port, db=REDIS_DB, health_check_interval=1)
    client.flushdb()
    store = JobStore(client, ttl_seconds=100)
    create(store, "j")
    fence = claim(store, "j").fence
    first = store.send_steps([write("j", fence, 1)], "m")
    time.sleep(1.2)  # the connection is now due a health check, with the first reply unread
    second = store.send_steps([write("j", fence + 1, 2)], "m")  # stale: its answer differs from the first's
    assert first.answers() == [StepAnswer.STORED] and second.answers() == [StepAnswer.STALE]
    client.flushdb()


def test_steps_sent_ahead_are_stored_in_order_after_redis_forgot_its_scripts(store, r):
    """A restarted server holds no scripts: each call still runs, in the order sent (no refused call sent again late)."""
    create(store, "j")
    fence = claim(store, "j").fence
    store.send_steps([write("j", fence, 1)], "m").answers()
    r.script_flush()
    second, third = [store.send_steps([write("j", fence, i)], "m") for i in (2, 3)]
    assert second.answers() == [StepAnswer.STORED]
    fourth = store.send_steps([write("j", fence, 4)], "m")  # sent before the third is answered, as a worker does
    assert third.answers() == [StepAnswer.STORED] and fourth.answers() == [StepAnswer.STORED]
    assert [s["index"] for s in store.steps("j", 0, 4, "m")] == [1, 2, 3, 4]


def test_a_record_reads_back_as_the_api_step_with_texts_published_in_the_same_call(store, r):
    create(store, "j")
    fence = claim(store, "j").fence
    record = pack_record([(5, 0.5), (9, 0.25)], (9, 0.25, 2), 1.03972, 1700000000.25, forced=True)
    answers = store.append_steps([StepWrite("j", fence, 1, record, context_edit(0, "The cat"))], "m",
                                 {5: " sat", 9: "\x1f\u00e9"})
    assert answers == [StepAnswer.STORED] and answers.vocabulary_size == 2
    assert store.steps("j", 0, 1, "m") == [{
        "index": 1, "top": [{"token": " sat", "id": 5, "prob": 0.5}, {"token": "\x1f\u00e9", "id": 9, "prob": 0.25}],
        "chosen": {"token": "\x1f\u00e9", "id": 9, "prob": 0.25, "rank": 2}, "entropy": 1.03972,
        "computed_at": 1700000000.25, "forced": True, "context": "The cat"}]


def test_a_lost_vocabulary_shows_token_numbers_and_reports_its_size_until_texts_come_again(store, r):
    create(store, "j")
    fence = claim(store, "j").fence
    step = pack_record([(5, 1.0)], (5, 1.0, 1), 0.0, 1.0)
    store.append_steps([StepWrite("j", fence, 1, step, context_edit(0, "a"))], "m", {5: " sat"})
    r.delete(keys.vocab_key("m"))  # Redis restarted without it
    other = JobStore(r, ttl_seconds=600)  # a reader that never cached the text
    assert other.steps("j", 0, 1, "m")[0]["chosen"]["token"] == "<token 5>"
    answers = store.append_steps([StepWrite("j", fence, 2, step, context_edit(1, ""))], "m")
    assert answers.vocabulary_size == 0  # the writer sees the loss and publishes again
    store.append_steps([StepWrite("j", fence, 3, step, context_edit(1, ""))], "m", {5: " sat"})
    assert [s["chosen"]["token"] for s in other.steps("j", 0, 3, "m")] == [" sat"] * 3


def test_a_poll_reads_the_job_and_its_new_steps_in_one_call_as_get_and_steps_do(store, r):
    create(store, "j")
    fence = claim(store, "j").fence
    edits = [(0, "The cat"), (7, " sat"), (11, " on")]
    store.append_steps([StepWrite("j", fence, i + 1, pack_record([(i, 0.5)], (i, 0.5, 1), 0.1, 1.0), context_edit(k, t))
                        for i, (k, t) in enumerate(edits)], "m", {0: "a", 1: "b", 2: "c"})
    for since in (0, 1, 3, 5):
        job, steps = store.view("j", since)
        assert job == store.get("j") and steps == store.steps("j", since, job.steps_done, "m")
    assert [s["context"] for s in store.view("j", 1)[1]] == ["The cat sat", "The cat sat on"]
    assert store.view("nope", 0) is None
    for since, upto in ((0, 2), (1, 2), (0, 0), (2, 1), (0, 9)):  # a guessing reader's poll stops at what it may see
        assert store.view("j", since, lambda job: upto)[1] == store.steps("j", since, min(upto, 3), "m")


def test_contexts_are_rebuilt_from_edits(store, r):
    create(store, "j")
    fence = claim(store, "j").fence
    edits = [(0, "The cat"), (7, " sat"), (11, " on"), (12, "ö the")]  # keep < len: a character completed
    writes = [StepWrite("j", fence, i + 1, pack_record([], (i, 0.5, 1), 0.0, 1.0), context_edit(k, t))
              for i, (k, t) in enumerate(edits)]
    assert store.append_steps(writes) == [StepAnswer.STORED] * 4
    contexts = [s["context"] for s in store.steps("j", 0, 4, "m")]
    assert contexts == ["The cat", "The cat sat", "The cat sat on", "The cat sat ö the"]
    assert [s["context"] for s in store.steps("j", 2, 4, "m")] == contexts[2:]
    assert store.chosen_ids("j", 4) == [0, 1, 2, 3]


def test_hand_back_requeues_atomically_and_counts_only_failures(store):
    create(store, "j")
    fence = claim(store, "j").fence
    assert store.hand_back("j", fence, "w", max_failures=2, counted=False, reason="x") is HandBackOutcome.QUEUED
    job = store.get("j")
    assert job.status is JobStatus.QUEUED and job.recoveries == 0 and store.queue_position("j", "q") == 1
    assert store.hand_back("j", fence, "w", max_failures=2, counted=True, reason="x") is HandBackOutcome.STALE
    fence = claim(store, "j").fence
    assert store.hand_back("j", fence, "w", max_failures=2, counted=True, reason="boom") is HandBackOutcome.QUEUED
    fence = claim(store, "j").fence
    assert store.hand_back("j", fence, "w", max_failures=2, counted=True, reason="boom") is HandBackOutcome.FAILED
    job = store.get("j")
    assert job.status is JobStatus.FAILED and job.error == "gave up after 2 failed attempts: boom"
    assert job.attempt == 3  # three deliveries, two failures: only failures use up attempts


def test_release_only_for_the_matching_fence(store, r):
    create(store, "j")
    old = claim(store, "j", "w").fence
    new = claim(store, "j", "w").fence  # the same worker got the job twice; the newer attempt runs
    store.release("j", old, "w")
    assert r.sismember(keys.worker_jobs_key("w"), "j")
    store.release("j", new, "w")
    assert not r.sismember(keys.worker_jobs_key("w"), "j")


def test_old_queued_jobs_are_failed_not_run(store):
    create(store, "old", age=120)
    assert claim(store, "old").outcome is ClaimOutcome.EXPIRED
    assert "queue" in store.get("old").error


def test_claiming_an_expired_job_removes_its_ghost_queue_entry(store, r):
    create(store, "gone")
    r.delete(keys.job_key("gone"))  # the hash expired while the job waited
    assert claim(store, "gone").outcome is ClaimOutcome.MISSING
    assert r.zcard(keys.queued_key("q")) == 0


def test_cancel_needs_the_owner_and_ends_queued_jobs_at_once(store):
    create(store, "j", owner="alice")
    assert store.cancel("j", "mallory") is CancelOutcome.FORBIDDEN
    assert store.cancel("j", "alice") is CancelOutcome.CANCELLED
    assert store.get("j").status is JobStatus.CANCELLED
    assert claim(store, "j").outcome is ClaimOutcome.TERMINAL


def test_cancel_of_a_running_job_is_seen_by_the_next_step_write(store):
    create(store, "j", owner="alice")
    fence = claim(store, "j").fence
    assert store.cancel("j", "alice") is CancelOutcome.CANCELLING
    assert store.append_steps([write("j", fence, 1)]) == [StepAnswer.CANCEL_ASKED]


def test_finish_frees_the_owners_slot_and_the_workers_set(store, r):
    create(store, "a")
    create(store, "b")
    fence = claim(store, "a").fence
    assert store.finish("a", fence, "w", JobStatus.DONE, finish_reason="length", text="t")
    create(store, "c")  # alice has room again
    assert store.get("a").text == "t"
    assert not r.sismember(keys.worker_jobs_key("w"), "a") and r.zscore(keys.running_key(), "a") is None


def test_a_finish_sent_again_after_its_reply_was_lost_is_still_this_attempts_end(store):
    """A worker that lost the reply to its finish sends it again: the job ended as it asked, so the answer is
    True (not "a newer attempt owns it"); an end of another kind after it is refused."""
    create(store, "a")
    fence = claim(store, "a").fence
    assert store.finish("a", fence, "w", JobStatus.DONE, finish_reason="length", text="t")
    assert store.finish("a", fence, "w", JobStatus.DONE, finish_reason="length", text="t")
    assert not store.finish("a", fence, "w", JobStatus.FAILED, error="late")
    assert not store.finish("a", fence + 1, "w", JobStatus.DONE)
    job = store.get("a")
    assert job.status is JobStatus.DONE and job.text == "t" and not job.error


def test_an_attempt_taken_back_to_the_queue_cannot_end_the_job(store, r):
    """Recovery requeues a job keeping its fence (the next claim raises it): the old attempt's worker, waking
    after its deadline, must not fail the job that now waits for a fresh attempt."""
    create(store, "a")
    fence = claim(store, "a").fence
    assert store.hand_back("a", fence, "w", max_failures=3, counted=True, reason="stalled") == "queued"
    assert not store.finish("a", fence, "w", JobStatus.FAILED, error="stopped: the job ran past its time limit")
    job = store.get("a")
    assert job.status is JobStatus.QUEUED and not job.error
    assert claim(store, "a").fence == fence + 1


def test_a_job_its_student_cancelled_ends_cancelled_when_its_attempt_is_taken_back(store):
    """The worker died before it saw the cancel: at the last allowed attempt the job ended "failed: gave up after
    3 failed attempts" although the student had stopped it; before that, it was queued and run again."""
    for job_id, max_failures in (("last", 1), ("early", 3)):
        create(store, job_id, owner=job_id)
        fence = claim(store, job_id).fence
        assert store.cancel(job_id, job_id) is CancelOutcome.CANCELLING
        outcome = store.hand_back(job_id, fence, "w", max_failures=max_failures, counted=True, reason="worker died")
        assert outcome is HandBackOutcome.CANCELLED
        job = store.get(job_id)
        assert (job.status, job.finish_reason, job.error) == (JobStatus.CANCELLED, "cancelled", "")
        assert store.queue_position(job_id, "q") is None


def test_fail_queued_fences_on_status(store):
    create(store, "a")
    assert store.fail_queued("a", "could not queue the job")
    job = store.get("a")
    assert job.status is JobStatus.FAILED and job.error == "could not queue the job"
    create(store, "b")
    claim(store, "b")
    assert not store.fail_queued("b", "late")  # it runs now: nothing is overwritten
    assert store.get("b").status is JobStatus.RUNNING


def test_unknown_job_is_none(store):
    assert store.get("nope") is None
    assert claim(store, "nope").outcome is ClaimOutcome.MISSING


def test_unknown_fields_survive_a_read(store, r):
    create(store, "j")
    r.hset(keys.job_key("j"), "added_by_a_later_version", "kept")
    assert store.get("j").extra["added_by_a_later_version"] == "kept"


# -- WorkerRegistry -----------------------------------------------------------------------------

def announce(registry, name, **fields):
    info = WorkerInfo(name=name, model="m", device="cpu", queue="q", capacity=4, **fields)
    return registry.announce(info)


def test_registry_lists_live_workers_with_redis_time(registry, r):
    announce(registry, "w1", active=2, last_progress=now_of(r))
    announce(registry, "w2", active=1, last_progress=now_of(r) - 100)
    live = {w.name: w for w in registry.live()}
    assert set(live) == {"w1", "w2"}
    now = registry.now()
    assert not live["w1"].stalled(now) and live["w2"].stalled(now)
    assert announce(registry, "w3", runner_alive=False) and registry.live_view()[-1]["stalled"] is True


def test_a_busy_worker_whose_clock_is_behind_redis_is_not_called_stalled(registry, r, monkeypatch):
    """A worker stamps its progress with its own clock; the heartbeat stores it as an age on Redis's clock, which
    every reader compares it with. Before, a worker 100 s behind Redis was shown stalled while it made progress."""
    if not isinstance(r, redis_py.Redis) or type(r).__module__.startswith("fakeredis"):
        pytest.skip("fakeredis reads its TIME from this process's clock: no skew to make")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 100)  # this host's clock is 100 s behind Redis's
    announce(registry, "w-late", active=2, last_progress=time.time())  # progress just now, by its clock
    [worker] = registry.live()
    assert not worker.stalled(registry.now())


def test_reap_requeues_a_dead_workers_jobs_in_the_same_script(registry, store, r):
    create(store, "j1")
    create(store, "j2", owner="bob")
    fence = claim(store, "j1", "dead").fence
    claim(store, "j2", "dead")
    claim(store, "j2", "alive")  # superseded on another worker: not the dead one's any more
    announce(registry, "dead")
    r.zadd(keys.workers_key(), {"dead": now_of(r) - 60})
    assert registry.dead(silent_for=5) == ["dead"]
    assert registry.reap("dead", 5, max_failures=3) == [("j1", "q", "queued")]
    assert registry.reap("dead", 5, max_failures=3) == []  # only one reaper takes them
    job = store.get("j1")
    assert job.status is JobStatus.QUEUED and job.recoveries == 1 and store.queue_position("j1", "q") == 1
    assert not r.exists(keys.worker_jobs_key("dead"))
    assert store.get("j2").status is JobStatus.RUNNING
    assert store.append_steps([write("j1", fence, 1)]) == [StepAnswer.STALE]  # the dead one's late write


def test_a_worker_that_beat_again_is_not_reaped(registry, store, r):
    create(store, "j")
    claim(store, "j", "slow")
    r.zadd(keys.workers_key(), {"slow": now_of(r) - 60})
    names = registry.dead(silent_for=5)
    announce(registry, "slow")  # it beats between the listing and the reap
    assert names == ["slow"] and registry.reap("slow", 5, max_failures=3) == []
    assert store.get("j").status is JobStatus.RUNNING


def test_a_job_the_dead_worker_claims_while_the_reaper_reads_its_set_is_recovered_too(registry, store, r, monkeypatch):
    """The reaper lists a dead worker's jobs before its script runs. A job the worker (frozen, not dead)
    claims in between must not lose its tracking to the script's cleanup: it is recovered with the rest."""
    create(store, "j1")
    create(store, "j2", owner="bob")
    claim(store, "j1", "dead")
    r.zadd(keys.workers_key(), {"dead": now_of(r) - 60})
    listed = r.smembers

    def members_then_a_claim(name):
        found = listed(name)
        if store.get("j2").status is JobStatus.QUEUED:
            claim(store, "j2", "dead")  # the worker, back from its pause, takes a job before its next beat
        return found

    monkeypatch.setattr(registry.redis, "smembers", members_then_a_claim)
    reaped = registry.reap("dead", 5, max_failures=3)
    assert sorted(reaped) == [("j1", "q", "queued"), ("j2", "q", "queued")]
    assert store.get("j2").status is JobStatus.QUEUED and not r.exists(keys.worker_jobs_key("dead"))


def test_withdraw_keeps_a_worker_that_still_holds_jobs(registry, store):
    announce(registry, "w")
    create(store, "j")
    fence = claim(store, "j", "w").fence
    assert not registry.withdraw("w")
    store.finish("j", fence, "w", JobStatus.DONE)
    assert registry.withdraw("w") and registry.live() == []


# -- Recovery -----------------------------------------------------------------------------------

def test_a_lost_message_is_found_even_behind_a_backlog(store, r):
    recovery = Recovery(r, job_ttl_seconds=100)
    create(store, "lost", age=100)
    create(store, "waiting", age=100, owner="bob")
    create(store, "fresh", owner="carol")
    r.rpush(keys.broker_queue_key("q"), json.dumps({"headers": {"id": "waiting.ab12cd34"}, "body": "..."}))
    assert recovery.stranded("q", grace=10) == ["lost"]
    assert recovery.stranded("q", grace=10) == []  # swept just now: once per grace period


def test_a_message_just_taken_by_a_worker_is_not_lost_but_a_dead_workers_old_one_is(store, r):
    recovery = Recovery(r, job_ttl_seconds=100)
    create(store, "held", age=100)
    create(store, "orphan", age=100, owner="bob")
    r.hset(keys.broker_unacked_key(), "tag1", json.dumps([{"headers": {"id": "held.00000000"}}, "", "q"]))
    r.zadd(keys.broker_unacked_index_key(), {"tag1": now_of(r) - 1})  # taken a second ago: being claimed
    r.hset(keys.broker_unacked_key(), "tag2", json.dumps([{"headers": {"id": "orphan.00000000"}}, "", "q"]))
    r.zadd(keys.broker_unacked_index_key(), {"tag2": now_of(r) - 60})  # taken long ago by a worker now dead
    assert recovery.stranded("q", grace=10) == ["orphan"]


def test_a_message_a_worker_takes_while_the_sweep_reads_is_not_taken_for_lost(store, r, monkeypatch):
    """A worker moves a message from the queue's list to the unacked ones. The sweep reads the list first, then
    the unacked ones, so a message moved between the two reads is seen in the second. Before, the order was the
    other way round: such a message was in neither, its job was published again, and the duplicate's claim took
    the job from the attempt running it."""
    recovery = Recovery(r, job_ttl_seconds=100)
    create(store, "moving", age=100)
    message = json.dumps({"headers": {"id": "moving.00000000"}, "body": "..."})
    r.rpush(keys.broker_queue_key("q"), message)
    reads = []
    real_lrange, real_zrange = r.lrange, r.zrangebyscore

    def take_the_message():  # what a worker does: pop it from the list, record it as unacked
        r.lpop(keys.broker_queue_key("q"))
        r.hset(keys.broker_unacked_key(), "tag", json.dumps([json.loads(message), "", "q"]))
        r.zadd(keys.broker_unacked_index_key(), {"tag": now_of(r)})

    def lrange(*args):
        reads.append("list")
        found = real_lrange(*args)
        if reads == ["list"]:
            take_the_message()  # taken just after the sweep read the list
        return found

    def zrangebyscore(name, *args, **kwargs):
        if name == keys.broker_unacked_index_key():
            reads.append("unacked")
            if reads == ["unacked"]:
                found = real_zrange(name, *args, **kwargs)
                take_the_message()  # taken just after the sweep read the unacked ones
                return found
        return real_zrange(name, *args, **kwargs)

    monkeypatch.setattr(r, "lrange", lrange)
    monkeypatch.setattr(r, "zrangebyscore", zrangebyscore)
    assert recovery.stranded("q", grace=10) == []


def test_ghost_queue_entries_are_removed_by_the_sweep(store, r):
    recovery = Recovery(r, job_ttl_seconds=100)
    create(store, "ghost", age=100)
    r.delete(keys.job_key("ghost"))
    assert recovery.stranded("q", grace=10) == [] and r.zcard(keys.queued_key("q")) == 0


def test_a_running_job_that_stopped_writing_is_recovered(store, r):
    recovery = Recovery(r, job_ttl_seconds=100)
    create(store, "stuck")
    create(store, "busy", owner="bob")
    fence = claim(store, "stuck", "w").fence
    busy = claim(store, "busy", "w").fence
    long_ago = now_of(r) - 300
    r.zadd(keys.running_key(), {"stuck": long_ago, "busy": long_ago})  # both claimed 5 minutes ago
    r.hset(keys.job_key("stuck"), "updated_at", long_ago)  # stuck wrote nothing since
    assert store.append_steps([write("busy", busy, 1)]) == [StepAnswer.STORED]  # busy just wrote a step
    assert recovery.stale_running(silent_for=60, max_failures=3) == [("stuck", "q")]
    assert r.zscore(keys.running_key(), "busy") > long_ago + 200  # its entry moved on to its last write
    job = store.get("stuck")
    assert job.status is JobStatus.QUEUED and job.recoveries == 1
    assert not r.sismember(keys.worker_jobs_key("w"), "stuck")
    assert store.append_steps([write("stuck", fence, 1)]) == [StepAnswer.STALE]
    assert store.get("busy").status is JobStatus.RUNNING


def long_job(store, job_id, steps, checkpoints):
    """`steps` stored steps whose context grows by " w{i}"; checkpoint steps hold the whole context when asked."""
    create(store, job_id)
    fence = claim(store, job_id).fence
    contexts, writes = ["The cat"], []
    for index in range(1, steps + 1):
        if index > 1:
            contexts.append(contexts[-1] + f" w{index}")
        whole = index == 1 or (checkpoints and checkpoint_before(index) == index)
        keep, tail = (0, contexts[-1]) if whole else (len(contexts[-2]), f" w{index}")
        writes.append(StepWrite(job_id, fence, index, pack_record([], (index, 0.5, 1), 0.0, 1.0),
                                context_edit(keep, tail)))
    store.append_steps(writes, "m")
    return contexts


def test_a_read_far_into_a_long_job_starts_from_the_last_whole_context(store, r):
    """A poll at step 70 of 100 needs edits from step 65 on, not from step 1 (O(steps) per poll before)."""
    contexts = long_job(store, "j", 100, checkpoints=True)
    assert checkpoint_before(71) == 65
    # edits a read past step 65 must not need: garbled, so a read that used them would show it
    r.hset(keys.steps_key("j"), mapping={f"c{i}": context_edit(3, " garbled") for i in range(2, 65)})
    job, steps = store.view("j", 70)
    assert [s["index"] for s in steps] == list(range(71, 101))
    assert [s["context"] for s in steps] == contexts[70:]
    assert [s["context"] for s in store.steps("j", 70, 100, "m")] == contexts[70:]
    assert store.view("j", 100)[1] == [] and store.view("j", 120)[1] == []


def test_a_job_stored_without_checkpoints_is_still_read_from_step_1(store):
    """Steps written before checkpoints existed (an upgrade with jobs in flight) read as before."""
    contexts = long_job(store, "j", 100, checkpoints=False)
    for since in (0, 31, 32, 64, 70, 99):
        assert [s["context"] for s in store.view("j", since)[1]] == contexts[since:]
        assert [s["context"] for s in store.steps("j", since, 100, "m")] == contexts[since:]


def test_the_vocabulary_table_expires_unless_steps_keep_renewing_it(store, r):
    """A model nobody serves any more does not keep its (up to 128k-entry) table for ever."""
    store.add_texts("m", {1: " cat", 2: " sat"})
    assert 0 < r.ttl(keys.vocab_key("m")) <= store.ttl
    r.expire(keys.vocab_key("m"), 5)
    create(store, "j")
    fence = claim(store, "j").fence
    store.append_steps([write("j", fence, 1)], "m", {3: " on"})
    assert 5 < r.ttl(keys.vocab_key("m")) <= store.ttl  # renewed by the step write
