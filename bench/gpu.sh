#!/usr/bin/env bash
# GPU benchmarks in one go, on a machine with an NVIDIA GPU and nothing to download:
#   engine:     the step engine alone: random-weight Llama-3.2-1B shape, bf16, steps/s at 1 / 64 / 256 jobs and
#               ms/step, with CUDA graphs (after their self-check) and eagerly, and what a step costs when 1 of 255
#               or 16 of 240 jobs are replaced by new ones (their prefill runs in it) (bench/gpu_engine.py; check
#               it on a CPU with `python -m bench.gpu_engine --tiny --device cpu`);
#   invariance: batch invariance in bf16 on that card: batched vs alone, graphs vs eager, greedy vs generate
#               (bench/gpu_invariance.py);
#   profile:    where a decode step's device time goes, kernel by kernel, at 1 and 256 jobs, and the eager step
#               seen from the host (bench/gpu_profile.py);
#   stack:      Redis, one GPU worker, the web, 256 concurrent jobs, with how far apart a job's consecutive steps
#               come (p50, p99, max: stalls show in the tail) (bench/gpu_stack.py).
# GPU_PARTS picks and orders them (default: all four). Each part runs even if an earlier one failed, for at most
# its own limit (engine 150 s, invariance 100, profile 90, stack 150: together under a device call's 10 minutes
# with the set-up; GPU_PART_TIMEOUT sets one limit for all); a part past its limit gets SIGINT, so it stops what
# it started. Each part's output also goes to $OUT/gpu-<part>.log when OUT is set (a device call's folder).
# The exit status is the first failure's.
# Prepare once where PyPI is reachable: bash bench/gpu_stack.sh --fetch-wheels   (fills .whl/; carry it)
# Then on the GPU machine:               bash bench/gpu.sh [--out FILE]          (PYTHON: a python with CUDA torch)
# A rerun of one part:                    GPU_PARTS=stack bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$PYTHON" deploy/requirements.py web embedded > "$requirements" || exit
source bench/gpu_env.sh || { echo "FAILED: installing the wheels in .whl/" >&2; exit 1; }
"$PYTHON" -m bench.gpu_check || exit
declare -A command=([engine]="-m bench.gpu_engine" [invariance]="-m bench.gpu_invariance --jobs 24 --steps 24"
                    [profile]="-m bench.gpu_profile" [stack]="-m bench.gpu_stack --timeout 140 $*")
declare -A limit=([engine]=150 [invariance]=100 [profile]=90 [stack]=150)
status=0
for part in ${GPU_PARTS:-engine invariance profile stack}; do
  [[ -n "${command[$part]:-}" ]] || { echo "unknown part $part (engine, invariance, profile, stack)" >&2; exit 2; }
  began=$SECONDS
  log=/dev/null
  [[ -n "${OUT:-}" ]] && log="$OUT/gpu-$part.log"
  # shellcheck disable=SC2086  # each part is a module and its arguments
  timeout -s INT -k 15 "${GPU_PART_TIMEOUT:-${limit[$part]}}" "$PYTHON" ${command[$part]} 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if [[ $rc != 0 ]]; then
    echo "FAILED ($rc): $part: $PYTHON ${command[$part]}" >&2
    [[ $status == 0 ]] && status=$rc
  fi
  echo "(part $part took $((SECONDS - began)) s)"  # to size the limits on a device lent by the minute
done
exit $status
