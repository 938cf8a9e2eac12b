"""JobStore: every read and write of job state in Redis, for the web and the workers.

State changes that must not race (create under caps, claim with a fencing token,
fenced step writes, finish, cancel) are Lua scripts, so each is one atomic round trip.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterable

from contract import keys
from contract.jobs import JobRequest, JobStatus

# Shared by the scripts that end a job: terminal fields, owner's active set, dashboard list.
_FINISH_LUA = """
local function finish(job, client_key, recent_key, job_id, status, reason, text, err, now, ttl)
  redis.call('HSET', job, 'status', status, 'finish_reason', reason, 'text', text,
             'error', err, 'finished_at', now, 'updated_at', now)
  redis.call('EXPIRE', job, ttl)
  redis.call('EXPIRE', job .. ':steps', ttl)
  redis.call('ZREM', client_key, job_id)
  redis.call('LPUSH', recent_key, job_id)
  redis.call('LTRIM', recent_key, 0, 99)
end
local function is_terminal(status)
  return status == 'done' or status == 'failed' or status == 'cancelled'
end
"""

# KEYS: job, queued, client_active   ARGV: id, now, ttl, max_queued, max_active, stale_before, fields(json)
_CREATE = """
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'queue_full' end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[6])
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 'client_busy' end
local fields = cjson.decode(ARGV[7])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 'ok'
"""

# KEYS: job, queued, client_active, recent, worker_jobs   ARGV: id, now, ttl, max_attempts, max_queue_age, worker
_CLAIM = _FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0} end
if is_terminal(status) then return {'terminal', 0} end
redis.call('ZREM', KEYS[2], ARGV[1])
local now = tonumber(ARGV[2])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
if attempt > tonumber(ARGV[4]) then
  finish(KEYS[1], KEYS[3], KEYS[4], ARGV[1], 'failed', '', redis.call('HGET', KEYS[1], 'text') or '',
         'gave up after ' .. ARGV[4] .. ' attempts: the worker running this job stopped each time',
         ARGV[2], ARGV[3])
  return {'exhausted', attempt}
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  finish(KEYS[1], KEYS[3], KEYS[4], ARGV[1], 'cancelled', 'cancelled', '', '', ARGV[2], ARGV[3])
  return {'terminal', attempt}
end
local created = tonumber(redis.call('HGET', KEYS[1], 'created_at') or ARGV[2])
if status == 'queued' and now - created > tonumber(ARGV[5]) then
  finish(KEYS[1], KEYS[3], KEYS[4], ARGV[1], 'failed', '', '',
         'waited in the queue longer than ' .. ARGV[5] .. ' seconds; please submit it again',
         ARGV[2], ARGV[3])
  return {'expired', attempt}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'fence', attempt, 'worker', ARGV[6], 'updated_at', ARGV[2])
if not redis.call('HGET', KEYS[1], 'started_at') then redis.call('HSET', KEYS[1], 'started_at', ARGV[2]) end
redis.call('SADD', KEYS[5], ARGV[1])
return {'run', attempt}
"""

# KEYS: workers, worker, worker_jobs   ARGV: name
# Only the caller whose ZREM succeeds takes the dead worker's jobs, so each is re-queued once.
_REAP = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return {} end
local jobs = redis.call('SMEMBERS', KEYS[3])
redis.call('DEL', KEYS[2], KEYS[3])
return jobs
"""

# KEYS: job   ARGV: now, grace
# A job still queued `grace` seconds after it was created (or last swept) is taken for re-publishing, once.
_SWEEP = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'swept_at') or redis.call('HGET', KEYS[1], 'created_at'))
if tonumber(ARGV[1]) - last < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'swept_at', ARGV[1])
return 1
"""

# KEYS: job, steps, rate   ARGV: fence, index, step_json, now, ttl
# Returns 0 stored, 1 stored and cancel requested, -1 rejected (stale attempt).
_APPEND_STEP = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local index = tonumber(ARGV[2])
if index > tonumber(redis.call('HGET', KEYS[1], 'steps_done') or '0') then
  redis.call('HSET', KEYS[1], 'steps_done', index)
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], 120)
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 1 end
return 0
"""

# KEYS: job, client_active, recent   ARGV: id, fence, status, reason, text, error, now, ttl
_FINISH = _FINISH_LUA + """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[2] then return 0 end
if is_terminal(redis.call('HGET', KEYS[1], 'status')) then return 0 end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return 1
"""

# KEYS: job, queued, client_active, recent   ARGV: id, owner, now, ttl
_CANCEL = _FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 'forbidden' end
if is_terminal(status) then return status end
if status == 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  finish(KEYS[1], KEYS[3], KEYS[4], ARGV[1], 'cancelled', 'cancelled', '', '', ARGV[3], ARGV[4])
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 'cancelling'
"""


class QueueFull(Exception):
    """The model's queue holds the maximum number of waiting jobs."""


class ClientBusy(Exception):
    """The client already has the maximum number of unfinished jobs."""


@dataclass(frozen=True)
class Claim:
    """The outcome of a worker claiming a job: `run` with a fencing token, or why not."""

    outcome: str  # run | missing | terminal | exhausted | expired
    fence: int


@dataclass(frozen=True)
class StepWrite:
    """One step record to store for one job attempt."""

    job_id: str
    fence: int
    index: int
    record: dict[str, Any]


class JobStore:
    """Job state in Redis. The connection is injected (a real server, or fakeredis in unit tests)."""

    def __init__(self, redis: Any, ttl_seconds: int = 86400) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._append = redis.register_script(_APPEND_STEP)
        self._finish = redis.register_script(_FINISH)
        self._cancel = redis.register_script(_CANCEL)
        self._reap = redis.register_script(_REAP)
        self._sweep = redis.register_script(_SWEEP)

    # -- web side -------------------------------------------------------------------------

    def create(
        self,
        job_id: str,
        request: JobRequest,
        *,
        owner: str,
        model: str,
        queue: str,
        seed: int,
        max_queued: int,
        max_active: int,
        active_window: float,
        now: float | None = None,
    ) -> None:
        """Store a new queued job, enforcing the queue cap and the owner's active-job cap.

        Raises:
            QueueFull: the model's queue is at `max_queued`.
            ClientBusy: `owner` has `max_active` unfinished jobs (ignoring ones older than `active_window` s).
        """
        now = time.time() if now is None else now
        params = request.params.to_dict() | {"seed": seed}
        fields = {
            "id": job_id,
            "status": JobStatus.QUEUED.value,
            "prompt": request.prompt,
            "params": json.dumps(params),
            "model": model,
            "queue": queue,
            "owner": owner,
            "created_at": repr(now),
            "updated_at": repr(now),
            "steps_total": request.params.steps,
            "steps_done": 0,
            "attempt": 0,
            "forced_ids": json.dumps(list(request.forced_ids)),
            "branch": json.dumps(request.branch.to_dict() if request.branch else None),
            "room": request.room or "",  # class room code ("" outside a room)
            "nickname": request.nickname,
            "score": request.score or "",  # text to score ("" for generation jobs)
        }
        result = self._create(
            keys=[keys.job_key(job_id), keys.queued_key(queue), keys.client_jobs_key(owner)],
            args=[job_id, repr(now), self.ttl, max_queued, max_active, repr(now - active_window), json.dumps(fields)],
        )
        outcome = _text(result)
        if outcome == "queue_full":
            raise QueueFull(queue)
        if outcome == "client_busy":
            raise ClientBusy(owner)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job record with JSON fields decoded, or None when unknown or expired."""
        raw = self.redis.hgetall(keys.job_key(job_id))
        if not raw:
            return None
        return _decode_job(raw)

    def steps(self, job_id: str, since: int, upto: int) -> list[dict[str, Any]]:
        """Stored step records with since < index <= upto, in order."""
        if upto <= since:
            return []
        indices = list(range(since + 1, upto + 1))
        values = self.redis.hmget(keys.steps_key(job_id), indices)
        return [json.loads(v) for v in values if v is not None]

    def queue_position(self, job_id: str, queue: str) -> int | None:
        """1-based position among the jobs waiting in `queue`, or None when not waiting."""
        rank = self.redis.zrank(keys.queued_key(queue), job_id)
        return None if rank is None else rank + 1

    def cancel(self, job_id: str, owner: str, now: float | None = None) -> str:
        """Cancel for `owner`: queued jobs end at once, running ones stop before their next step.

        Returns:
            cancelled | cancelling | missing | forbidden | done | failed (the state it was already in).
        """
        queue = _text(self.redis.hget(keys.job_key(job_id), "queue"))
        result = self._cancel(
            keys=[keys.job_key(job_id), keys.queued_key(queue), keys.client_jobs_key(owner), keys.recent_jobs_key()],
            args=[job_id, owner, repr(time.time() if now is None else now), self.ttl],
        )
        return _text(result)

    def mark_send_failed(self, job_id: str, queue: str, owner: str, error: str) -> None:
        """Fail a job whose queue message could not be sent, so it does not wait forever."""
        pipe = self.redis.pipeline()
        pipe.hset(keys.job_key(job_id), mapping={"status": JobStatus.FAILED.value, "error": error})
        pipe.zrem(keys.queued_key(queue), job_id)
        pipe.zrem(keys.client_jobs_key(owner), job_id)
        pipe.execute()

    # -- worker side ----------------------------------------------------------------------

    def claim(self, job_id: str, worker: str, *, max_attempts: int, max_queue_age: float) -> Claim:
        """Start an attempt: bump the attempt counter and take it as this attempt's fencing token.

        A later attempt (redelivery) takes a higher token, after which this attempt's writes are refused.
        """
        queue = self.redis.hget(keys.job_key(job_id), "queue")
        owner = self.redis.hget(keys.job_key(job_id), "owner")
        outcome, fence = self._claim(
            keys=[
                keys.job_key(job_id),
                keys.queued_key(_text(queue)),
                keys.client_jobs_key(_text(owner)),
                keys.recent_jobs_key(),
                keys.worker_jobs_key(worker),
            ],
            args=[job_id, repr(time.time()), self.ttl, max_attempts, max_queue_age, worker],
        )
        return Claim(_text(outcome), int(fence))

    def release(self, job_id: str, worker: str) -> None:
        """The worker no longer runs this job (finished, superseded or handed back)."""
        self.redis.srem(keys.worker_jobs_key(worker), job_id)

    def dead_workers(self, older_than: float) -> list[str]:
        """Workers whose last heartbeat is before `older_than` (a time.time() value)."""
        return [_text(n) for n in self.redis.zrangebyscore(keys.workers_key(), "-inf", older_than)]

    def reap(self, worker: str) -> list[tuple[str, str]]:
        """Take a dead worker's running jobs, once: [(job_id, queue)] of those still running there."""
        taken = self._reap(keys=[keys.workers_key(), keys.worker_key(worker), keys.worker_jobs_key(worker)],
                           args=[worker])
        orphans = []
        for job_id in map(_text, taken):
            job = self.get(job_id)
            if job and job["status"] == JobStatus.RUNNING.value and job.get("worker") == worker:
                orphans.append((job_id, job["queue"]))
        return orphans

    def stranded(self, queue: str, grace: float, now: float | None = None) -> list[str]:
        """Jobs whose queue message was lost, each returned once per `grace` seconds.

        A job still queued `grace` seconds after submission while the broker holds no message for
        its queue was taken by a worker that died before recording or claiming it (Celery's Redis
        transport pops a message and records it as unacked in two steps).
        """
        if self.redis.llen(queue):  # a backlog: the job may simply be waiting its turn
            return []
        now = time.time() if now is None else now
        waiting = self.redis.zrangebyscore(keys.queued_key(queue), "-inf", now - grace)
        return [_text(j) for j in waiting if self._sweep(keys=[keys.job_key(_text(j))], args=[repr(now), grace])]

    def set_fields(self, job_id: str, fence: int, **fields: Any) -> bool:
        """Set informational fields (e.g. prompt_tokens) if `fence` is still current."""
        job = keys.job_key(job_id)
        if _text(self.redis.hget(job, "fence")) != str(fence):
            return False
        self.redis.hset(job, mapping={k: json.dumps(v) for k, v in fields.items()})
        return True

    def append_steps(self, writes: Iterable[StepWrite]) -> list[int]:
        """Store one step for each job in a single pipelined round trip.

        Returns:
            Per write: 0 stored, 1 stored and the job was asked to cancel, -1 refused (stale attempt).
        """
        now = time.time()
        rate = keys.step_rate_key(int(now))
        pipe = self.redis.pipeline(transaction=False)
        for w in writes:
            self._append(
                keys=[keys.job_key(w.job_id), keys.steps_key(w.job_id), rate],
                args=[w.fence, w.index, json.dumps(w.record), repr(now), self.ttl],
                client=pipe,
            )
        return [int(r) for r in pipe.execute()]

    def finish(
        self,
        job_id: str,
        fence: int,
        status: JobStatus,
        *,
        finish_reason: str = "",
        text: str = "",
        error: str = "",
    ) -> bool:
        """End the attempt holding `fence`; False when a newer attempt owns the job or it already ended."""
        owner = self.redis.hget(keys.job_key(job_id), "owner")
        result = self._finish(
            keys=[keys.job_key(job_id), keys.client_jobs_key(_text(owner)), keys.recent_jobs_key()],
            args=[job_id, fence, status.value, finish_reason, text, error, repr(time.time()), self.ttl],
        )
        return bool(int(result))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


_JSON_FIELDS = ("params", "forced_ids", "branch", "prompt_tokens")
_INT_FIELDS = ("steps_total", "steps_done", "attempt", "fence")
_FLOAT_FIELDS = ("created_at", "updated_at", "started_at", "finished_at")


def _decode_job(raw: dict[Any, Any]) -> dict[str, Any]:
    job: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
    for name in _JSON_FIELDS:
        if name in job:
            job[name] = json.loads(job[name])
    for name in _INT_FIELDS:
        if name in job:
            job[name] = int(job[name])
    for name in _FLOAT_FIELDS:
        if name in job:
            job[name] = float(job[name])
    return job
