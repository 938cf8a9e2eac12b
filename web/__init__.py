"""The Flask web app: the form, the JSON API and the live progress page. Never imports torch."""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from contract.jobs import TERMINAL
from contract.settings import Settings
from web.json_responses import OrjsonProvider


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create and configure an instance of the Flask application."""
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    test_config = test_config or {}
    settings: Settings = test_config.get("SETTINGS") or Settings.from_env()

    # defaults from the settings, then anything the tests pass in
    app.config.from_mapping(
        SETTINGS=settings,
        SECRET_KEY=settings.secret_key or _data_dir_secret(Path(settings.data_dir)),
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=7 * 24 * 3600,
        JSON_SORT_KEYS=False,
    )
    app.config.update(test_config)

    # behind a proxy, trust exactly the configured number of hops for client address and scheme
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)

    from web import api, backend, class_pages, dashboard, errors, metrics, pages, probes, rooms_api, security

    metrics.init_app(app)  # first, so that requests refused by the others are timed too
    backend.init_app(app)
    security.init_app(app)
    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(probes.bp)
    app.register_blueprint(rooms_api.bp)
    app.register_blueprint(class_pages.bp)
    # the statuses that end a job, for the pages' scripts (base.html puts them on <body>)
    app.jinja_env.globals["terminal_statuses"] = sorted(status.value for status in TERMINAL)
    return app


def _data_dir_secret(data_dir: Path) -> str:
    """A signing key shared by every web process on this machine, created once in the data dir.

    The key is written to a private temporary file and then linked into place, which fails if the
    file exists: whoever links first wins, and no process can ever read a half-written key.
    """
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, draft = tempfile.mkstemp(dir=data_dir, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            os.link(draft, path)
        except FileExistsError:  # another web process created it first
            pass
        finally:
            os.unlink(draft)
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"{path} is empty; delete it and start again (a new key is created)")
    return key
