#!/usr/bin/env bash
# GPU benchmarks in one go, on a machine with an NVIDIA GPU and nothing to download:
#   1. the step engine alone: random-weight Llama-3.2-1B shape, bf16, steps/s at 1 / 64 / 256 jobs and ms/step,
#      with CUDA graphs (after their self-check) and eagerly, and what a step costs when 1 of 255 or 16 of 240
#      jobs are replaced by new ones (their prefill runs in it) (bench/gpu_engine.py; check it on a CPU with
#      `python -m bench.gpu_engine --tiny --device cpu`);
#   2. batch invariance in bf16 on that card: batched vs alone, graphs vs eager, greedy vs generate
#      (bench/gpu_invariance.py);
#   3. where a decode step's device time goes, kernel by kernel, at 1 and 256 jobs (bench/gpu_profile.py);
#   4. the full stack: Redis, one GPU worker, the web, 256 concurrent jobs, with how far apart a job's
#      consecutive steps come (p50, p99, max: stalls show in the tail) (bench/gpu_stack.py).
# Each part runs even if an earlier one failed, for at most GPU_PART_TIMEOUT seconds (default 1800);
# the exit status is the first failure's.
# Prepare once where PyPI is reachable: bash bench/gpu_stack.sh --fetch-wheels   (fills .whl/)
# Then on the GPU machine:               bash bench/gpu.sh [--out FILE]          (PYTHON: a python with CUDA torch)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$PYTHON" deploy/requirements.py web embedded > "$requirements" || exit
source bench/gpu_env.sh || exit
"$PYTHON" -c "import torch, transformers; assert torch.cuda.is_available(), 'no CUDA device visible'; \
print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())" || exit
status=0
for part in "-m bench.gpu_engine" "-m bench.gpu_invariance" "-m bench.gpu_profile" "-m bench.gpu_stack $*"; do
  began=$SECONDS
  # shellcheck disable=SC2086  # each part is a module and its arguments
  timeout "${GPU_PART_TIMEOUT:-1800}" "$PYTHON" $part || { rc=$?; echo "FAILED ($rc): $PYTHON $part" >&2; [[ $status == 0 ]] && status=$rc; }
  echo "(part took $((SECONDS - began)) s: $PYTHON $part)"  # to size GPU_PART_TIMEOUT on a device lent by the minute
done
exit $status
