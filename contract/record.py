"""JobRecord: one job as stored in Redis, typed; the store reads it, the web presents it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from contract.jobs import TERMINAL, Branch, GenerationParams, JobStatus


@dataclass(frozen=True)
class JobRecord:
    """A job's hash, decoded.

    Attributes:
        attempt: claims so far (each claim takes it as its fencing token).
        recoveries: times the job was taken back from a failed attempt (dead worker, error, stale);
            MAX_ATTEMPTS caps this, not deliveries.
        fence: the attempt currently allowed to write (0 before the first claim).
        extra: fields this version does not know, kept so nothing stored is lost.
    """

    id: str
    status: JobStatus
    prompt: str
    params: GenerationParams
    model: str
    queue: str
    owner: str
    created_at: float
    updated_at: float
    steps_total: int
    steps_done: int = 0
    attempt: int = 0
    recoveries: int = 0
    fence: int = 0
    worker: str = ""
    text: str = ""
    error: str = ""
    finish_reason: str = ""
    forced_ids: tuple[int, ...] = ()
    branch: Branch | None = None
    prompt_tokens: list[dict[str, Any]] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    room: str = ""  # class room code ("" outside a room)
    nickname: str = ""  # the student's name in the room
    score: str = ""  # the text a score job scores ("" for generation jobs)
    score_tokens: int | None = None  # how many tokens that text has, once a worker has read it
    guess: bool = False  # guess mode: the student guesses each step before it is shown
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.status in TERMINAL

    @classmethod
    def from_redis(cls, raw: dict[Any, Any], steps_done: int) -> "JobRecord":
        """Decode HGETALL's answer (bytes or str keys and values); `steps_done` is counted from the steps stored."""
        f = {redis_text(k): redis_text(v) for k, v in raw.items()}
        f.pop("steps_done", None)  # a counter that versions before 2026-11-27 kept in the job hash
        branch = json.loads(f.pop("branch", "null"))
        known = {
            "id": f.pop("id"),
            "status": JobStatus(f.pop("status")),
            "prompt": f.pop("prompt", ""),
            "params": GenerationParams.from_dict(json.loads(f.pop("params", "{}"))),
            "model": f.pop("model", ""),
            "queue": f.pop("queue", ""),
            "owner": f.pop("owner", ""),
            "created_at": float(f.pop("created_at", 0)),
            "updated_at": float(f.pop("updated_at", 0)),
            "steps_total": int(f.pop("steps_total", 0)),
            "steps_done": steps_done,
            "attempt": int(f.pop("attempt", 0)),
            "recoveries": int(f.pop("recoveries", 0)),
            "fence": int(f.pop("fence", 0) or 0),
            "worker": f.pop("worker", ""),
            "text": f.pop("text", ""),
            "error": f.pop("error", ""),
            "finish_reason": f.pop("finish_reason", ""),
            "forced_ids": tuple(json.loads(f.pop("forced_ids", "[]"))),
            "branch": Branch(**branch) if branch else None,
            "prompt_tokens": json.loads(f.pop("prompt_tokens")) if "prompt_tokens" in f else None,
            "started_at": float(f.pop("started_at")) if f.get("started_at") else None,
            "finished_at": float(f.pop("finished_at")) if f.get("finished_at") else None,
            "room": f.pop("room", ""),
            "nickname": f.pop("nickname", ""),
            "score": f.pop("score", ""),
            "score_tokens": int(f.pop("score_tokens")) if "score_tokens" in f else None,
            "guess": f.pop("guess", "") == "1",
        }
        f.pop("started_at", None)
        f.pop("finished_at", None)
        return cls(**known, extra=f)


def redis_text(value: Any) -> str:
    """A Redis reply as text: bytes decoded, None as ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
