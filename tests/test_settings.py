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
