# The two commands: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.koa-installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DO_NOT_TRACK := 1

.PHONY: demo test lint typecheck pytest bench fuzz soak serve system-deps clean

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build. pip runs
# with -qq: errors still show, a site's pip.conf warnings do not flood the demo's screen.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "koa needs $(PYTHON)"; exit 1; }
	@echo "koa: setting up $(VENV) (once; a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -qq --disable-pip-version-check torch==2.13.0
	@$(BIN)/pip install -qq --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

demo: $(STAMP)
	@$(BIN)/koa demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy koa_core

pytest: $(STAMP) system-deps
	$(BIN)/python -m pytest -m "not soak and not fuzz_long" -p no:cacheprovider

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

fuzz: $(STAMP)
	$(BIN)/python -m pytest -m fuzz_long -p no:cacheprovider -s

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -p no:cacheprovider -s

serve: $(STAMP)
	$(BIN)/koa serve

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache
