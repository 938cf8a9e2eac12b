"""Lua shared by the scripts that change job state (each script is one atomic round trip).

Every key a script touches arrives in KEYS (built by contract.keys); time comes from the
Redis server (TIME), so hosts with skewed clocks agree on ages and liveness.
"""
from __future__ import annotations

PRELUDE = """
local function clock(given)
  if given and given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function is_terminal(status)
  return status == 'done' or status == 'failed' or status == 'cancelled'
end
-- End a job: terminal fields, out of its owner's caps, the running index and its worker, onto the recent list.
local function finish(job, steps, owner_key, address_key, recent_key, running_key, worker_jobs, id,
                      status, reason, text, err, now, ttl, recent_kept)
  redis.call('HSET', job, 'status', status, 'finish_reason', reason, 'text', text,
             'error', err, 'finished_at', now, 'updated_at', now)
  redis.call('EXPIRE', job, ttl)
  redis.call('EXPIRE', steps, ttl)
  redis.call('ZREM', owner_key, id)
  redis.call('ZREM', address_key, id)
  redis.call('ZREM', running_key, id)
  if worker_jobs ~= '' then redis.call('SREM', worker_jobs, id) end
  redis.call('LPUSH', recent_key, id)
  redis.call('LTRIM', recent_key, 0, recent_kept - 1)
end
-- Take a job back from a failed attempt: queued again (its place in line kept), failed once `max_failures`
-- attempts have failed, or cancelled when its owner asked that before the attempt saw it.
-- Returns 'queued', 'failed' or 'cancelled'.
local function recover(job, steps, queued_key, owner_key, address_key, recent_key, running_key, worker_jobs, id,
                       now, ttl, max_failures, counted, reason, recent_kept)
  if redis.call('HGET', job, 'cancel') == '1' then
    finish(job, steps, owner_key, address_key, recent_key, running_key, worker_jobs, id, 'cancelled', 'cancelled',
           redis.call('HGET', job, 'text') or '', '', now, ttl, recent_kept)
    return 'cancelled'
  end
  local failures = tonumber(redis.call('HGET', job, 'recoveries') or '0')
  if counted == '1' then failures = failures + 1 end
  redis.call('HSET', job, 'recoveries', failures)
  if failures >= tonumber(max_failures) then
    finish(job, steps, owner_key, address_key, recent_key, running_key, worker_jobs, id, 'failed', '',
           redis.call('HGET', job, 'text') or '',
           'gave up after ' .. failures .. ' failed attempts: ' .. reason, now, ttl, recent_kept)
    return 'failed'
  end
  redis.call('HSET', job, 'status', 'queued', 'worker', '', 'updated_at', now, 'requeued_at', now)
  redis.call('HDEL', job, 'swept_at')
  redis.call('ZADD', queued_key, tonumber(redis.call('HGET', job, 'created_at') or now), id)
  redis.call('ZREM', running_key, id)
  if worker_jobs ~= '' then redis.call('SREM', worker_jobs, id) end
  return 'queued'
end
"""
