#!/usr/bin/env bash
# GPU benchmarks in one go, on a machine with an NVIDIA GPU and nothing to download:
#   1. the step engine alone: random-weight Llama-3.2-1B shape, bf16, steps/s at 1 / 64 / 256 jobs and ms/step,
#      with CUDA graphs (after their self-check) and eagerly (bench/gpu_engine.py; check it on a CPU with
#      `python -m bench.gpu_engine --tiny --device cpu`);
#   2. the full stack: Redis, one GPU worker, the web, 256 concurrent jobs (bench/gpu_stack.py).
# Prepare once where PyPI is reachable: bash bench/gpu_stack.sh --fetch-wheels   (fills .whl/)
# Then on the GPU machine:               bash bench/gpu.sh [--out FILE]          (PYTHON: a python with CUDA torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$PYTHON" deploy/requirements.py web embedded > "$requirements"
source bench/gpu_env.sh
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'"
"$PYTHON" -m bench.gpu_engine
"$PYTHON" -m bench.gpu_stack "$@"
