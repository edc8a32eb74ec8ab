# authloyalty — developer commands. Every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_MODE  ?= short
BENCH_ARGS  ?=
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: help venv system-deps run test lint typecheck unit bench bench-profile clean

help:
	@echo "make run        start sso (:8000) and loyalty (:8001) with embedded storage in ./var"
	@echo "make test       lint, type-check and run the whole suite (starts its own PostgreSQL)"
	@echo "make unit       fast unit tests only"
	@echo "make bench      throughput/latency vs. ceilings (BENCH_MODE=short|full), results in bench/results"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

run: venv
	$(BIN)/authloyalty up $(ARGS)

lint: venv
	$(BIN)/ruff check src tests

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

test: venv system-deps lint typecheck
	$(BIN)/pytest -q $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) system-deps
	$(BIN)/python bench/run.py --mode $(BENCH_MODE) $(BENCH_ARGS)

bench-profile: $(BENCH_STAMP) system-deps
	$(BIN)/python bench/profile.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
