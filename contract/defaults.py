"""Constants with units that are not settings: one place, so no module invents its own."""
from __future__ import annotations

DEAD_AFTER_BEATS = 5  # a worker silent for this many heartbeat periods is dead; its jobs are recovered
LIVE_WITHIN_BEATS = 3  # a worker that beat within this many periods is listed as live
STALL_SECONDS = 30.0  # a live worker holding jobs with no step for this long is reported stalled
STALE_RUNNING_BEATS = 24  # a running job with no write for this many heartbeat periods is recovered
PROGRESS_STAMP_SECONDS = 1  # a step write renews its job's updated_at at most this often (stale recovery reads it)
REDIS_RETRY_SECONDS = 120.0  # how long the batch runner retries an unreachable Redis before handing jobs back
HANDLE_WAIT_SLICE_SECONDS = 5.0  # task threads wake this often to check the batch runner is alive
PROBATION_STEPS = 4  # steps a recovered job runs alone before it rejoins the shared batch
RECENT_JOBS_KEPT = 100  # finished job ids kept for the teacher dashboard
STEP_RATE_TTL_SECONDS = 120  # per-second step counters live this long
WORKER_INFO_TTL_BEATS = 6  # a worker's announcement expires after this many silent periods
MODEL_STATUS_TTL_SECONDS = 86400  # how long a model's load failure stays on record
HEALTH_CACHE_SECONDS = 2.0  # the web reuses a registry snapshot this long
CANNOT_START_EXIT = 3  # a worker that cannot load its model or start exits with this: restarting it would not help
ROOM_MAX_JOBS = 1000  # jobs one class room takes: its projector reads them all at every refresh (40 students x 25)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # names of this computer only: on a phone, the phone itself
