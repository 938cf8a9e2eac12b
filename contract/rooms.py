"""Class rooms: a teacher's room that students join by code, and where rooms live in Redis.

A room holds a title, a prompt and step-loop parameters. Students submit jobs "in" it; when the
room is locked its prompt and parameters win over what they send, and with `same_prompt` only its
prompt does. Rooms expire (ROOM_TTL_SECONDS) and can be closed; a closed room takes no new jobs
but its teacher still sees it. Standard library + redis client only (the web imports it).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from contract import keys
from contract.defaults import ROOM_MAX_JOBS
from contract.jobs import (GenerationParams, JobRequest, Limits, ValidationError, check_body, plain_text_problem,
                           text_problem, validate_params)
from contract.record import redis_text

ROOM_FIELDS = ("title", "prompt", "steps", "top_k", "temperature", "top_p", "locked", "same_prompt", "guess")
SWITCHES = ("locked", "same_prompt", "guess")
MAX_TITLE_CHARS = 80
CODE_ATTEMPTS = 20  # fresh codes tried before giving up (31^6 codes: a clash is already rare)


@dataclass(frozen=True)
class Room:
    """A class room.

    Attributes:
        code: the 6-character join code.
        title: shown to students on the join page and their job pages.
        prompt: pre-filled in the students' form ("" lets each student type one).
        params: pre-filled parameters (seed unset: each student draws their own samples).
        locked: the room's prompt and params replace what students send.
        same_prompt: the room's prompt replaces what students send (params stay theirs).
        guess: students' job pages start in "guess the next token" mode.
        closed: the teacher closed the room; it takes no new jobs.
        created_at, expires_at: time.time() values.
    """

    code: str
    title: str
    prompt: str
    params: GenerationParams
    locked: bool = False
    same_prompt: bool = False
    guess: bool = False
    closed: bool = False
    created_at: float = 0.0
    expires_at: float = 0.0

    def apply(self, request: JobRequest) -> JobRequest:
        """The request as this room runs it: a locked room's prompt and params win, `same_prompt` its prompt, and
        guess mode, when on, is set on jobs that generate (the room's switch as it is now)."""
        if self.guess and request.score is None:
            request = dataclasses.replace(request, guess=True)
        if self.locked:
            params = dataclasses.replace(self.params, seed=request.params.seed)
            if request.score is not None:  # a score job runs one step per token of its text
                params = dataclasses.replace(params, steps=request.params.steps)
            return dataclasses.replace(request, prompt=self.prompt, params=params)
        if self.same_prompt:
            return dataclasses.replace(request, prompt=self.prompt)
        return request

    def to_dict(self) -> dict[str, Any]:
        """The API view (params without seed), with the students' and the teacher's links."""
        params = self.params.to_dict()
        params.pop("seed")
        return {
            "code": self.code, "title": self.title, "prompt": self.prompt, "params": params,
            "locked": self.locked, "same_prompt": self.same_prompt, "guess": self.guess, "closed": self.closed,
            "created_at": self.created_at, "expires_at": self.expires_at,
            "url": f"/r/{self.code}", "teacher_url": f"/rooms/{self.code}",
        }


def validate_room_request(data: Any, limits: Limits = Limits(), current: Room | None = None) -> dict[str, Any]:
    """Check a teacher's JSON body for creating (current None) or changing a room.

    Returns:
        The Room fields to set: title, prompt, params (a GenerationParams), locked, same_prompt, guess;
        when changing, only those the body names.

    Raises:
        ValidationError: naming the first offending field.
    """
    check_body(data, ROOM_FIELDS)
    changes: dict[str, Any] = {}
    if "title" in data or current is None:
        changes["title"] = _text_field(data, "title", MAX_TITLE_CHARS, one_line=True)
    if "prompt" in data or current is None:
        changes["prompt"] = _text_field(data, "prompt", limits.max_prompt_chars, one_line=False)
    if any(name in data for name in ("steps", "top_k", "temperature", "top_p")) or current is None:
        base = current.params.to_dict() if current else {}
        given = {k: data[k] for k in ("steps", "top_k", "temperature", "top_p") if k in data}
        changes["params"] = validate_params({k: v for k, v in (base | given).items() if k != "seed"}, limits)
    for name in SWITCHES:
        if name in data:
            if not isinstance(data[name], bool):
                raise ValidationError(name, f"{name} must be true or false", "type")
            changes[name] = data[name]
    prompt = changes.get("prompt", current.prompt if current else "")
    locked = changes.get("locked", current.locked if current else False)
    same = changes.get("same_prompt", current.same_prompt if current else False)
    if (locked or same) and not prompt.strip():
        raise ValidationError("prompt", "a room whose prompt is the same for everyone needs a prompt", "empty")
    return changes


def _text_field(data: dict[str, Any], name: str, limit: int, one_line: bool) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} must be a string", "type")
    value = value.strip() if one_line else value
    if len(value) > limit:
        raise ValidationError(name, f"{name} may have at most {limit} characters", "too_long")
    problem = text_problem(value) or (plain_text_problem(value) if one_line else None)
    if problem:
        raise ValidationError(name, f"{name} {problem}", "invalid")
    return value


# KEYS: room   ARGV: ttl, fields(json). Creates the room only when the code is free.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: room, room_jobs   ARGV: job_id, now, expires_at. Adds a job to an open room, atomically with the check.
_ADD_JOB = """
if redis.call('HGET', KEYS[1], 'closed') ~= '0' then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIREAT', KEYS[2], math.ceil(tonumber(ARGV[3])))
return 1
"""


class RoomStore:
    """Rooms and their job index in Redis (a real server, or fakeredis in unit tests)."""

    def __init__(self, redis: Any, ttl_seconds: int = 12 * 3600) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self._create = redis.register_script(_CREATE)
        self._add_job = redis.register_script(_ADD_JOB)

    def create(self, fields: dict[str, Any], now: float | None = None) -> Room:
        """Store a new open room with a fresh code; `fields` as validate_room_request returns them."""
        now = time.time() if now is None else now
        for _ in range(CODE_ATTEMPTS):
            room = Room(code=keys.new_room_code(), created_at=now, expires_at=now + self.ttl, **fields)
            if self._create(keys=[keys.room_key(room.code)], args=[self.ttl, json.dumps(_encode(room))]):
                return room
        raise RuntimeError("no free room code found")  # practically unreachable with 887 million codes

    def get(self, code: str, now: float | None = None) -> Room | None:
        """The room, or None when unknown or expired (closed rooms are returned, marked closed)."""
        raw = self.redis.hgetall(keys.room_key(code))
        if not raw:
            return None
        room = _decode(raw)
        return room if room.expires_at > (time.time() if now is None else now) else None

    def update(self, code: str, changes: dict[str, Any]) -> None:
        """Change an existing room's fields (title, prompt, params, switches); its expiry stays."""
        room = self.get(code)
        if room is None or not changes:  # HSET needs at least one field
            return
        encoded = _encode(dataclasses.replace(room, **changes))
        self.redis.hset(keys.room_key(code), mapping={k: encoded[k] for k in changes})

    def close(self, code: str) -> None:
        """Close the room: it takes no new jobs; the teacher still sees it until it expires."""
        if self.redis.exists(keys.room_key(code)):
            self.redis.hset(keys.room_key(code), "closed", "1")

    def add_job(self, room: Room, job_id: str, now: float | None = None) -> str:
        """Index a job under its room: "added", or "closed" (closed or expired meanwhile), or "full" (it holds
        ROOM_MAX_JOBS: every projector refresh reads them all)."""
        now = time.time() if now is None else now
        added = self._add_job(keys=[keys.room_key(room.code), keys.room_jobs_key(room.code)],
                              args=[job_id, repr(now), repr(room.expires_at), ROOM_MAX_JOBS])
        return {1: "added", 0: "closed", -1: "full"}[int(added)]

    def job_ids(self, code: str) -> list[str]:
        """The room's job ids, oldest first."""
        return [redis_text(j) for j in self.redis.zrange(keys.room_jobs_key(code), 0, -1)]

    def record_guess(self, job_id: str, step: int, guess: dict[str, Any], ttl: int) -> tuple[bool, dict[str, Any]]:
        """Keep a student's first guess for a step of their job: (True, it), or (False, the guess kept before)."""
        key = keys.job_guesses_key(job_id)
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, str(step), json.dumps(guess))
        pipe.hget(key, str(step))
        pipe.expire(key, ttl)
        added, kept, _ = pipe.execute()
        return bool(added), json.loads(kept)

    def guesses(self, job_ids: list[str], step: int) -> dict[str, dict[str, Any]]:
        """The guess each job's student made at `step` (jobs without one are left out)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job_guesses_key(job_id), str(step))
        return {j: json.loads(v) for j, v in zip(job_ids, pipe.execute()) if v is not None}

    def guessed_steps(self, job_ids: list[str]) -> dict[str, int]:
        """How many of each job's first steps its student has guessed, in order (steps 1..n are shown to them), in one
        round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hkeys(keys.job_guesses_key(job_id))
        return {j: _prefix({int(redis_text(k)) for k in steps}) for j, steps in zip(job_ids, pipe.execute())}

    def all_guesses(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Every guess made on one job, by step."""
        raw = self.redis.hgetall(keys.job_guesses_key(job_id))
        return {int(redis_text(k)): json.loads(v) for k, v in raw.items()}


def _prefix(steps: set[int]) -> int:
    """n where steps 1..n are all in `steps` and n + 1 is not."""
    n = 0
    while n + 1 in steps:
        n += 1
    return n


def _encode(room: Room) -> dict[str, str]:
    return {
        "code": room.code, "title": room.title, "prompt": room.prompt, "params": json.dumps(room.params.to_dict()),
        "locked": str(int(room.locked)), "same_prompt": str(int(room.same_prompt)), "guess": str(int(room.guess)),
        "closed": str(int(room.closed)), "created_at": repr(room.created_at), "expires_at": repr(room.expires_at),
    }


def _decode(raw: dict[Any, Any]) -> Room:
    f = {redis_text(k): redis_text(v) for k, v in raw.items()}
    return Room(
        code=f["code"], title=f["title"], prompt=f["prompt"], params=GenerationParams.from_dict(json.loads(f["params"])),
        locked=f["locked"] == "1", same_prompt=f["same_prompt"] == "1", guess=f["guess"] == "1",
        closed=f["closed"] == "1", created_at=float(f["created_at"]), expires_at=float(f["expires_at"]),
    )
