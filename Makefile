# One-command set-up: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch 2.13.0 CPU is on local disk in this workplace; override for a CUDA machine, e.g. TORCH_SPEC="torch>=2.3,<2.14"
TORCH_SPEC ?= torch==2.13.0
WORKERS ?= 1
PYTEST_ARGS ?=

.PHONY: install run test bench browser-deps clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[web,worker,test]"
	touch $(STAMP)

install: $(STAMP)

## run: Redis (embedded unless REDIS_URL is set), WORKERS worker(s) and the web; offline; Ctrl-C stops all
run: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m stack --workers $(WORKERS)

## test: unit, integration (real Redis + Celery workers), fault, load, fuzz and browser tests
test: install browser-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: the benchmark table (notebook loop as baseline)
bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench

## browser-deps: Debian's Chromium for the Playwright tests (installed when missing and we are root)
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: browser tests will be skipped"; fi; }

clean-data:
	rm -rf data
