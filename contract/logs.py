"""Logging for every entry point (web under gunicorn, Celery worker, stack launcher): LOG_LEVEL, LOG_FORMAT.

One root handler on stderr; `text` is a readable line, `json` one JSON object per line, for log
collectors. Library code only calls logging.getLogger(__name__); the entry points call
`configure_logging` (or hand `logging_config` to gunicorn) once at start.
"""
from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, process, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """A logging.config.dictConfig dict: the root logger at `level`, gunicorn's loggers sent to it.

    Raises:
        ValueError: an unknown level or format (named as the environment variable).
    """
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be text or json, got {fmt!r}")
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        # gunicorn's own loggers: no handlers of their own, so they print through the root's format;
        # the access log stays at INFO whatever LOG_LEVEL says (it is switched by --access-logfile)
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Install the root handler for this process (call once, at the entry point)."""
    logging.config.dictConfig(logging_config(level, fmt))
