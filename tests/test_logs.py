"""LOG_LEVEL and LOG_FORMAT: configured at the entry points; JSON logs are one parseable object per line."""
from __future__ import annotations

import json
import logging

import pytest
import requests

from contract.logs import JsonFormatter, configure_logging, logging_config
from tests.conftest import with_settings
from stack.harness import LiveStack


@pytest.fixture
def restore_logging():
    """Put the root logger back as it was (configure_logging changes it for the whole process)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_parse_with_message_level_logger_and_exception(capsys, restore_logging):
    configure_logging("info", "json")
    log = logging.getLogger("tests.logs")
    log.debug("below the level")
    log.info('a "quoted"\nmessage with ünïcode %s', 42)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("INFO", "tests.logs", 'a "quoted"\nmessage with ünïcode 42'),
        ("ERROR", "tests.logs", "it failed"),
    ]
    assert "ValueError: boom" in entries[1]["exception"] and entries[0]["time"].endswith("Z")


def test_text_format_and_level(capsys, restore_logging):
    configure_logging("WARNING", "text")
    logging.getLogger("tests.logs").info("hidden")
    logging.getLogger("tests.logs").warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "WARNING tests.logs: shown" in err


@pytest.mark.parametrize(("level", "fmt", "named"), [("LOUD", "text", "LOG_LEVEL"), ("INFO", "xml", "LOG_FORMAT")])
def test_bad_values_are_refused_naming_the_variable(level, fmt, named):
    with pytest.raises(ValueError, match=named):
        logging_config(level, fmt)


def test_the_app_factory_leaves_logging_to_the_entry_points():
    import inspect

    import web
    assert "basicConfig" not in inspect.getsource(web) and "dictConfig" not in inspect.getsource(web)


def test_the_worker_configures_logging_from_its_settings(monkeypatch, restore_logging):
    from celery import signals

    from contract.settings import Settings
    from worker import celery_app

    monkeypatch.setattr(celery_app, "settings", Settings(log_format="json", log_level="DEBUG"))
    signals.setup_logging.send(sender=None, loglevel="INFO", logfile=None, format="", colorize=False)
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)


@pytest.mark.integration
def test_web_under_gunicorn_writes_only_json_lines_access_log_included(live_settings, tmp_path):
    web = LiveStack(with_settings(live_settings, log_format="json"), tmp_path)
    web.start_web()
    try:
        assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{web.url}/no-such-page", timeout=10).status_code == 404
    finally:
        web.stop()
    lines = [line for line in (tmp_path / "web.log").read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, gunicorn's own included
    loggers = {e["logger"] for e in entries}
    assert {"gunicorn.error", "gunicorn.access"} <= loggers
    assert any('"GET /healthz' in e["message"] for e in entries if e["logger"] == "gunicorn.access")


@pytest.mark.integration
def test_a_worker_logs_its_model_loading_as_json_records(live_settings, tmp_path):
    """Celery sets logging up after worker_init, where the model loads: the loading lines (device, dtype, threads,
    cache) were dropped, and the worker's own lines, its banner and the loading progress bar were plain text even
    with LOG_FORMAT=json (a warning Python prints before the worker starts, e.g. Celery's for root, still is)."""
    stack = LiveStack(with_settings(live_settings, log_format="json"), tmp_path)
    stack.start_worker("jsonlog")
    try:
        stack.wait_for_workers(1)
    finally:
        stack.stop()
    lines = (tmp_path / "worker-jsonlog.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(e["logger"] == "engine.loading" and "torch threads" in e["message"] for e in entries)
    assert any(e["logger"] == "worker.celery_app" and "serving" in e["message"] for e in entries)
    assert not [line for line in lines if line.startswith(("worker jsonlog", "Loading weights", " -------------- "))]
