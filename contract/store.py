"""JobStore: a job's lifecycle in Redis (create, claim, steps, finish, hand back, cancel).

State changes that must not race are Lua scripts, so each is one atomic round trip. Worker
liveness lives in contract.workers, lost-message and stale-job recovery in contract.recovery.

Steps are stored without their context: each carries the edit (keep, tail) that turns the
previous step's context into its own, so a job costs O(steps) in Redis and on the wire, and
`steps()` rebuilds every context exactly. Every CONTEXT_CHECKPOINT_STEPS steps the edit is the
whole context (keep 0), so a poll far into a long job rebuilds from the last such step before
it instead of from step 1.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum
from json.decoder import scanstring
from json.encoder import encode_basestring
from typing import Any, Callable, Iterable, NamedTuple

from redis.exceptions import ConnectionError as RedisConnectionError

from contract import keys, resp
from contract.defaults import PROGRESS_STAMP_SECONDS, RECENT_JOBS_KEPT, STEP_RATE_TTL_SECONDS
from contract.jobs import JobRequest, JobStatus
from contract.lua import PRELUDE
from contract.record import JobRecord, redis_text
from contract.steprecord import chosen_id, record_ids, to_step, unpack_record
from contract.vocab import TokenTexts

# KEYS: job, queued, owner_active, address_active, queued_models
# ARGV: id, now, ttl, max_queued, max_active, window, fields, max_address
_CREATE = PRELUDE + """
local fields = cjson.decode(ARGV[7])  -- first: a script that fails later keeps what it already wrote
local now = clock(ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'queue_full' end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 'client_busy' end
if tonumber(ARGV[8]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[8]) then return 'address_busy' end
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'created_at', now, 'updated_at', now)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[5], fields['model'])
redis.call('EXPIRE', KEYS[5], ARGV[3])
return 'ok'
"""

# KEYS: job, queued, owner_active, address_active, recent, running, worker_jobs, steps
# ARGV: id, now, ttl, max_queue_age, worker
_CLAIM = PRELUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  redis.call('ZREM', KEYS[2], ARGV[1])  -- expired while queued: no ghost entry stays behind
  return {'missing', 0}
end
if is_terminal(status) then
  redis.call('ZREM', KEYS[2], ARGV[1])  -- ended after it was put back in the queue: its entry goes too
  return {'terminal', 0}
end
local now = clock(ARGV[2])
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  finish(KEYS[1], KEYS[8], KEYS[3], KEYS[4], KEYS[5], KEYS[6], '', ARGV[1], 'cancelled', 'cancelled', '', '', now,
         ARGV[3], %(recent)d)
  return {'terminal', 0}
end
-- its wait in the queue: since it was queued last (put back after an attempt, or created)
local queued_at = tonumber(redis.call('HGET', KEYS[1], 'requeued_at') or redis.call('HGET', KEYS[1], 'created_at')
                         or now)
if status == 'queued' and now - queued_at > tonumber(ARGV[4]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  finish(KEYS[1], KEYS[8], KEYS[3], KEYS[4], KEYS[5], KEYS[6], '', ARGV[1], 'failed', '', '',
         'waited in the queue longer than ' .. ARGV[4] .. ' seconds; please submit it again', now, ARGV[3],
         %(recent)d)
  return {'expired', 0}
end
redis.call('ZREM', KEYS[2], ARGV[1])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'fence', attempt, 'worker', ARGV[5], 'updated_at', now)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if not redis.call('HGET', KEYS[1], 'started_at') then redis.call('HSET', KEYS[1], 'started_at', now) end
redis.call('ZADD', KEYS[6], now, ARGV[1])
redis.call('SADD', KEYS[7], ARGV[1])
return {'run', attempt}
""" % {"recent": RECENT_JOBS_KEPT}

FIELDS_PER_STEP = 2  # a steps hash holds each step's record (field N) and its context edit (field cN)

# KEYS: rate, vocabulary, then per job: job, steps
# ARGV: ttl, header, records, then token id and text pairs to add to the vocabulary
# header: per job, fence US index US record bytes US edit, jobs joined by US too (US = \31, which JSON always
# escapes); records: the jobs' binary records back to back (contract.steprecord).
# Per job: 0 stored, 1 stored and cancel asked, -1 refused (stale attempt), -2 refused (not the next index);
# then the vocabulary's size, so a worker sees when Redis lost it.
# Per step only the step itself is written: the job's count of steps is its steps hash's length (two fields a
# step), so the two can never disagree, and its `updated_at` (what stale recovery reads) is renewed at most
# every PROGRESS_STAMP_SECONDS. A job hash written at every step cost Redis more than the step (AOF included).
# TTLs are set at create, claim and finish (and on a job's steps when its first step is written). The vocabulary's TTL is
# renewed by every call, so it outlives every step that names its texts, and a model nobody serves any
# more does not keep its table for ever.
_APPEND_STEPS = PRELUDE + """
local now, header, records, pos, at = clock(''), ARGV[2], ARGV[3], 1, 1
local function field()
  local stop = string.find(header, '\\31', pos, true)
  local value = string.sub(header, pos, (stop or 0) - 1)
  pos = (stop or #header) + 1
  return value
end
local spread = unpack or table.unpack
for i = 4, #ARGV, 1000 do  -- new token texts, in slices the Lua stack holds
  redis.call('HSET', KEYS[2], spread(ARGV, i, math.min(i + 999, #ARGV)))
end
local answers, stored = {}, 0
for j = 0, (#KEYS - 2) / 2 - 1 do
  local job, steps = KEYS[3 + 2 * j], KEYS[4 + 2 * j]
  local fence, index, size, edit = field(), tonumber(field()), tonumber(field()), field()
  local record = string.sub(records, at, at + size - 1)
  at = at + size
  local state = redis.call('HMGET', job, 'fence', 'status', 'cancel', 'updated_at')
  if state[1] ~= fence or state[2] ~= 'running' then
    answers[j + 1] = -1
  elseif index ~= redis.call('HLEN', steps) / %(per_step)d + 1 then
    answers[j + 1] = -2
  else
    redis.call('HSET', steps, index, record, 'c' .. index, edit)
    if index == 1 then redis.call('EXPIRE', steps, ARGV[1]) end
    if now - tonumber(state[4] or '0') >= %(stamp_every)s then redis.call('HSET', job, 'updated_at', now) end
    stored = stored + 1
    answers[j + 1] = (state[3] == '1') and 1 or 0
  end
end
if stored > 0 then
  redis.call('INCRBY', KEYS[1], stored)
  redis.call('EXPIRE', KEYS[1], %(rate_ttl)d)
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
answers[#answers + 1] = redis.call('HLEN', KEYS[2])
return answers
""" % {"rate_ttl": STEP_RATE_TTL_SECONDS, "stamp_every": PROGRESS_STAMP_SECONDS, "per_step": FIELDS_PER_STEP}

# KEYS: job, owner_active, address_active, recent, running, worker_jobs, steps
# ARGV: id, fence, status, reason, text, error, now, ttl
# 1 when the attempt's end is stored, now or by the same call sent before (its reply lost); else 0. A job
# taken back to the queue keeps its fence until its next claim: its old attempt can no longer end it.
_FINISH = PRELUDE + """
local state = redis.call('HMGET', KEYS[1], 'fence', 'status')
if state[1] ~= ARGV[2] then return 0 end
if is_terminal(state[2]) then return (state[2] == ARGV[3]) and 1 or 0 end
if state[2] ~= 'running' then return 0 end
finish(KEYS[1], KEYS[7], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
       clock(ARGV[7]), ARGV[8], %(recent)d)
return 1
""" % {"recent": RECENT_JOBS_KEPT}

# KEYS: job, queued, owner_active, address_active, recent, running, worker_jobs, steps
# ARGV: id, fence, now, ttl, max_failures, counted (1|0), reason
_HAND_BACK = PRELUDE + """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 'stale'
end
return recover(KEYS[1], KEYS[8], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[1], clock(ARGV[3]), ARGV[4],
               ARGV[5], ARGV[6], ARGV[7], %(recent)d)
""" % {"recent": RECENT_JOBS_KEPT}

# KEYS: job, worker_jobs   ARGV: id, fence, worker
# The worker stops tracking the job only when this attempt is the current one or another worker holds it.
_RELEASE = """
local state = redis.call('HMGET', KEYS[1], 'fence', 'worker')
if state[1] == ARGV[2] or state[2] ~= ARGV[3] then return redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"""

# KEYS: job, queued, owner_active, address_active, recent, running, steps   ARGV: id, owner, now, ttl
_CANCEL = PRELUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 'forbidden' end
if is_terminal(status) then return status end
if status == 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  finish(KEYS[1], KEYS[7], KEYS[3], KEYS[4], KEYS[5], KEYS[6], '', ARGV[1], 'cancelled', 'cancelled', '', '',
         clock(ARGV[3]), ARGV[4], %(recent)d)
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 'cancelling'
""" % {"recent": RECENT_JOBS_KEPT}

# KEYS: job, queued, owner_active, address_active, recent, running, steps   ARGV: id, error, now, ttl
# Fail a job that no attempt has claimed (its message could not be sent, or no worker will come).
_FAIL_QUEUED = PRELUDE + """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
finish(KEYS[1], KEYS[7], KEYS[3], KEYS[4], KEYS[5], KEYS[6], '', ARGV[1], 'failed', '', '', ARGV[2], clock(ARGV[3]),
       ARGV[4], %(recent)d)
return 1
""" % {"recent": RECENT_JOBS_KEPT}

# read_steps(steps, since, upto, every) -> F, values: the context edits cF..c`upto` and the records
# since+1..upto of a steps hash, HMGET in slices the Lua stack holds (None where missing). F is the last
# checkpoint at or before since+1 when that edit holds a whole context ('0:'), else 1 (steps written
# without checkpoints); upto + 1 when nothing is new.
_READ_STEPS = """
local function read_steps(steps, since, upto, every)
  local first = math.floor(since / every) * every + 1
  if since >= upto then
    first = upto + 1  -- nothing new: no edit is needed
  elseif first > 1 and string.sub(redis.call('HGET', steps, 'c' .. first) or '', 1, 2) ~= '0:' then
    first = 1  -- written without checkpoints: from step 1
  end
  local fields = {}
  for i = first, upto do fields[#fields + 1] = 'c' .. i end
  for i = since + 1, upto do fields[#fields + 1] = tostring(i) end
  local spread, values = unpack or table.unpack, {}
  for at = 1, #fields, 1000 do
    local got = redis.call('HMGET', steps, spread(fields, at, math.min(at + 999, #fields)))
    for _, v in ipairs(got) do values[#values + 1] = v end
  end
  return first, values
end
"""

# KEYS: job, steps   ARGV: since, checkpoint steps
# A poll in one round trip: the job's fields, its count of stored steps N, then F and the values of
# read_steps up to N. An unknown job gives {}.
_VIEW = _READ_STEPS + """
local job = redis.call('HGETALL', KEYS[1])
if #job == 0 then return {} end
local done = redis.call('HLEN', KEYS[2]) / %(per_step)d
local first, values = read_steps(KEYS[2], tonumber(ARGV[1]), done, tonumber(ARGV[2]))
return {job, done, first, values}
""" % {"per_step": FIELDS_PER_STEP}

# KEYS: steps   ARGV: since, upto, checkpoint steps   ->   {F, values} of read_steps
_STEPS = _READ_STEPS + """
local first, values = read_steps(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {first, values}
"""


class QueueFull(Exception):
    """The model's queue holds the maximum number of waiting jobs."""


class ClientBusy(Exception):
    """The client (a session, or an address sending no cookie) already has its maximum of unfinished jobs."""


class ClaimOutcome(str, Enum):
    """What a worker's claim found."""

    RUN = "run"  # claimed: run it with the returned fence
    MISSING = "missing"  # no such job (expired)
    TERMINAL = "terminal"  # already ended (or cancelled before it ran)
    EXPIRED = "expired"  # waited longer than MAX_QUEUE_AGE_SECONDS; failed


class CancelOutcome(str, Enum):
    """What a cancel request did; the API returns the value."""

    CANCELLED = "cancelled"  # it was queued and is cancelled now
    CANCELLING = "cancelling"  # it runs and stops before its next step
    MISSING = "missing"
    FORBIDDEN = "forbidden"  # not the owner
    DONE = "done"  # already ended this way
    FAILED = "failed"


class HandBackOutcome(str, Enum):
    """What happened to a job an attempt gave back."""

    QUEUED = "queued"  # waiting again; publish a message for it
    FAILED = "failed"  # it had failed too often
    CANCELLED = "cancelled"  # its owner had asked to cancel it: it ends so, not queued again
    STALE = "stale"  # a newer attempt owns it (nothing to do)


class StepAnswer(int, Enum):
    """The store's answer to one step write."""

    STORED = 0
    CANCEL_ASKED = 1  # stored; the owner asked to cancel
    STALE = -1  # refused: a newer attempt owns the job
    GAP = -2  # refused: not the next index (Redis lost steps); resume from what it holds


_ANSWERS = {a.value: a for a in StepAnswer}


@dataclass(frozen=True)
class Claim:
    """The outcome of a worker claiming a job, with the fencing token of the attempt when RUN."""

    outcome: ClaimOutcome
    fence: int


class StepWrite(NamedTuple):
    """One step to store for one job attempt: its record (contract.steprecord) and its context edit."""

    job_id: str
    fence: int
    index: int
    record: bytes
    edit: str


@dataclass(frozen=True)
class StepWrites:
    """One batch step's writes, column by column: what a worker sends at every step (StepWrite is one row of it).

    `records` holds the binary records (contract.steprecord) back to back, `widths` the length of each.
    """

    job_ids: list[str]
    fences: list[int]
    indices: list[int]
    widths: list[int]
    records: bytes
    edits: list[str]

    @classmethod
    def of(cls, writes: "StepWrites | Iterable[StepWrite]") -> "StepWrites":
        """The columns of single writes (columns already are returned as they are)."""
        if isinstance(writes, StepWrites):
            return writes
        writes = list(writes)
        return cls([w.job_id for w in writes], [w.fence for w in writes], [w.index for w in writes],
                   [len(w.record) for w in writes], b"".join([w.record for w in writes]), [w.edit for w in writes])

    def __len__(self) -> int:
        return len(self.job_ids)


class JobEnd(NamedTuple):
    """How one job attempt ends (JobStore.finish_many)."""

    job_id: str
    fence: int
    status: JobStatus
    finish_reason: str = ""
    text: str = ""
    error: str = ""
    owner: str | None = None  # the job's owner and address, when the caller knows them (saves looking them up)
    address: str | None = None


class StepAnswers(list):
    """The store's answers to a batch of step writes, one StepAnswer per write, and the vocabulary's size after it."""

    def __init__(self, answers: Iterable[StepAnswer], vocabulary_size: int) -> None:
        super().__init__(answers)
        self.vocabulary_size = vocabulary_size


class StepLane:
    """send_steps' own connection: calls on it are answered in the order sent.

    Once a call on it fails, the replies still due on it cannot be told apart: every call sent
    before the failure and not yet answered reads as lost (its SentSteps raises), and later calls
    go on a new connection.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.connection = None  # made on first use
        self.epoch = 0  # failures so far: a call sent in an earlier epoch lost its reply

    def send(self, command: bytes) -> int:
        """Send a framed command (contract.resp), not reading its reply; returns the epoch its SentSteps must match."""
        if self.connection is None:
            self.connection = self.pool.get_connection()
        try:
            # no health check: its PING would read a reply still due here as its own, and shift the ones after it
            self.connection.send_packed_command([command], check_health=False)
        except BaseException:
            self.lost()  # part of the call may have left
            raise
        return self.epoch

    def lost(self) -> None:
        """A call failed: drop the connection, and with it every reply still due on it."""
        self.connection.disconnect()
        self.epoch += 1


class SentSteps:
    """A batch step's append on its way to Redis (JobStore.send_steps); `answers()` reads the reply, once."""

    def __init__(self, lane: StepLane, epoch: int) -> None:
        self._lane = lane
        self._epoch = epoch

    @property
    def live(self) -> bool:
        """Whether its reply can still come: the connection it was sent on has lost no reply since."""
        return self._epoch == self._lane.epoch

    def answers(self) -> StepAnswers:
        """Redis's answers to the call.

        Raises:
            redis ConnectionError or TimeoutError: the reply did not come, or a call sent before it
                lost its reply (the steps may or may not be stored).
        """
        if not self.live:
            raise RedisConnectionError("an earlier reply on the step connection was lost")
        try:
            reply = self._lane.connection.read_response()
        except BaseException:
            self._lane.lost()  # a late reply must never be read as the answer to another call
            raise
        return _step_answers(reply)


def _step_answers(reply: list) -> StepAnswers:
    return StepAnswers([_ANSWERS[a] for a in reply[:-1]], int(reply[-1]))


FIELD_SEPARATOR = "\x1f"  # between the fields of a batch of step writes; JSON never holds it raw


def context_edit(keep: int, tail: str) -> str:
    """The stored form of a context edit, `keep:"tail"` (tail as a JSON string): context = previous[:keep] + tail."""
    return f"{keep}:{encode_basestring(tail)}"


CONTEXT_CHECKPOINT_STEPS = 32  # steps 1, 33, 65, ... store their whole context (an edit with keep 0)


def checkpoint_before(index: int) -> int:
    """The last step at or before `index` (>= 1) whose stored edit is a whole context."""
    return (index - 1) // CONTEXT_CHECKPOINT_STEPS * CONTEXT_CHECKPOINT_STEPS + 1


def _rebuild(edits: list, records: list, since: int, first: int = 1) -> list[tuple[int, str, tuple[float, ...]]]:
    """(index, context, record values) for the records after `since`, from edits c`first`..cN (c`first` a whole
    context); stops at a hole."""
    context, out = "", []
    for index, edit in enumerate(edits, start=first):
        if edit is None:  # a hole (Redis lost steps): nothing after it can be rebuilt
            break
        context = _apply_edit(context, edit)
        if index > since:
            record = records[index - since - 1]
            if record is None:
                break
            out.append((index, context, unpack_record(record)))
    return out


def _apply_edit(context: str, edit: bytes | str) -> str:
    """The context after a stored edit (parsed without the full JSON decoder: this runs for every step read)."""
    text = edit.decode() if isinstance(edit, bytes) else edit
    colon = text.index(":")
    return context[: int(text[:colon])] + scanstring(text, colon + 2)[0]


class JobStore:
    """Job state in Redis. The connection is injected (a real server, or fakeredis in unit tests)."""

    def __init__(self, redis: Any, ttl_seconds: int = 86400) -> None:
        self.texts = TokenTexts(redis)
        self._writing: dict[str, bytes] = {}
        self._lane = StepLane(redis.connection_pool)
        self.redis = redis
        self.ttl = ttl_seconds
        self.clock_offset = 0.0  # Redis's clock minus this host's, kept by a worker's heartbeat
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._append_head = [resp.bulk(b"EVAL"), resp.bulk(_APPEND_STEPS.encode())]
        self._finish = redis.register_script(_FINISH)
        self._hand_back = redis.register_script(_HAND_BACK)
        self._release = redis.register_script(_RELEASE)
        self._cancel = redis.register_script(_CANCEL)
        self._fail_queued = redis.register_script(_FAIL_QUEUED)
        self._view = redis.register_script(_VIEW)
        self._steps = redis.register_script(_STEPS)

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
        address: str = "",
        max_per_address: int = 0,
        now: float | None = None,
    ) -> None:
        """Store a new queued job, enforcing the queue cap and the owner's active-job cap.

        `address` with `max_per_address` > 0 also charges the job to that address (for clients that
        send no session cookie, so dropping the cookie cannot dodge the cap).

        Raises:
            QueueFull: the model's queue is at `max_queued`.
            ClientBusy: `owner` (or `address`) has its maximum of unfinished jobs (ignoring ones
                older than `active_window` s).
        """
        params = request.params.to_dict() | {"seed": seed}
        fields = {
            "id": job_id,
            "status": JobStatus.QUEUED.value,
            "prompt": request.prompt,
            "params": json.dumps(params),
            "model": model,
            "queue": queue,
            "owner": owner,
            "address": address if max_per_address > 0 else "",
            "steps_total": request.params.steps,
            "attempt": 0,
            "recoveries": 0,
            "forced_ids": json.dumps(list(request.forced_ids)),
            "branch": json.dumps(request.branch.to_dict() if request.branch else None),
            "room": request.room or "",  # class room code ("" outside a room)
            "nickname": request.nickname,
            "score": request.score or "",  # text to score ("" for generation jobs)
            "guess": "1" if request.guess else "",  # guess mode (the page and the projector hide un-guessed steps)
        }
        result = self._create(
            keys=[keys.job_key(job_id), keys.queued_key(queue), keys.client_jobs_key(owner),
                  keys.address_jobs_key(address), keys.queued_models_key()],
            args=[job_id, _time(now), self.ttl, max_queued, max_active, active_window, json.dumps(fields),
                  max_per_address],
        )
        outcome = redis_text(result)
        if outcome == "queue_full":
            raise QueueFull(queue)
        if outcome in ("client_busy", "address_busy"):
            raise ClientBusy(owner if outcome == "client_busy" else address)

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None when unknown or expired."""
        with self.redis.pipeline(transaction=False) as pipe:
            raw, fields = pipe.hgetall(keys.job_key(job_id)).hlen(keys.steps_key(job_id)).execute()
        return JobRecord.from_redis(raw, steps_done=fields // FIELDS_PER_STEP) if raw else None

    def steps(self, job_id: str, since: int, upto: int, model: str) -> list[dict[str, Any]]:
        """Stored steps with since < index <= upto, in order, as the API shows them (`model`: the job's model).

        Each step's `context` is rebuilt from the edits; token texts come from the model's vocabulary table.
        """
        return self._as_api(self._stored(job_id, since, upto), model)

    def _as_api(self, stored: list[tuple[int, str, tuple[float, ...]]], model: str) -> list[dict[str, Any]]:
        """Stored steps as the API shows them, with their contexts and their tokens' texts."""
        texts = self.texts.of(model, (i for _, _, values in stored for i in record_ids(values)))
        out = []
        for index, context, values in stored:
            step = to_step(values, index, texts)
            step["context"] = context
            out.append(step)
        return out

    def chosen_ids(self, job_id: str, upto: int) -> list[int]:
        """The token ids chosen at steps 1..upto (what a resumed attempt continues from)."""
        return [chosen_id(values) for _, _, values in self._stored(job_id, 0, upto)]

    def view(self, job_id: str, since: int,
             readable: Callable[[JobRecord], int] | None = None) -> tuple[JobRecord, list[dict[str, Any]]] | None:
        """The job and its steps after `since`, as `get` and `steps` give them, in one round trip (a poll).

        `readable(job)`: the last step index the reader may see (default: every step); later ones are not decoded.
        """
        reply = self._view(keys=[keys.job_key(job_id), keys.steps_key(job_id)],
                           args=[since, CONTEXT_CHECKPOINT_STEPS])
        if not reply:
            return None
        pairs, done, first, values = reply
        job = JobRecord.from_redis(dict(zip(pairs[::2], pairs[1::2])), steps_done=done)
        edits = max(job.steps_done - first + 1, 0)
        edit_values, records = values[:edits], values[edits:]
        if readable is not None:
            upto = readable(job)
            edit_values, records = edit_values[:max(upto - first + 1, 0)], records[:max(upto - since, 0)]
        return job, self._as_api(_rebuild(edit_values, records, since, first), job.model)

    def _stored(self, job_id: str, since: int, upto: int) -> list[tuple[int, str, tuple[float, ...]]]:
        """(index, context, record values) of the stored steps since < index <= upto, up to the first hole."""
        if upto <= since:
            return []
        first, values = self._steps(keys=[keys.steps_key(job_id)], args=[since, upto, CONTEXT_CHECKPOINT_STEPS])
        edits = upto - first + 1
        return _rebuild(values[:edits], values[edits:], since, first)

    def queue_position(self, job_id: str, queue: str) -> int | None:
        """1-based position among the jobs waiting in `queue`, or None when not waiting."""
        rank = self.redis.zrank(keys.queued_key(queue), job_id)
        return None if rank is None else rank + 1

    def cancel(self, job_id: str, owner: str) -> CancelOutcome:
        """Cancel for `owner`: queued jobs end at once, running ones stop before their next step."""
        job_keys = self._job_keys(job_id)
        if job_keys is None:
            return CancelOutcome.MISSING
        result = self._cancel(keys=job_keys, args=[job_id, owner, "", self.ttl])
        return CancelOutcome(redis_text(result))

    def fail_queued(self, job_id: str, error: str) -> bool:
        """Fail a job still waiting (message not sent, or no worker for its model); False if it moved on."""
        job_keys = self._job_keys(job_id)
        if job_keys is None:
            return False
        return bool(int(self._fail_queued(keys=job_keys, args=[job_id, error, "", self.ttl])))

    # -- worker side ----------------------------------------------------------------------

    def claim(self, job_id: str, worker: str, queue: str, *, max_queue_age: float) -> Claim:
        """Start an attempt: bump the attempt counter and take it as this attempt's fencing token.

        A later attempt (redelivery) takes a higher token, after which this attempt's writes are refused.
        """
        job_keys = self._job_keys(job_id) or self._missing_keys(job_id, queue)
        outcome, fence = self._claim(keys=job_keys[:6] + [keys.worker_jobs_key(worker), job_keys[6]],
                                     args=[job_id, "", self.ttl, max_queue_age, worker])
        return Claim(ClaimOutcome(redis_text(outcome)), int(fence))

    def hand_back(self, job_id: str, fence: int, worker: str, *, max_failures: int, counted: bool,
                  reason: str) -> HandBackOutcome:
        """Give a running job back to the queue (atomically), or fail it after `max_failures` failed attempts.

        `counted` says whether this attempt failed (an error, a dead worker) or was merely
        interrupted (a worker shutting down), which does not use up an attempt.
        """
        job_keys = self._job_keys(job_id)
        if job_keys is None:
            return HandBackOutcome.STALE
        result = self._hand_back(keys=job_keys[:6] + [keys.worker_jobs_key(worker), job_keys[6]],
                                 args=[job_id, fence, "", self.ttl, max_failures, int(counted), reason])
        return HandBackOutcome(redis_text(result))

    def release(self, job_id: str, fence: int, worker: str) -> None:
        """This attempt no longer runs the job; the worker stops tracking it unless a newer attempt of its own does."""
        self._release(keys=[keys.job_key(job_id), keys.worker_jobs_key(worker)], args=[job_id, fence, worker])

    def set_fields(self, job_id: str, fence: int, **fields: Any) -> bool:
        """Set informational fields (e.g. prompt_tokens) if `fence` is still current."""
        job = keys.job_key(job_id)
        if redis_text(self.redis.hget(job, "fence")) != str(fence):
            return False
        self.redis.hset(job, mapping={k: json.dumps(v) for k, v in fields.items()})
        return True

    def text_so_far(self, job: JobRecord) -> str:
        """The prompt and the tokens the job's stored steps chose: the text of a running job, or of one that
        ended without its worker writing its text (recovery failed or cancelled it)."""
        if not job.steps_done:
            return job.prompt
        last = self.steps(job.id, job.steps_done - 1, job.steps_done, job.model)
        return last[0]["context"] + last[0]["chosen"]["token"] if last else job.prompt

    def append_steps(self, writes: StepWrites | Iterable[StepWrite], model: str = "",
                     texts: dict[int, str] | None = None) -> StepAnswers:
        """Store one step for each job in a single fenced script call (one round trip per batch step).

        `texts` (token id -> display text) are added to `model`'s vocabulary table in the same call,
        so no record is visible before the texts it needs. The header travels as one argument and the
        records as another, so a batch of hundreds of jobs costs the client a few joins, not
        thousands of arguments to encode.
        """
        batch = StepWrites.of(writes)
        if not len(batch):
            return StepAnswers([], -1)
        return _step_answers(self._call_framed(self._append_command(batch, model, texts)))

    def send_steps(self, writes: StepWrites | Iterable[StepWrite], model: str = "",
                   texts: dict[int, str] | None = None) -> SentSteps:
        """`append_steps` without waiting for Redis: the call leaves now, `SentSteps.answers()` reads the reply.

        A worker computes its next batch step while Redis stores this one. The calls go on the
        store's own step connection, so it is for one thread (a worker's batch runner); several may
        be in flight, and their answers are read in the order the calls were sent.
        """
        return SentSteps(self._lane, self._lane.send(self._append_command(StepWrites.of(writes), model, texts)))

    def _append_command(self, writes: StepWrites, model: str, texts: dict[int, str] | None) -> bytes:
        """The append script's call, framed: KEYS [rate, vocabulary, job, steps, ...], ARGV [ttl, header, records,
        texts...]. Each job's two keys are framed once and kept (JobStore._step_keys).

        EVAL, not EVALSHA: a server that forgot its scripts (a restart) still runs every call in the
        order sent, where a refused EVALSHA sent again would land behind the calls sent after it.
        """
        sep = FIELD_SEPARATOR
        header = sep.join([f"{fence}{sep}{index}{sep}{width}{sep}{edit}" for fence, index, width, edit
                           in zip(writes.fences, writes.indices, writes.widths, writes.edits)])
        argv = [b"%d" % self.ttl, header.encode(), writes.records]
        argv += [part for token_id, text in (texts or {}).items() for part in (b"%d" % token_id, text.encode())]
        rate = keys.step_rate_key(int(time.time() + self.clock_offset))  # the second on Redis's clock, as read
        job_keys = [self._step_keys(job_id) for job_id in writes.job_ids]
        return b"".join([resp.array(5 + 2 * len(writes) + len(argv)), *self._append_head,
                         resp.bulk(b"%d" % (2 + 2 * len(writes))), resp.bulk(rate.encode()),
                         resp.bulk(keys.vocab_key(model).encode()), *job_keys, *[resp.bulk(value) for value in argv]])

    def _call_framed(self, command: bytes) -> Any:
        """Send a framed command on a pooled connection and read its reply."""
        pool = self.redis.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([command])
            return connection.read_response()
        except BaseException:
            connection.disconnect()  # its reply may still be due: the connection is not used again
            raise
        finally:
            pool.release(connection)

    def add_texts(self, model: str, texts: dict[int, str]) -> int:
        """Add token texts to `model`'s vocabulary table, in slices of 10,000; returns how many were sent.

        The table lives as long as a job's steps (the TTL), renewed by every step write.
        """
        items = list(texts.items())
        with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(items), 10_000):
                pipe.hset(keys.vocab_key(model), mapping=dict(items[start:start + 10_000]))
            pipe.expire(keys.vocab_key(model), self.ttl)
            pipe.execute()
        return len(items)

    def finish(self, job_id: str, fence: int, worker: str, status: JobStatus, *, finish_reason: str = "",
               text: str = "", error: str = "") -> bool:
        """End the attempt holding `fence`; False when a newer attempt owns the job or it ended otherwise."""
        return self.finish_many(worker, [JobEnd(job_id, fence, status, finish_reason, text, error)])[0]

    def finish_many(self, worker: str, ends: list[JobEnd]) -> list[bool]:
        """`finish` for many attempts, answers in order, in one round trip.

        Ends that do not carry their job's owner and address take one more round trip to look them up.
        """
        unknown = [end for end in ends if end.owner is None or end.address is None]
        found = {}
        if unknown:
            with self.redis.pipeline(transaction=False) as pipe:
                for end in unknown:
                    pipe.hmget(keys.job_key(end.job_id), ["owner", "address"])
                found = {end.job_id: [redis_text(v) if v is not None else None for v in fields]
                         for end, fields in zip(unknown, pipe.execute())}
        done = [False] * len(ends)
        with self.redis.pipeline(transaction=False) as pipe:
            calls = []
            for i, end in enumerate(ends):
                owner, address = found.get(end.job_id, (end.owner, end.address))
                if owner is None:  # the job is gone (expired)
                    continue
                job_keys = [keys.job_key(end.job_id), keys.client_jobs_key(owner),
                            keys.address_jobs_key(address or ""), keys.recent_jobs_key(), keys.running_key(),
                            keys.worker_jobs_key(worker), keys.steps_key(end.job_id)]
                self._finish(keys=job_keys, args=[end.job_id, end.fence, end.status.value, end.finish_reason, end.text,
                                                  end.error, "", self.ttl], client=pipe)
                calls.append(i)
            for i, result in zip(calls, pipe.execute() if calls else []):
                done[i] = bool(int(result))
        return done

    # -- keys -------------------------------------------------------------------------------

    def _step_keys(self, job_id: str) -> bytes:
        """A job's job key and steps key, framed once (contract.resp): a worker names them at every step."""
        found = self._writing.get(job_id)
        if found is None:
            if len(self._writing) >= 4096:  # jobs come and go: start afresh rather than track which ended
                self._writing.clear()
            found = self._writing[job_id] = (resp.bulk(keys.job_key(job_id).encode())
                                             + resp.bulk(keys.steps_key(job_id).encode()))
        return found

    def _job_keys(self, job_id: str) -> list[str] | None:
        """[job, queued, owner_active, address_active, recent, running, steps] for an existing job."""
        queue, owner, address = self.redis.hmget(keys.job_key(job_id), ["queue", "owner", "address"])
        if queue is None:
            return None
        return [keys.job_key(job_id), keys.queued_key(redis_text(queue)), keys.client_jobs_key(redis_text(owner)),
                keys.address_jobs_key(redis_text(address)), keys.recent_jobs_key(), keys.running_key(),
                keys.steps_key(job_id)]

    def _missing_keys(self, job_id: str, queue: str) -> list[str]:
        """Keys for a job whose hash is gone (expired): the claimer's queue, so its entry there is removed."""
        return [keys.job_key(job_id), keys.queued_key(queue), keys.client_jobs_key(""), keys.address_jobs_key(""),
                keys.recent_jobs_key(), keys.running_key(), keys.steps_key(job_id)]


def _time(now: float | None) -> str:
    return "" if now is None else repr(now)
