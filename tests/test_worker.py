"""The worker in process (Celery's testing advice): WorkerRuntime and BatchRunner with the tiny model,
on fakeredis and on a real Redis server, through the failure sequences an outside review found.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import signal
import threading
import time

import pytest
import redis as redis_py
import torch
from kombu.exceptions import OperationalError

from contract import keys
from contract.defaults import DEAD_AFTER_BEATS, STALL_SECONDS
from contract.jobs import GenerationParams, JobRequest, JobStatus
from contract.settings import Settings
from contract.steprecord import pack_record
from contract.store import JobStore, StepAnswer, StepWrite, StepWrites, context_edit
from contract.tasks import model_id
from contract.workers import ModelState, WorkerRegistry
from engine.step_engine import StepEngine
from stack.redis_server import RedisServer, free_port
from worker import writer as writer_module
from worker.handle import JobHandle, Outcome
from worker.runtime import ModelLoadError, WorkerRuntime, prepare_collector, worker_redis
from worker.writer import StepWriter, WriteBatch

pytestmark = pytest.mark.timeout(120)


REDIS_DB = 2  # the real server's database for this module (the `r` fixture in conftest)


class Harness:
    """A WorkerRuntime with its runner started (no Celery, no heartbeat thread unless asked)."""

    def __init__(self, r, engine: StepEngine, **changes) -> None:
        base = dict(redis_url="redis://unused", model_name=engine.name, max_batch=8, job_deadline_seconds=60,
                    heartbeat_seconds=1, max_attempts=3)
        self.settings = Settings(**(base | changes))
        self.store = JobStore(r, ttl_seconds=600)
        self.registry = WorkerRegistry(r, 1, 600)
        self.published: list[tuple[str, str]] = []
        self.fatal: list[str] = []
        self.runtime = WorkerRuntime(self.settings, engine, self.store, self.registry, "w1",
                                     lambda job_id, queue: self.published.append((job_id, queue)),
                                     on_fatal=self.fatal.append)
        self.runtime.runner.start()

    def create(self, job_id: str, prompt: str = "The cat sat", **params) -> str:
        request = JobRequest(prompt, GenerationParams(**({"steps": 12, "temperature": 0.9} | params)))
        self.store.create(job_id, request, owner=f"o-{job_id}", model=self.runtime.engine.name,
                          queue=self.runtime.queue, seed=7, max_queued=100, max_active=100, active_window=600)
        return job_id

    def run(self, job_id: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: setattr(thread, "outcome", self.runtime.run_job(job_id)))
        thread.start()
        return thread

    def steps(self, job_id: str) -> list[dict]:
        job = self.store.get(job_id)
        return self.store.steps(job_id, 0, job.steps_done, job.model)

    def wait_steps(self, job_id: str, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.store.get(job_id).steps_done < count:
            assert time.monotonic() < deadline, f"{job_id} stuck at {self.store.get(job_id)}"
            time.sleep(0.01)

    def stop(self) -> None:
        self.runtime.runner.stop()
        self.runtime.runner.join(timeout=10)


@pytest.fixture
def harness(r, tiny_engine):
    made = []

    def make(engine=None, **changes):
        h = Harness(r, engine or tiny_engine, **changes)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def reference(engine: StepEngine, prompt="The cat sat", **params) -> list[int]:
    """The same job run alone through the engine: the chosen token ids."""
    p = GenerationParams(**({"steps": 12, "temperature": 0.9, "seed": 7} | params))
    return [r.chosen_id for r in engine.steps(prompt, p)]


def chosen(steps: list[dict]) -> list[int]:
    return [s["chosen"]["id"] for s in steps]


class PoisonModel(torch.nn.Module):
    """The tiny model, but any forward pass that sees `poison` among its input ids raises (as a CUDA OOM would)."""

    def __init__(self, model: torch.nn.Module, poison: int) -> None:
        super().__init__()
        self.inner, self.poison = model, poison
        self.config, self.generation_config = model.config, model.generation_config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids=None, **kwargs):
        if (input_ids == self.poison).any():
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.inner(input_ids=input_ids, **kwargs)


def test_a_job_runs_to_the_same_steps_as_the_engine_alone(harness, tiny_engine):
    h = harness()
    thread = h.run(h.create("j1"))
    thread.join(60)
    assert thread.outcome == "done"
    steps = h.steps("j1")
    assert [s["index"] for s in steps] == list(range(1, len(steps) + 1))
    assert chosen(steps) == reference(tiny_engine)
    ids = tiny_engine.tokenize("The cat sat")
    for s in steps:  # each context rebuilt from stored edits equals a fresh decode
        assert s["context"] == tiny_engine.tokenizer.decode(ids, skip_special_tokens=True)
        ids.append(s["chosen"]["id"])
    assert not h.registry.jobs_of("w1")


def test_stored_steps_show_exactly_what_the_engine_computed(harness, tiny_engine):
    """Records are numbers cut from the device's rows and token texts come from the vocabulary table: read back,
    every field equals the engine's own Step (numbers to the last digit a batch-mate can move, see the README),
    for batch-mates showing different numbers of candidates."""
    h = harness()
    jobs = {"k3": {"top_k": 3}, "k7": {"top_k": 7, "temperature": 0.0}, "k1": {"top_k": 1, "prompt": "Once upon"}}
    threads = [h.run(h.create(job_id, **params)) for job_id, params in jobs.items()]
    for thread in threads:
        thread.join(60)
    assert [t.outcome for t in threads] == ["done"] * 3
    for job_id, params in jobs.items():
        prompt = params.pop("prompt", "The cat sat")
        p = GenerationParams(**({"steps": 12, "temperature": 0.9, "seed": 7} | params))
        want = [r.step.to_dict() for r in tiny_engine.steps(prompt, p)]
        got = [{k: v for k, v in s.items() if k != "computed_at"} for s in h.steps(job_id)]
        assert [texts_and_ids(s) for s in got] == [texts_and_ids(s) for s in want]
        for g, w in zip(got, want):
            assert numbers(g) == pytest.approx(numbers(w), rel=2e-5)  # the 6th digit may move with batch-mates
        assert all(len(s["top"]) == p.top_k for s in got)


def test_a_worker_publishes_token_texts_again_after_redis_lost_them(harness, r):
    h = harness()
    first = h.run(h.create("a"))
    first.join(60)
    r.delete(keys.vocab_key(h.runtime.engine.name))  # Redis came back without the vocabulary table
    again = h.run(h.create("b"))  # the same prompt and seed: the same tokens, all "published" already
    again.join(60)
    assert first.outcome == again.outcome == "done"
    reader = JobStore(r, ttl_seconds=600)  # a web process that never saw the texts
    steps = reader.steps("b", 0, reader.get("b").steps_done, h.runtime.engine.name)
    assert not [s["chosen"]["token"] for s in steps if s["chosen"]["token"].startswith("<token ")]


def test_the_runner_computes_at_most_one_step_past_the_one_being_stored(harness, monkeypatch, tiny_engine):
    """So the store's answers (cancel asked, a newer attempt) reach it one step late, never more."""
    h = harness()
    gate = threading.Event()
    real_send, real_step = h.store.send_steps, h.runtime.runner.main.step
    computed = []

    class Held:
        def __init__(self, sent):
            self.sent = sent

        @property
        def live(self):
            return self.sent.live

        def answers(self):
            gate.wait(30)
            return self.sent.answers()

    def step():
        computed.append(1)
        return real_step()

    monkeypatch.setattr(h.store, "send_steps", lambda *args: Held(real_send(*args)))
    monkeypatch.setattr(h.runtime.runner.main, "step", step)
    thread = h.run(h.create("j", steps=20))
    deadline = time.monotonic() + 30
    while len(computed) < 2 and time.monotonic() < deadline:  # one sent and unanswered, one computed
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(computed) == 2
    gate.set()
    thread.join(60)
    assert thread.outcome == "done" and chosen(h.steps("j")) == reference(tiny_engine, steps=20)


def texts_and_ids(step: dict) -> tuple:
    return (step["index"], step["context"], [(t["token"], t["id"]) for t in step["top"]], step["chosen"]["token"],
            step["chosen"]["id"], step["chosen"]["rank"], sorted(step))


def numbers(step: dict) -> list[float]:
    return [t["prob"] for t in step["top"]] + [step["chosen"]["prob"], step["entropy"]]


@pytest.fixture
def collector():
    """The garbage collector's settings, restored after the test (prepare_collector changes them process-wide)."""
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_a_full_batch_steps_without_the_garbage_collector_running(harness, collector):
    """Once the worker set the collector up (at boot), a step's short-lived objects die by reference count:
    no collection runs while a full batch steps. At the default threshold 5 to 7 ran in these 24 steps."""
    h = harness(max_batch=32)
    jobs = [h.create(f"g{i}", steps=24) for i in range(32)]
    prepare_collector(h.settings.max_batch)
    collections = []

    def seen(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        threads = [h.run(job_id) for job_id in jobs]
        for thread in threads:
            thread.join(60)
    finally:
        gc.callbacks.remove(seen)
    assert [thread.outcome for thread in threads] == ["done"] * 32
    assert sum(h.store.get(job_id).steps_done for job_id in jobs) == 32 * 24
    assert collections == []


def test_one_failing_row_fails_alone_and_its_batch_mates_survive(harness, tiny_engine):
    poison_prompt = "poison here"
    poison = tiny_engine.tokenize(poison_prompt)[-1]
    assert poison not in tiny_engine.tokenize("The cat sat") + tiny_engine.tokenize("Once upon a time")
    engine = dataclasses.replace(tiny_engine, model=PoisonModel(tiny_engine.model, poison))
    h = harness(engine, step_pace_seconds=0.02)
    good = [h.create("good1"), h.create("good2", "Once upon a time")]
    threads = [h.run(j) for j in good]
    h.wait_steps("good1", 2)
    threads.append(h.run(h.create("bad", poison_prompt)))  # joins the running batch, and its prefill raises
    for t in threads:
        t.join(60)
    assert h.store.get("bad").status is JobStatus.FAILED and "out of memory" in h.store.get("bad").error
    assert [h.store.get(j).status for j in good] == [JobStatus.DONE, JobStatus.DONE]
    assert chosen(h.steps("good1")) == reference(tiny_engine)
    assert chosen(h.steps("good2")) == reference(tiny_engine, "Once upon a time")
    assert h.runtime.runner.alive() and not h.fatal


def test_a_newer_fence_is_never_replaced_by_an_older_attempt_arriving_late(harness, tiny_engine):
    h = harness(step_pace_seconds=0.02)
    h.create("j")
    first = h.store.claim("j", "w1", h.runtime.queue, max_queue_age=60).fence
    second = h.store.claim("j", "w1", h.runtime.queue, max_queue_age=60).fence
    spec, _ = h.runtime._sequence(h.store.get("j"))
    newer = JobHandle("j", second, spec, time.monotonic() + 60)
    older = JobHandle("j", first, spec, time.monotonic() + 60)
    h.runtime.runner.submit(newer)
    h.runtime.runner.submit(older)  # arrives last, but must not take over
    assert older.wait(30) is Outcome.SUPERSEDED
    assert newer.wait(60) is Outcome.DONE
    assert chosen(h.steps("j")) == reference(tiny_engine)


def test_a_stale_attempt_that_writes_after_a_newer_claim_is_refused(harness, r):
    h = harness(step_pace_seconds=0.05)
    thread = h.run(h.create("j", steps=60))
    h.wait_steps("j", 3)
    newer = h.store.claim("j", "other", h.runtime.queue, max_queue_age=60).fence  # a second delivery elsewhere
    done_at_claim = h.store.get("j").steps_done
    thread.join(30)
    assert thread.outcome == "superseded"
    job = h.store.get("j")
    assert job.fence == newer and job.worker == "other"
    assert job.steps_done <= done_at_claim  # the old attempt wrote nothing after the newer claim
    assert h.store.append_steps([]) == []
    assert not r.sismember(keys.worker_jobs_key("w1"), "j")


def test_steps_lost_by_redis_are_recomputed_never_skipped(harness, tiny_engine, r):
    h = harness(step_pace_seconds=0.05)
    thread = h.run(h.create("j"))
    h.wait_steps("j", 6)
    # Redis comes back from a crash that lost its last second: steps 4.. roll back (and with them the count).
    r.hdel(keys.steps_key("j"), *[f for i in range(4, 13) for f in (str(i), f"c{i}")])
    thread.join(60)
    assert thread.outcome == "done"
    steps = h.steps("j")
    assert [s["index"] for s in steps] == list(range(1, 13))
    assert chosen(steps) == reference(tiny_engine)


def test_an_error_after_the_claim_hands_the_job_back(harness, monkeypatch):
    h = harness()
    h.create("j")

    def broken(job):
        raise RuntimeError("tokenizer exploded")

    monkeypatch.setattr(h.runtime, "_sequence", broken)
    assert h.runtime.run_job("j") == "handed_back"
    job = h.store.get("j")
    assert job.status is JobStatus.QUEUED and job.recoveries == 1
    assert h.published == [("j", h.runtime.queue)]
    assert not h.registry.jobs_of("w1")


def break_step_writes(monkeypatch, store, error) -> None:
    """Every step write, sent ahead or sent again, fails with `error()` (its reply never comes) unless that is None."""
    real_send, real_append = store.send_steps, store.append_steps

    class NoReply:
        live = True  # its reply is due, and reading it fails

        def __init__(self, exc):
            self.exc = exc

        def answers(self):
            raise self.exc

    def send(*args):
        exc = error()
        return NoReply(exc) if exc is not None else real_send(*args)

    def append(*args):
        exc = error()
        if exc is not None:
            raise exc
        return real_append(*args)

    monkeypatch.setattr(store, "send_steps", send)
    monkeypatch.setattr(store, "append_steps", append)


def test_the_runner_survives_redis_staying_down_with_several_jobs(harness, monkeypatch, tiny_engine):
    h = harness(step_pace_seconds=0.02)
    h.runtime.runner.writer.redis_retry_seconds = 0.3
    down = threading.Event()
    down_error = redis_py.ConnectionError("Redis is down")
    break_step_writes(monkeypatch, h.store, lambda: down_error if down.is_set() else None)
    threads = [h.run(h.create("a", steps=40)), h.run(h.create("b", steps=3, prompt="Once upon a time"))]
    h.wait_steps("a", 2)
    down.set()
    for t in threads:
        t.join(30)
    assert {t.outcome for t in threads} <= {"redis_unreachable", "done"}
    down.clear()
    assert h.runtime.runner.alive() and not h.fatal
    assert h.store.get("a").status is JobStatus.QUEUED  # handed back once Redis answered
    assert ("a", h.runtime.queue) in h.published
    later = h.run(h.create("c"))
    later.join(60)
    assert later.outcome == "done" and chosen(h.steps("c")) == reference(tiny_engine)


def test_a_write_sent_behind_one_that_found_redis_gone_gives_up_with_it(monkeypatch):
    """Two writes wait on Redis (one sent before the other's answers): its jobs are handed back once, not twice
    REDIS_RETRY_SECONDS apart. Time is a fake clock that the retries' sleeps advance."""

    class RedisGone:
        def send_steps(self, *args):
            raise redis_py.ConnectionError("Redis is down")

        append_steps = send_steps

    class Encoder:
        published_count = 1

        def writes(self, fences, results, computed_at):
            return [object() for _ in results], {}

        def forget_published(self):
            self.published_count = 0

    clock = [0.0]
    monkeypatch.setattr(writer_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(writer_module.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    writer = StepWriter(RedisGone(), "w1", "m", Encoder(), redis_retry_seconds=10)
    handle = JobHandle("j", 1, None, 3600)
    writer.write(WriteBatch([handle], ["step 1"], 0.0))
    writer.write(WriteBatch([handle], ["step 2"], 0.0))  # sent, then step 1 is answered: Redis stays gone
    assert handle.outcome is Outcome.REDIS_UNREACHABLE and 10 < clock[0] < 20
    writer.collect()  # step 2's write: nobody waits for it any more
    assert clock[0] < 20


def test_a_redis_that_stops_answering_times_the_step_write_out_when_others_would_call_the_worker_dead(tmp_path):
    """A Redis that keeps the connection but never answers (a frozen host, a partition with no reset): the runner's
    read of a step reply times out, so its retry and hand-back run, instead of waiting for ever (redis-py before 8
    waits for ever by default). It waits as long as the other workers wait before they call it dead, not less
    (redis-py 8's default gives up after 5 s), so a Redis that is only slow is not taken for a lost one."""
    server = RedisServer(tmp_path / "redis").start()
    settings = Settings(redis_url=server.url, heartbeat_seconds=2)
    patience = settings.heartbeat_seconds * DEAD_AFTER_BEATS
    store = JobStore(worker_redis(settings), ttl_seconds=600)
    store.create("j", JobRequest("The cat sat", GenerationParams(steps=3)), owner="o", model="m", queue="q", seed=1,
                 max_queued=10, max_active=10, active_window=600)
    fence = store.claim("j", "w", "q", max_queue_age=60).fence
    store.send_steps([StepWrite("j", fence, 1, b"", context_edit(0, "The cat sat"))], "m").answers()
    os.kill(server.process.pid, signal.SIGSTOP)
    failed = []
    try:
        sent = store.send_steps([StepWrite("j", fence, 2, b"", context_edit(11, " on"))], "m")
        started = time.monotonic()
        waiting = threading.Thread(target=lambda: failed.append((_raised(sent.answers), time.monotonic() - started)),
                                   daemon=True)
        waiting.start()
        waiting.join(3 * patience)
        assert not waiting.is_alive(), "the runner's read of a step reply still waits on a silent Redis"
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()
    [(error, waited)] = failed
    assert error is redis_py.TimeoutError and waited >= patience - 0.5


class _NumberedSteps:
    """A stand-in StepEncoder: step i of a job is a record holding i, its context "ctx<i>"."""

    published_count = 1

    def writes(self, fences, results, computed_at):
        records = [pack_record([], (index, 0.5, 1), 0.0, computed_at) for _, index in results]
        return StepWrites([key for key, _ in results], fences, [index for _, index in results],
                          [len(r) for r in records], b"".join(records),
                          [context_edit(0, f"ctx{index}") for _, index in results]), {}

    def forget_published(self):
        self.published_count = 0

    def whole_vocabulary(self):
        self.published_count = 1
        return {0: "a"}


def test_a_step_whose_connection_was_lost_is_stored_again_before_the_next_step_is_sent(redis_server):
    """The step connection is closed under the writer (a server restart, a proxy or NAT reset): the step in flight on
    it is stored again before the next one leaves, so the steps reach Redis in order and nothing is refused. Before,
    the next step went first, was refused as a gap, and every job of the batch had to resume from Redis."""
    client = redis_py.Redis(host=redis_server.host, port=redis_server.port, db=REDIS_DB)
    client.delete(keys.job_key("lane"), keys.steps_key("lane"))
    store = JobStore(redis_py.Redis(host=redis_server.host, port=redis_server.port, db=REDIS_DB), ttl_seconds=600)
    store.create("lane", JobRequest("The cat sat", GenerationParams(steps=20)), owner="o-lane", model="m", queue="q",
                 seed=1, max_queued=10, max_active=10, active_window=600)
    fence = store.claim("lane", "w", "q", max_queue_age=60).fence
    writer = StepWriter(store, "w", "m", _NumberedSteps(), redis_retry_seconds=5)
    handle = JobHandle("lane", fence, None, time.monotonic() + 3600)
    for index in (1, 2):
        writer.write(WriteBatch([handle], [("lane", index)], time.time()))
    client.client_kill_filter(_type="normal", skipme=True)  # every other connection, the step connection with them
    for index in range(3, 9):
        writer.write(WriteBatch([handle], [("lane", index)], time.time()))
    writer.collect()
    assert handle.outcome is None  # never told to resume: Redis refused nothing
    assert store.get("lane").steps_done == 8
    assert [s["index"] for s in store.steps("lane", 0, 8, "m")] == list(range(1, 9))


def _raised(call) -> type | None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test asserts which
        return type(exc)
    return None


def test_redis_down_while_a_job_finishes_leaves_the_runner_and_its_batch_mates_running(harness, monkeypatch,
                                                                                       tiny_engine):
    """The review's sequence: a batch of two, Redis gone past the retry while one job finishes (old code: KeyError)."""
    h = harness(step_pace_seconds=0.02)
    h.runtime.runner.writer.redis_retry_seconds = 0.3
    real_finish = h.store.finish_many
    failing = {"short"}

    def finish_many(worker, ends):
        if any(end.job_id in failing for end in ends):
            raise redis_py.ConnectionError("Redis is down")
        return real_finish(worker, ends)

    monkeypatch.setattr(h.store, "finish_many", finish_many)
    long, short = h.run(h.create("long", steps=30)), h.run(h.create("short", steps=3, prompt="Once upon a time"))
    short.join(30)
    assert short.outcome == "redis_unreachable"
    long.join(60)
    assert long.outcome == "done" and chosen(h.steps("long")) == reference(tiny_engine, steps=30)
    assert h.runtime.runner.alive() and not h.fatal


def test_an_unexpected_redis_error_hands_jobs_back_and_ends_the_process(harness, monkeypatch):
    h = harness(step_pace_seconds=0.02)
    calls = []

    def readonly():
        calls.append(1)
        readonly_error = redis_py.ResponseError("READONLY You can't write against a read only replica.")
        return readonly_error if len(calls) > 2 else None

    break_step_writes(monkeypatch, h.store, readonly)
    thread = h.run(h.create("j", steps=40))
    thread.join(30)
    assert not thread.is_alive(), "the task thread must not wait forever on a dead runner"
    h.runtime.runner.join(10)
    assert h.fatal and "READONLY" in h.fatal[0]
    assert not h.runtime.runner.alive() and h.runtime.info().runner_alive is False
    job = h.store.get("j")
    assert job.status is JobStatus.QUEUED and ("j", h.runtime.queue) in h.published


def test_stop_hands_running_jobs_back_without_using_an_attempt(harness):
    h = harness(step_pace_seconds=0.05)
    thread = h.run(h.create("j", steps=60))
    h.wait_steps("j", 2)
    h.runtime.stop()
    thread.join(30)
    job = h.store.get("j")
    assert job.status is JobStatus.QUEUED and job.recoveries == 0
    assert ("j", h.runtime.queue) in h.published
    assert not h.registry.jobs_of("w1")


def test_a_recovered_job_runs_alone_first_then_rejoins(harness, tiny_engine, r):
    h = harness(step_pace_seconds=0.02)
    h.create("j")
    r.hset(keys.job_key("j"), "recoveries", 1)
    sizes = []
    real_batch = h.runtime.runner.make_batch

    thread = h.run("j")
    deadline = time.monotonic() + 30
    while "j" not in h.runtime.runner.solo and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.005)
    sizes.append("j" in h.runtime.runner.solo)
    thread.join(60)
    assert sizes == [True] and thread.outcome == "done"
    assert chosen(h.steps("j")) == reference(tiny_engine)
    assert real_batch is not None


def test_cancel_and_deadline_end_running_jobs(harness, r):
    h = harness(step_pace_seconds=0.05)
    thread = h.run(h.create("c", steps=60))
    h.wait_steps("c", 2)
    assert h.store.cancel("c", "o-c").value == "cancelling"
    thread.join(30)
    job = h.store.get("c")
    assert thread.outcome == "cancelled" and job.status is JobStatus.CANCELLED and job.text
    h2 = harness(step_pace_seconds=0.05, job_deadline_seconds=1)
    thread = h2.run(h2.create("d", steps=200))
    thread.join(30)
    job = h2.store.get("d")
    assert job.status is JobStatus.FAILED and job.finish_reason == "deadline" and "time limit" in job.error


def test_heartbeat_survives_broker_errors_and_reports_liveness(harness, r):
    h = harness()

    def broken_publish(job_id, queue):
        raise OperationalError("Error 111 connecting to the broker")

    h.runtime.publish = broken_publish
    h.create("lost")
    r.zadd(keys.queued_key(h.runtime.queue), {"lost": 0})  # queued long ago, no message anywhere
    r.hset(keys.job_key("lost"), "created_at", 0)
    h.runtime._heartbeat.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and r.hget(keys.job_key("lost"), "swept_at") is None:
        time.sleep(0.05)
    assert r.hget(keys.job_key("lost"), "swept_at") is not None  # it tried to re-publish, and failed
    before = h.registry.live()[0].last_beat
    time.sleep(2.5)
    assert h.runtime._heartbeat.is_alive() and h.registry.live()[0].last_beat > before
    h.runtime._stop.set()


def test_a_worker_back_from_a_stall_skips_one_reap_round(harness, r, monkeypatch):
    h = harness()
    clock = iter([1000.0, 1001.0, 1030.0, 1031.0])  # Redis time: a beat, a beat, a 29 s stall, a beat
    monkeypatch.setattr(h.registry, "announce", lambda info: next(clock))
    reaped = []
    monkeypatch.setattr(h.runtime, "_recover", lambda: reaped.append(True))
    assert [h.runtime.beat_once() for _ in range(4)] == [False, True, False, True]
    assert len(reaped) == 2


def test_forced_ids_are_checked_against_the_embedding_size(harness, tiny_engine, r):
    h = harness()
    h.create("j")
    r.hset(keys.job_key("j"), "forced_ids", f"[{tiny_engine.vocab_size}]")
    assert h.runtime.run_job("j") == "failed"
    assert "vocabulary" in h.store.get("j").error
    assert tiny_engine.vocab_size == tiny_engine.model.get_input_embeddings().num_embeddings


def test_model_name_is_the_announced_model(harness, tiny_engine):
    h = harness()
    assert h.runtime.info().model == tiny_engine.name == model_id(tiny_engine.name)
    assert h.runtime.info().vocab_size == tiny_engine.vocab_size  # the web checks forced ids against it
    assert StepAnswer.GAP.value == -2


def test_checkpoint_steps_are_stored_with_their_whole_context_and_the_others_as_edits(harness, r, tiny_engine):
    """So a poll far into a long job rebuilds contexts from the last checkpoint (contract.store), not from step 1."""
    h = harness()
    thread = h.run(h.create("j", steps=40))
    thread.join(60)
    assert thread.outcome == "done"
    edits = r.hmget(keys.steps_key("j"), [f"c{i}" for i in range(1, 41)])
    whole = [i for i, edit in enumerate(edits, start=1) if edit.startswith(b"0:")]
    assert whole == [1, 33]
    steps = h.steps("j")
    assert [s["context"] for s in h.store.steps("j", 35, 40, tiny_engine.name)] == [s["context"] for s in steps[35:]]


def test_a_score_job_resumed_right_after_its_forced_end_of_text_token_scores_the_rest(harness, tiny_engine, r):
    """A scored text may hold the end-of-text token: forced, it never ends the job, resumed or not."""
    text = "The cat<|endoftext|> sat on the mat"
    forced = tiny_engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    eos_step = forced.index(tiny_engine.tokenizer.eos_token_id) + 1
    assert 1 < eos_step < len(forced)
    h = harness(step_pace_seconds=0.05)
    h.store.create("s", JobRequest("Once", GenerationParams(steps=len(forced), temperature=0.0), score=text),
                   owner="o-s", model=h.runtime.engine.name, queue=h.runtime.queue, seed=7, max_queued=100,
                   max_active=100, active_window=600)
    first = h.run("s")
    h.wait_steps("s", eos_step)
    h.store.hand_back("s", h.store.get("s").fence, "w1", max_failures=3, counted=True, reason="its worker died")
    first.join(30)
    later = [field for i in range(eos_step + 1, h.store.get("s").steps_done + 1) for field in (str(i), f"c{i}")]
    if later:  # the worker died right after storing the forced end-of-text step
        r.hdel(keys.steps_key("s"), *later)
    second = h.run("s")
    second.join(60)
    job = h.store.get("s")
    assert (job.status, job.finish_reason, job.steps_done) == (JobStatus.DONE, "length", len(forced))
    assert [s["chosen"]["id"] for s in h.steps("s")] == forced


def test_a_worker_refuses_a_model_name_another_worker_serves_with_other_files(tmp_path, tiny_model_dir, redis_server):
    """A local model is named by its folder: two different folders called `tiny` (on two machines, or one) were one
    model to the service, and one class's identical jobs alternated between the two models' answers."""
    import shutil

    url = f"redis://{redis_server.host}:{redis_server.port}/{REDIS_DB}"
    redis_py.Redis.from_url(url).flushdb()
    same, other = tmp_path / "copy" / tiny_model_dir.name, tmp_path / "other" / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, same)
    shutil.copytree(tiny_model_dir, other)
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\x00\x00\x00\x40"  # the last weight is 2.0 now: the same shapes, another model
    weights.write_bytes(bytes(data))
    settings = Settings(redis_url=url, model_name=str(tiny_model_dir), device="cpu", heartbeat_seconds=1)
    serving = WorkerRuntime.boot(settings, "w1@a", lambda job_id, queue: None)
    serving.registry.announce(serving.info())
    (same / "training_args.bin").write_bytes(b"a file the model does not load from")
    twin = WorkerRuntime.boot(dataclasses.replace(settings, model_name=str(same)), "w2@b", lambda job_id, queue: None)
    assert twin.engine.name == serving.engine.name  # the same files in another folder of that name: welcome
    with pytest.raises(ModelLoadError, match=f"w1@a.* serves other files as {serving.engine.name}.*rename"):
        WorkerRuntime.boot(dataclasses.replace(settings, model_name=str(other)), "w3@c", lambda job_id, queue: None)
    # w1 restarted after its folder was retrained: its own last heartbeat is no other model
    WorkerRuntime.boot(dataclasses.replace(settings, model_name=str(other)), "w1@a", lambda job_id, queue: None)
    status = serving.registry.model_status(serving.engine.name)
    assert status is None or status.state is not ModelState.FAILED  # the model served is not marked failed


def test_a_load_failure_is_told_in_one_whole_line():
    """Only an error's first line was kept: transformers' tokenizer error stopped at "from one of"."""
    from worker.runtime import ONE_LINE_CHARS, _one_line

    told = _one_line(ValueError("Couldn't instantiate the backend tokenizer from one of:\n(1) a tokenizers file"))
    assert told == "ValueError: Couldn't instantiate the backend tokenizer from one of: (1) a tokenizers file"
    long = _one_line(OSError("x" * 1000))
    assert len(long) == ONE_LINE_CHARS and long.endswith("…")


def test_a_model_that_cannot_load_is_named_even_while_redis_is_unreachable(tmp_path):
    """The failure report to Redis failed too, and its connection error hid the real cause."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", model_name=str(broken), device="cpu",
                        heartbeat_seconds=1)
    with pytest.raises(ModelLoadError, match="cannot load model local/broken-model"):
        WorkerRuntime.boot(settings, "w@test", lambda job_id, queue: None)


def test_a_worker_idle_for_a_while_is_not_called_stalled_when_it_takes_a_job(harness):
    """The stall clock ran from the last stored step even while nothing ran: after a class's break, the
    worker showed as stalled (and /api/health degraded) from its first job's admission to its first step."""
    h = harness(step_pace_seconds=5.0)  # a slow first step (a real model's prefill on a CPU)
    h.runtime.runner.writer.last_progress = time.time() - STALL_SECONDS - 5  # its last step, before the break
    thread = h.run(h.create("j", steps=2))
    deadline = time.monotonic() + 30
    while not h.runtime.runner.active:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert h.runtime.info().stalled(time.time()) is False
    h.runtime.runner.stop()
    thread.join(30)


@pytest.mark.parametrize("r", ["real"], indirect=True)  # fakeredis reads its TIME from this process's clock
def test_a_worker_whose_clock_is_behind_redis_still_counts_its_steps(harness, r, monkeypatch):
    """Steps were counted under the worker's clock and read under Redis's: a worker 100 s behind showed 0 steps/s."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 100)  # this host's clock is 100 s behind Redis's
    h = harness()
    h.runtime.beat_once()  # the heartbeat learns the difference
    thread = h.run(h.create("j1"))
    thread.join(60)
    now = int(h.registry.now())
    counted = r.mget([keys.step_rate_key(second) for second in range(now - 60, now + 1)])
    assert sum(int(v) for v in counted if v) == len(h.steps("j1")) > 0


def test_a_job_that_fills_the_models_positions_exactly_runs(harness, tiny_engine, r):
    """P prompt tokens and S steps feed positions 0 .. P + S - 2: the last token is chosen, never fed. A job with
    P + S - 1 = max_positions was refused one position early (a branch at a long job's last step among them)."""
    steps = 8
    h = harness(max_steps=steps)
    prompt_ids = tiny_engine.tokenize("The cat sat")
    filler = tiny_engine.max_positions - steps + 1 - len(prompt_ids)
    h.create("fits", steps=steps, temperature=0)
    r.hset(keys.job_key("fits"), "forced_ids", str([prompt_ids[-1]] * filler))
    assert h.runtime.run_job("fits") == "done", h.store.get("fits").error
    assert len(h.steps("fits")) == steps
    assert h.store.get("fits").finish_reason == "length"


def test_a_job_whose_steps_outrun_the_models_context_window_runs_the_steps_that_fit(harness, tiny_engine, r):
    """A prompt of 60 tokens with 200 steps on the demo model (256 positions) failed before its first step: the
    student only saw an error. It now runs what fits and says the context window was full."""
    steps = 8
    h = harness(max_steps=steps)
    prompt_ids = tiny_engine.tokenize("The cat sat")
    filler = tiny_engine.max_positions - steps + 1 - len(prompt_ids)
    h.create("over", steps=steps, temperature=0)
    r.hset(keys.job_key("over"), "forced_ids", str([prompt_ids[-1]] * (filler + 3)))
    assert h.runtime.run_job("over") == "done", h.store.get("over").error
    job = h.store.get("over")
    assert (len(h.steps("over")), job.steps_total, job.finish_reason) == (steps - 3, steps - 3, "context")
    h.create("whole", steps=steps, temperature=0)  # the prompt alone fills every position: one step is left
    r.hset(keys.job_key("whole"), "forced_ids", str([prompt_ids[-1]] * (tiny_engine.max_positions - len(prompt_ids))))
    assert h.runtime.run_job("whole") == "done" and len(h.steps("whole")) == 1
    h.create("past", steps=steps, temperature=0)
    r.hset(keys.job_key("past"), "forced_ids", str([prompt_ids[-1]] * (tiny_engine.max_positions + 1 - len(prompt_ids))))
    assert h.runtime.run_job("past") == "failed"
    assert (f"the prompt is {tiny_engine.max_positions + 1} tokens long; this model reads at most "
            f"{tiny_engine.max_positions} tokens at once") in h.store.get("past").error


def test_a_prompt_over_max_prompt_tokens_fails_naming_the_setting(harness, r):
    h = harness(max_prompt_tokens=4)
    h.create("long", steps=2, temperature=0)
    r.hset(keys.job_key("long"), "forced_ids", str([5] * 6))
    assert h.runtime.run_job("long") == "failed"
    assert "MAX_PROMPT_TOKENS" in h.store.get("long").error


def test_a_branch_that_forces_the_token_its_parent_chose_continues_exactly_as_the_parent(harness, r):
    """A branch's step 1 drew the parent's step-1 random number, not its step k + 1: at temperature > 0, forcing the
    very token the parent chose gave another continuation, as if that token had changed everything."""
    h = harness()
    h.create("parent", steps=12, temperature=1.0)
    assert h.runtime.run_job("parent") == "done"
    parent = chosen(h.steps("parent"))
    for k in (1, 5):  # branch at step k with the parent's own token, as the page sends it
        branch = h.create(f"b{k}", steps=12 - k, temperature=1.0)
        r.hset(keys.job_key(branch), "forced_ids", str(parent[:k]))
        assert h.runtime.run_job(branch) == "done"
        assert chosen(h.steps(branch)) == parent[k:]
    twice = h.create("b5-3", steps=4, temperature=1.0)  # a branch of that branch, at its step 3
    r.hset(keys.job_key(twice), "forced_ids", str(parent[:8]))
    assert h.runtime.run_job(twice) == "done"
    assert chosen(h.steps(twice)) == parent[8:]
