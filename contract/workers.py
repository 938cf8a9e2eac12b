"""WorkerRegistry: who serves which model, who is alive, and the jobs of the dead (Redis time throughout).

The one place that writes and reads the heartbeat layout: the runtime announces, the web,
the metrics and the tests read.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from contract import keys
from contract.defaults import (LIVE_WITHIN_BEATS, MODEL_STATUS_TTL_SECONDS, RECENT_JOBS_KEPT, STALL_SECONDS,
                               WORKER_INFO_TTL_BEATS)
from contract.lua import PRELUDE
from contract.record import redis_text

# KEYS: workers, worker_info, worker_jobs, recent, running, then per job: job, queued, owner_active, address_active,
#       steps
# ARGV: name, dead_before, ttl, max_failures, reason, counted (1|0), then per job: id
# Only the caller whose ZREM succeeds takes the dead worker's jobs, and puts them back in the queue
# in the same script, so none is lost between the two. A job the worker took after the caller read its set
# (it was paused, not dead) makes the script change nothing and answer 'again': the caller reads the set again.
_REAP = PRELUDE + """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat or tonumber(beat) >= tonumber(ARGV[2]) then return {} end
local given = {}
for j = 7, #ARGV do given[ARGV[j]] = true end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if not given[id] then return 'again' end
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return {} end
local now, out = clock(''), {}
for j = 0, (#KEYS - 5) / 5 - 1 do
  local k, id = 6 + 5 * j, ARGV[7 + j]
  local state = redis.call('HMGET', KEYS[k], 'status', 'worker')
  if state[1] == 'running' and state[2] == ARGV[1] then
    local outcome = recover(KEYS[k], KEYS[k + 4], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[4], KEYS[5], KEYS[3],
                            id, now, ARGV[3], ARGV[4], ARGV[6], ARGV[5], %(recent)d)
    table.insert(out, id)
    table.insert(out, outcome)
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
return out
""" % {"recent": RECENT_JOBS_KEPT}

# KEYS: workers, worker_info, worker_jobs   ARGV: name
_WITHDRAW = """
if redis.call('SCARD', KEYS[3]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""


class ModelState(str, Enum):
    """What workers last reported about loading a model."""

    LOADING = "loading"
    SERVING = "serving"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelStatus:
    """A model's recorded state: `reason` is the load failure, `at` the Redis time it was reported."""

    state: ModelState
    reason: str
    worker: str
    at: float


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's announcement, as its heartbeat wrote it."""

    name: str
    model: str
    device: str
    queue: str
    capacity: int
    active: int = 0
    steps_total: int = 0
    last_progress: float = 0.0
    last_beat: float = 0.0
    runner_alive: bool = True
    vocab_size: int = 0  # the width of the model's logits: every token id it takes is below it (0: not announced)
    fingerprint: str = ""  # what the model's files are (engine.fingerprint; "": not announced)

    @property
    def node(self) -> str:
        """Its Celery node name ("worker1@host"): the announced name is "<node>/<pid>-<boot id>"."""
        return self.name.rpartition("/")[0] or self.name

    @property
    def pid(self) -> int:
        """Its process id, from the announced name (0 when the name carries none)."""
        number = self.name.rpartition("/")[2].partition("-")[0]
        return int(number) if number.isascii() and number.isdigit() else 0

    def stalled(self, now: float) -> bool:
        """Holding jobs without a step for STALL_SECONDS, or its batch runner has died."""
        return not self.runner_alive or (self.active > 0 and now - self.last_progress > STALL_SECONDS)

    def to_fields(self) -> dict[str, str]:
        """The hash fields written to Redis."""
        return {k: str(int(v) if isinstance(v, bool) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> "WorkerInfo":
        """Parse a worker hash."""
        f = {redis_text(k): redis_text(v) for k, v in raw.items()}
        return cls(name=f["name"], model=f["model"], device=f.get("device", ""), queue=f.get("queue", ""),
                   capacity=int(f.get("capacity", 1)), active=int(f.get("active", 0)),
                   steps_total=int(f.get("steps_total", 0)), last_progress=float(f.get("last_progress", 0)),
                   last_beat=float(f.get("last_beat", 0)), runner_alive=f.get("runner_alive", "1") == "1",
                   vocab_size=int(f.get("vocab_size", 0)), fingerprint=f.get("fingerprint", ""))

    def to_view(self, now: float) -> dict[str, object]:
        """The JSON shape the API, dashboard and metrics show."""
        return {"name": self.name, "model": self.model, "device": self.device, "queue": self.queue,
                "capacity": self.capacity, "active": self.active, "steps_total": self.steps_total,
                "seconds_since_beat": round(now - self.last_beat, 1), "stalled": self.stalled(now)}


class WorkerRegistry:
    """Worker announcements and liveness in Redis; `heartbeat_seconds` is the workers' beat period."""

    def __init__(self, redis: Any, heartbeat_seconds: float, job_ttl_seconds: int = 86400) -> None:
        self.redis = redis
        self.period = heartbeat_seconds
        self.job_ttl = job_ttl_seconds
        self._reap = redis.register_script(_REAP)
        self._withdraw = redis.register_script(_WITHDRAW)

    def now(self) -> float:
        """Redis server time (the one clock every machine shares)."""
        seconds, micros = self.redis.time()
        return seconds + micros / 1e6

    def announce(self, info: WorkerInfo) -> float:
        """Record a heartbeat (stamped with Redis time); the model is marked as served. Returns that time.

        `info.last_progress` is this host's time.time(); it is stored on Redis's clock, as every reader reads it.
        """
        now = self.now()
        fields = info.to_fields() | {"last_beat": repr(now)}
        if info.last_progress:  # stamped by this host's clock: stored as its age on Redis's, so a skew cancels out
            fields["last_progress"] = repr(now - max(0.0, time.time() - info.last_progress))
        pipe = self.redis.pipeline()
        pipe.hset(keys.worker_key(info.name), mapping=fields)
        pipe.expire(keys.worker_key(info.name), int(self.period * WORKER_INFO_TTL_BEATS) + 1)
        pipe.zadd(keys.workers_key(), {info.name: now})
        pipe.hset(keys.model_status_key(info.model),
                  mapping={"state": ModelState.SERVING.value, "reason": "", "worker": info.name, "at": repr(now)})
        pipe.expire(keys.model_status_key(info.model), MODEL_STATUS_TTL_SECONDS)
        pipe.execute()
        return now

    def report_model(self, model: str, state: ModelState, worker: str, reason: str = "") -> None:
        """Say a worker is loading `model`, or could not (with the reason, shown to users)."""
        self.redis.hset(keys.model_status_key(model),
                        mapping={"state": state.value, "reason": reason, "worker": worker, "at": repr(self.now())})
        self.redis.expire(keys.model_status_key(model), MODEL_STATUS_TTL_SECONDS)

    def model_status(self, model: str) -> ModelStatus | None:
        """The model's last reported state, or None when no worker ever reported it."""
        raw = self.redis.hgetall(keys.model_status_key(model))
        if not raw:
            return None
        f = {redis_text(k): redis_text(v) for k, v in raw.items()}
        return ModelStatus(ModelState(f["state"]), f.get("reason", ""), f.get("worker", ""), float(f["at"]))

    def live(self) -> list[WorkerInfo]:
        """Workers that beat within LIVE_WITHIN_BEATS periods."""
        now = self.now()
        names = self.redis.zrangebyscore(keys.workers_key(), now - self.period * LIVE_WITHIN_BEATS, "+inf")
        pipe = self.redis.pipeline()
        for name in names:
            pipe.hgetall(keys.worker_key(redis_text(name)))
        return [WorkerInfo.from_fields(raw) for raw in pipe.execute() if raw]

    def live_view(self) -> list[dict[str, object]]:
        """live(), in the JSON shape the API shows (with `stalled`)."""
        now = self.now()
        return [w.to_view(now) for w in self.live()]

    def dead(self, silent_for: float) -> list[str]:
        """Workers whose last heartbeat is more than `silent_for` seconds old (Redis time)."""
        before = self.now() - silent_for
        return [redis_text(n) for n in self.redis.zrangebyscore(keys.workers_key(), "-inf", before)]

    def reap(self, name: str, silent_for: float, *, max_failures: int, counted: bool = True,
             reason: str = "the worker running this job stopped each time") -> list[tuple[str, str, str]]:
        """Take a dead worker's running jobs, once, back to the queue: [(job_id, queue, 'queued' | 'failed' |
        'cancelled')] (a job its student cancelled ends so). `counted`: each counts as a failed attempt (a worker
        stopped on purpose, e.g. by a second Ctrl-C, failed nothing)."""
        while True:
            answer = self._reap_listed(name, silent_for, max_failures, counted, reason)
            if answer is not None:
                return answer

    def _reap_listed(self, name: str, silent_for: float, max_failures: int, counted: bool,
                     reason: str) -> list[tuple[str, str, str]] | None:
        """`reap` of the jobs in the worker's set as read now; None when the set grew before the script ran."""
        ids = [redis_text(j) for j in self.redis.smembers(keys.worker_jobs_key(name))]
        jobs = []
        for job_id in ids:
            queue, owner, address = (redis_text(v) for v in self.redis.hmget(keys.job_key(job_id),
                                                                           ["queue", "owner", "address"]))
            jobs.append((job_id, queue, owner, address))
        job_keys = [k for job_id, queue, owner, address in jobs
                    for k in (keys.job_key(job_id), keys.queued_key(queue), keys.client_jobs_key(owner),
                              keys.address_jobs_key(address), keys.steps_key(job_id))]
        answer = self._reap(
            keys=[keys.workers_key(), keys.worker_key(name), keys.worker_jobs_key(name), keys.recent_jobs_key(),
                  keys.running_key()] + job_keys,
            args=[name, repr(self.now() - silent_for), self.job_ttl, max_failures, reason,
                  "1" if counted else "0"] + [j[0] for j in jobs],
        )
        if not isinstance(answer, list):  # 'again'
            return None
        queues = {job_id: queue for job_id, queue, _, _ in jobs}
        pairs = [redis_text(a) for a in answer]
        return [(job_id, queues[job_id], outcome) for job_id, outcome in zip(pairs[::2], pairs[1::2])]

    def withdraw(self, name: str) -> bool:
        """Remove a stopping worker's announcement, unless it still holds jobs (then the reaper recovers them)."""
        return bool(int(self._withdraw(keys=[keys.workers_key(), keys.worker_key(name), keys.worker_jobs_key(name)],
                                       args=[name])))

    def jobs_of(self, name: str) -> set[str]:
        """Ids of the jobs a worker is tracking."""
        return {redis_text(j) for j in self.redis.smembers(keys.worker_jobs_key(name))}
