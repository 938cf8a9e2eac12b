#!/usr/bin/env python3
"""Scale the compose `worker` service to its model's queue, reading the web's /metrics (a cron recipe).

Every minute, from the directory that holds docker-compose.yml:

    * * * * * cd /srv/autoregress && python3 deploy/autoscale.py --url http://127.0.0.1:8000/metrics

Wanted workers = ceil((jobs waiting + jobs running) / slots per worker), kept within --min..--max,
then `docker compose up -d --no-recreate --scale worker=N worker`. Removed workers get SIGTERM:
Celery's warm shutdown finishes their running jobs within the service's stop_grace_period.
Standard library only, so it runs with the host's python3.
"""
from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import urllib.request

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
ESCAPE = re.compile(r"\\(.)")
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: (metric name, labels, value).

    Raises:
        ValueError: a line is neither a comment nor a sample.
    """
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a metrics line: {line!r}")
        labels = {
            m["key"]: ESCAPE.sub(lambda e: "\n" if e[1] == "n" else e[1], m["value"])
            for m in LABEL.finditer(match["labels"] or "")
        }
        samples.append((match["name"], labels, float(match["value"])))
    return samples


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


def wanted_workers(samples: list[tuple[str, dict[str, str], float]], model: str, *, slots: int,
                   minimum: int, maximum: int) -> int:
    """Workers needed so every waiting and running job of `model` has a batch slot, within bounds."""
    jobs = value(samples, "genq_queue_waiting_jobs", model=model) + value(samples, "genq_active_jobs", model=model)
    return max(minimum, min(maximum, math.ceil(jobs / slots)))


def main(argv: list[str] | None = None) -> int:
    """Read /metrics, decide, and scale (or print the command with --dry-run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/metrics", help="the web's /metrics")
    parser.add_argument("--model", default="local/demo", help="model id the service's workers load")
    parser.add_argument("--service", default="worker", help="compose service to scale")
    parser.add_argument("--slots", type=int, default=32, help="jobs one worker steps together (MAX_BATCH)")
    parser.add_argument("--min", type=int, default=1, dest="minimum", help="never fewer workers")
    parser.add_argument("--max", type=int, default=8, dest="maximum", help="never more workers")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(argv)
    with urllib.request.urlopen(args.url, timeout=10) as response:
        samples = parse(response.read().decode())
    count = wanted_workers(samples, args.model, slots=args.slots, minimum=args.minimum, maximum=args.maximum)
    command = ["docker", "compose", "up", "-d", "--no-recreate", "--scale", f"{args.service}={count}", args.service]
    print(" ".join(command), flush=True)
    return 0 if args.dry_run else subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
