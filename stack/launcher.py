"""`python -m stack`: Redis (embedded unless REDIS_URL is set), worker(s) and web, stopped together by Ctrl-C."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from contract.logs import configure_logging
from contract.settings import PROJECT_ROOT, Settings
from stack.commands import web_command, worker_command
from stack.hub import ensure_model
from stack.redis_server import RedisServer

EMBEDDED_REDIS_PORT = 6390  # not 6379, so a system Redis on this machine is left alone
log = logging.getLogger("stack")


def main(argv: list[str] | None = None) -> int:
    """Start everything, wait for Ctrl-C (or a process dying), then stop everything."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")),
                        help="worker processes (each loads the model once)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    if not ensure_model(settings.model_name, settings.model_revision, settings.hf_token):  # offline when cached
        return 1
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"), PYTHONPATH=str(PROJECT_ROOT),
               WORKERS_PER_HOST=os.environ.get("WORKERS_PER_HOST", str(args.workers)))  # splits the cores

    redis_server = None
    if not settings.redis_url:
        port = int(os.environ.get("EMBEDDED_REDIS_PORT", EMBEDDED_REDIS_PORT))
        redis_server = RedisServer(Path(settings.data_dir) / "redis", port=port).start()
        env["REDIS_URL"] = redis_server.url
        log.info("embedded Redis on %s (data in %s)", redis_server.url, redis_server.data_dir)
    settings = Settings.from_env(env)

    processes = [subprocess.Popen(worker_command(settings, f"worker{i + 1}"), env=env, cwd=PROJECT_ROOT)
                 for i in range(args.workers)]
    processes.append(subprocess.Popen(web_command(settings), env=env, cwd=PROJECT_ROOT))
    print(f"\n  Open http://{settings.web_host}:{settings.web_port}/  (Ctrl-C stops everything)\n", flush=True)

    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    while not stopping:
        time.sleep(0.5)
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            log.error("a process exited (%s, code %s); stopping", " ".join(dead[0].args[2:5]), dead[0].returncode)
            code = 1
            break
    for p in reversed(processes):  # web first, then workers (warm shutdown finishes running steps)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(processes):
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    if redis_server:
        redis_server.stop()
    return code
