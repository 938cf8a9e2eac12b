"""Service settings, read from the environment and an optional `.env` file."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL_PATH = PROJECT_ROOT / "models" / "demo"
DTYPES = ("auto", "float32", "bfloat16", "float16")  # DTYPE values (torch's names)
WORKER_POOLS = ("threads", "solo")  # Celery pools that share the worker's one model and batch runner
AT_LEAST_ONE = ("workers_per_host", "max_batch", "heartbeat_seconds", "web_workers", "max_steps", "max_top_k",
                "max_attempts", "max_prompt_chars", "max_prompt_tokens", "max_content_length", "job_deadline_seconds",
                "max_queue_age_seconds", "max_queued_jobs", "max_active_jobs_per_client", "room_ttl_seconds")
AT_LEAST_ZERO = ("torch_threads", "trusted_proxies",  # 0: a share of the cores; no proxy
                 "max_active_jobs_per_address", "queued_without_worker_seconds")  # 0: no cap; at once
_RATE = r"\s*\d+\s*(?:/|per)\s*(?:\d+\s*)?(?:second|minute|hour|day|month|year)s?\s*"
RATE_LIMITS = re.compile(rf"{_RATE}(?:[;,|]{_RATE})*", re.IGNORECASE)  # Flask-Limiter's rate strings


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service; field names are the environment variable names in lower case."""

    redis_url: str = ""  # empty: `make run` starts the embedded Redis and sets this
    model_name: str = str(DEMO_MODEL_PATH)  # local path or Hugging Face hub id
    hf_token: str = ""  # for gated models; never logged or shown
    device: str = "auto"  # auto | cpu | cuda; auto picks cuda (bf16) when present
    torch_threads: int = 0  # CPU threads per worker for torch; 0 = this machine's cores split among WORKERS_PER_HOST workers + web/Redis
    workers_per_host: int = 1  # workers sharing this machine's cores (make run sets it; compose --scale N: set N) so threads don't oversubscribe
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16; auto: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU
    model_revision: str = ""  # branch, tag or commit of a Hub model (empty: main); pinned so every worker loads the same weights
    max_steps: int = 200
    max_top_k: int = 50
    max_prompt_chars: int = 2000
    max_prompt_tokens: int = 1024  # checked by the worker, which owns the tokenizer
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_workers: int = 2  # gunicorn processes
    max_batch: int = 32  # jobs one worker steps together in one forward pass
    worker_pool: str = "threads"  # threads keep one model per worker process
    job_ttl_seconds: int = 86400  # job keys expire this long after their last write
    job_deadline_seconds: int = 600  # wall-clock cap on one job once it runs
    max_queue_age_seconds: int = 1800  # a job queued longer than this is failed, not run
    max_attempts: int = 3  # deliveries of one job before it is failed
    visibility_timeout_seconds: int = 7200  # must exceed queue age + deadline
    max_queued_jobs: int = 1000  # backpressure: POST answers 503 beyond this
    max_active_jobs_per_client: int = 5
    rate_limit: str = "60 per minute"  # per session cookie and per IP (Flask-Limiter syntax)
    ip_rate_limit: str = "600 per minute"  # loose cap per address: a classroom shares one
    max_content_length: int = 65536  # bytes of request body
    trusted_proxies: int = 0  # ProxyFix hops; 0 when the web is not behind a proxy
    secret_key: str = ""  # empty: a random key per data dir (see web.create_app)
    dashboard_token: str = ""  # empty: the teacher dashboard is disabled
    data_dir: str = str(PROJECT_ROOT / "data")  # embedded Redis data and secrets
    heartbeat_seconds: int = 5  # worker heartbeat period
    max_active_jobs_per_address: int = 5  # unfinished jobs per address from clients that send no session cookie
    accept_jobs_without_workers: bool = False  # scale-from-zero (KEDA): queue jobs before any worker is up
    queued_without_worker_seconds: int = 120  # a queued job whose model has had no worker this long is failed
    step_pace_seconds: float = 0.0  # pause after every batch step; only for tests that watch progress
    log_level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR, for every process (see contract.logs)
    log_format: str = "text"  # text, or json: one JSON object per line for a log collector
    dashboard_signin_limit: str = "5 per minute"  # failed dashboard sign-ins per address, against token guessing
    room_ttl_seconds: int = 43200  # class rooms expire 12 h after creation: a school day, not forever

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, dotenv: bool = True) -> "Settings":
        """Build settings from `environ` (default: os.environ plus `.env` in the project root).

        Raises:
            ValueError: a variable has a value of the wrong type.
        """
        if environ is None:
            if dotenv:
                _load_dotenv()
            environ = dict(os.environ)
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(field.name.upper())
            if raw is None or raw == "":
                continue
            if field.type == "int":
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{field.name.upper()} must be an integer, got {raw!r}") from None
            elif field.type == "float":
                try:
                    values[field.name] = float(raw)
                except ValueError:
                    raise ValueError(f"{field.name.upper()} must be a number, got {raw!r}") from None
            elif field.type == "bool":
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(f"{field.name.upper()} must be 1 or 0, got {raw!r}")
                values[field.name] = raw.lower() in ("1", "true", "yes")
            else:
                values[field.name] = raw
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Reject combinations that would break delivery guarantees."""
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"DEVICE must be auto, cpu or cuda, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"DTYPE must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in AT_LEAST_ZERO:
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must be at least 0, got {getattr(self, name)}")
        if self.visibility_timeout_seconds <= self.max_queue_age_seconds + self.job_deadline_seconds:
            raise ValueError(
                "VISIBILITY_TIMEOUT_SECONDS must exceed MAX_QUEUE_AGE_SECONDS + JOB_DEADLINE_SECONDS, "
                "or Redis redelivers jobs that are still running"
            )
        if self.job_ttl_seconds <= self.max_queue_age_seconds + self.job_deadline_seconds:
            raise ValueError(
                "JOB_TTL_SECONDS must exceed MAX_QUEUE_AGE_SECONDS + JOB_DEADLINE_SECONDS, "
                "or a job's key expires while it waits or runs (its steps do not renew it)"
            )
        for name in AT_LEAST_ONE:  # 0 or less would refuse or fail every job, or stop every worker
            if getattr(self, name) < 1:
                raise ValueError(f"{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.worker_pool not in WORKER_POOLS:
            raise ValueError(f"WORKER_POOL must be threads or solo, got {self.worker_pool!r} (the model is loaded in "
                             "the worker's main process: prefork children would have no batch runner)")
        if not 1 <= self.web_port <= 65535:
            raise ValueError(f"WEB_PORT must be a TCP port (1 to 65535), got {self.web_port}")
        for name in ("rate_limit", "ip_rate_limit", "dashboard_signin_limit"):
            if not RATE_LIMITS.fullmatch(getattr(self, name)):
                raise ValueError(f"{name.upper()} must read like \"60 per minute\" or \"10/second\" (several joined by "
                                 f"';'), got {getattr(self, name)!r}")
        if not 0.0 <= self.step_pace_seconds <= 60.0:
            raise ValueError("STEP_PACE_SECONDS must be between 0 and 60")
        if self.redis_url and (problem := redis_url_problem(self.redis_url)):
            raise ValueError(f"REDIS_URL {problem}")

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in another process."""
        return {f.name.upper(): _env_value(getattr(self, f.name)) for f in fields(self)}


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None: its scheme, or a port that is not one. Never quotes the URL, which
    may hold a password."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return "has no valid port or address (a password holding '#', '/' or '?' must be percent-encoded)"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "must start with redis://, rediss:// or unix://"
    return None


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _load_dotenv() -> None:
    """Read `.env` from the project root or the working directory, never overriding real variables."""
    for candidate in (Path.cwd() / ".env", PROJECT_ROOT / ".env"):
        if candidate.is_file():
            load_dotenv(candidate, override=False)
            return
