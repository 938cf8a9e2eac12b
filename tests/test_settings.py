"""contract.settings: typed parsing from the environment."""
from __future__ import annotations

import pytest

from contract.settings import Settings


def test_float_settings_parse_from_the_environment():
    settings = Settings.from_env({"STEP_PACE_SECONDS": "0.05", "HEARTBEAT_SECONDS": "2"})
    assert settings.step_pace_seconds == 0.05 and settings.heartbeat_seconds == 2
    assert Settings.from_env(settings.to_env()) == settings  # what the harness hands its child processes


@pytest.mark.parametrize("raw, message", [("fast", "STEP_PACE_SECONDS must be a number"),
                                          ("-1", "STEP_PACE_SECONDS must be between 0 and 60"),
                                          ("nan", "STEP_PACE_SECONDS must be between 0 and 60")])
def test_bad_float_settings_are_refused_by_name(raw, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"STEP_PACE_SECONDS": raw})


def test_jobs_must_outlive_their_wait_and_their_run():
    """A job key that expires before the job could have waited and run goes missing mid-run (steps do not renew it):
    such a setting is refused at start, by name."""
    with pytest.raises(ValueError, match="JOB_TTL_SECONDS must exceed MAX_QUEUE_AGE_SECONDS"):
        Settings.from_env({"JOB_TTL_SECONDS": "600", "MAX_QUEUE_AGE_SECONDS": "1800", "JOB_DEADLINE_SECONDS": "600"})


@pytest.mark.parametrize("name, value", [
    ("JOB_DEADLINE_SECONDS", "0"), ("MAX_PROMPT_TOKENS", "0"), ("MAX_CONTENT_LENGTH", "-1"), ("MAX_QUEUED_JOBS", "0"),
    ("MAX_ACTIVE_JOBS_PER_CLIENT", "0"), ("MAX_QUEUE_AGE_SECONDS", "-1"), ("QUEUED_WITHOUT_WORKER_SECONDS", "-5"),
    ("ROOM_TTL_SECONDS", "0"), ("MAX_PROMPT_CHARS", "0"), ("MAX_ACTIVE_JOBS_PER_ADDRESS", "-1"),
    ("WORKERS_PER_HOST", "0"), ("TORCH_THREADS", "-3"), ("TRUSTED_PROXIES", "-1"),
])
def test_a_setting_that_would_refuse_or_fail_every_job_is_refused_by_name(name, value):
    """JOB_DEADLINE_SECONDS=0 failed every job, MAX_QUEUED_JOBS=0 refused every one, MAX_CONTENT_LENGTH=-1 answered
    every POST with 413: each started normally. TORCH_THREADS=-3 was refused naming two variables, not its value."""
    with pytest.raises(ValueError, match=f"^{name} must be at least [01], got {value}$"):
        Settings.from_env({name: value})


def test_zero_still_means_no_cap_or_at_once_where_it_always_did():
    settings = Settings.from_env({"MAX_ACTIVE_JOBS_PER_ADDRESS": "0", "QUEUED_WITHOUT_WORKER_SECONDS": "0",
                                  "TORCH_THREADS": "0", "TRUSTED_PROXIES": "0"})
    assert (settings.max_active_jobs_per_address, settings.queued_without_worker_seconds) == (0, 0)


@pytest.mark.parametrize("env, message", [
    ({"WORKER_POOL": "prefork"}, "WORKER_POOL must be threads or solo"),
    ({"HEARTBEAT_SECONDS": "0"}, "HEARTBEAT_SECONDS must be at least 1"),
    ({"WEB_WORKERS": "0"}, "WEB_WORKERS must be at least 1"),
    ({"WEB_PORT": "70000"}, "WEB_PORT must be a TCP port"),
    ({"RATE_LIMIT": "lots"}, "RATE_LIMIT must read like"),
    ({"IP_RATE_LIMIT": "600 per fortnight"}, "IP_RATE_LIMIT must read like"),
    ({"DASHBOARD_SIGNIN_LIMIT": "5"}, "DASHBOARD_SIGNIN_LIMIT must read like"),
])
def test_settings_that_would_run_wrongly_are_refused_by_name(env, message):
    """A prefork pool ran no job, a zero heartbeat spun, an unreadable limit switched rate limiting off:
    each is refused at start, naming the variable."""
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("limit", ["60 per minute", "10/second", "100000 per minute", "5 per 2 minutes",
                                   "10 per second; 100 per hour", "1/day"])
def test_rate_limit_strings_flask_limiter_reads_are_accepted(limit):
    import limits

    limits.parse_many(limit)  # the web's own parser agrees
    assert Settings.from_env({"RATE_LIMIT": limit}).rate_limit == limit
