"""Recovery of jobs that nobody will run otherwise: lost queue messages, ghosts, stale running jobs.

Every worker runs these checks after its heartbeat; each job is taken by one checker only
(the scripts decide), and a duplicate message later is harmless (fencing, resume).
"""
from __future__ import annotations

from typing import Any

from contract import keys
from contract.defaults import RECENT_JOBS_KEPT
from contract.lua import PRELUDE
from contract.record import redis_text

# KEYS: job, queued   ARGV: id, now, grace
# A job still queued `grace` seconds after it was queued (or last swept) is taken for re-publishing, once;
# an entry whose job is not queued any more (ended after it was put back) or whose hash has expired is removed
# (a ghost would skew positions, the queue cap and the autoscaler's count).
_SWEEP = PRELUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then redis.call('ZREM', KEYS[2], ARGV[1]) return 'ghost' end
if status ~= 'queued' then redis.call('ZREM', KEYS[2], ARGV[1]) return 'moved' end  -- running or ended: not waiting
local now = clock(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'swept_at') or redis.call('HGET', KEYS[1], 'requeued_at')
                      or redis.call('HGET', KEYS[1], 'created_at'))
if now - last < tonumber(ARGV[3]) then return 'waiting' end
redis.call('HSET', KEYS[1], 'swept_at', now)
return 'republish'
"""

# KEYS: job, queued, owner_active, address_active, recent, running, worker_jobs, steps
# ARGV: id, stale_before, ttl, max_failures
# A running job whose attempt stopped writing (the worker lives on but lost it) goes back to the queue.
# The running index holds the time of the claim; a job that wrote since then only has its entry moved on.
_RECOVER_STALE = PRELUDE + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  redis.call('ZREM', KEYS[6], ARGV[1])
  return 'moved'
end
local updated = tonumber(redis.call('HGET', KEYS[1], 'updated_at') or '0')
if updated >= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[6], updated, ARGV[1])
  return 'fresh'
end
local worker = redis.call('HGET', KEYS[1], 'worker') or ''
local worker_jobs = ''
if worker ~= '' then worker_jobs = KEYS[7] end
return recover(KEYS[1], KEYS[8], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], worker_jobs, ARGV[1], clock(''), ARGV[3],
               ARGV[4], '1', 'its worker stopped writing steps', %(recent)d)
""" % {"recent": RECENT_JOBS_KEPT}


class Recovery:
    """The checks a worker runs after each heartbeat; each returns the (job_id, queue) pairs to publish."""

    def __init__(self, redis: Any, job_ttl_seconds: int = 86400) -> None:
        self.redis = redis
        self.ttl = job_ttl_seconds
        self._sweep = redis.register_script(_SWEEP)
        self._stale = redis.register_script(_RECOVER_STALE)

    def stranded(self, queue: str, grace: float) -> list[str]:
        """Queued jobs with no live message for them in the broker, each returned once per `grace` seconds.

        A message is lost when the worker that took it died before claiming the job: Celery's Redis
        transport pops it and records it as unacked in two steps, and an unacked message of a dead
        worker waits for the visibility timeout. Each job's own message is looked for in the queue's
        list and among the messages delivered less than `grace` seconds ago (a worker claims a job as
        soon as it takes its message), so neither a backlog nor a dead worker's unacked copy hides it.
        """
        now = self._now()
        waiting = [redis_text(j) for j in self.redis.zrangebyscore(keys.queued_key(queue), "-inf", now - grace)]
        if not waiting:
            return []
        # the list first: a worker moves a message from it to the unacked ones, so one moved between the two reads
        # is seen in the second (read the other way round, it would be in neither and published again)
        listed = self.redis.lrange(keys.broker_queue_key(queue), 0, -1)
        fresh = self.redis.zrangebyscore(keys.broker_unacked_index_key(), now - grace, "+inf")
        held = self.redis.hmget(keys.broker_unacked_key(), fresh) if fresh else []
        messages = listed + [m for m in held if m is not None]
        blob = b"\n".join(m if isinstance(m, bytes) else m.encode() for m in messages)
        lost = []
        for job_id in waiting:
            outcome = redis_text(self._sweep(keys=[keys.job_key(job_id), keys.queued_key(queue)],
                                        args=[job_id, "", grace]))
            if outcome == "republish" and job_id.encode() not in blob:
                lost.append(job_id)
        return lost

    def stale_running(self, silent_for: float, *, max_failures: int) -> list[tuple[str, str]]:
        """Running jobs with no write for `silent_for` seconds, put back in their queue: [(job_id, queue)]."""
        before = self._now() - silent_for
        recovered = []
        for job_id in map(redis_text, self.redis.zrangebyscore(keys.running_key(), "-inf", before)):
            queue, owner, address, worker = (redis_text(v) for v in self.redis.hmget(
                keys.job_key(job_id), ["queue", "owner", "address", "worker"]))
            outcome = redis_text(self._stale(
                keys=[keys.job_key(job_id), keys.queued_key(queue), keys.client_jobs_key(owner),
                      keys.address_jobs_key(address), keys.recent_jobs_key(), keys.running_key(),
                      keys.worker_jobs_key(worker), keys.steps_key(job_id)],
                args=[job_id, repr(before), self.ttl, max_failures]))
            if outcome == "queued":
                recovered.append((job_id, queue))
        return recovered

    def _now(self) -> float:
        seconds, micros = self.redis.time()
        return seconds + micros / 1e6
