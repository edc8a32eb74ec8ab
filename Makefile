# authloyalty — developer commands. Every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_MODE  ?= short
BENCH_ARGS  ?=
FAULTS_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: help venv system-deps kafka-jars jaeger registry run test lint typecheck unit bench bench-profile faults clean \
        stack-up stack-down stack-status stack-restart stack-stop stack-start stack-logs

help:
	@echo "make run        start sso (:8000) and loyalty (:8001) with embedded storage in ./var"
	@echo "make test       lint, type-check and run the whole suite (starts its own PostgreSQL)"
	@echo "make unit       fast unit tests only"
	@echo "make bench      throughput/latency vs. ceilings (BENCH_MODE=short|full), results in bench/results"
	@echo "make faults     kills, broker kills and a database stall under load; logout and bonus checks"
	@echo "                (FAULTS_ARGS=--quick: 90 s), results in bench/results/faults-latest.md"
	@echo "make stack-up   the production topology on this machine (ARGS=\"--brokers 3\" ...), in var/stack"
	@echo "make stack-status | stack-down | stack-restart C=sso-1 | stack-logs C=nginx"
	@echo "make stack-stop C=kafka | stack-start C=kafka   (an outage to rehearse the alerts)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

# The Kafka brokers' jars (Maven Central, cached under ~/.cache/authloyalty), before any test.
kafka-jars: venv system-deps
	@$(BIN)/python -m devstack kafka classpath >/dev/null

# Jaeger v2 built from the Go module proxy (4-15 min the first time, then cached under
# ~/.cache/authloyalty), before any test: the local stack traces into it.
jaeger: venv
	@$(BIN)/python -m devstack jaeger build >/dev/null

# The Schema Registry (Apicurio Registry 2.6.13.Final from Maven Central, unpacked once under
# ~/.cache/authloyalty), before any test that runs one.
registry: venv system-deps
	@$(BIN)/python -m devstack registry fetch >/dev/null

run: venv
	$(BIN)/authloyalty up $(ARGS)

lint: venv
	$(BIN)/ruff check src tests devstack

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

test: venv system-deps kafka-jars jaeger registry lint typecheck
	$(BIN)/pytest -q $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) system-deps
	$(BIN)/python bench/run.py --mode $(BENCH_MODE) $(BENCH_ARGS)

# The fault run (bench/faults.py): ~7 minutes, or ~3 with FAULTS_ARGS=--quick. Not part of test.
faults: $(BENCH_STAMP) system-deps kafka-jars registry
	$(BIN)/python bench/faults.py $(FAULTS_ARGS)

bench-profile: $(BENCH_STAMP) system-deps
	$(BIN)/python bench/profile.py $(BENCH_ARGS)

# The local production topology (devstack/, processes under supervisord; deploy/README.md).
STACK_DIR ?= var/stack
C ?=

stack-up: venv
	$(BIN)/python -m devstack up --dir $(STACK_DIR) $(ARGS)

stack-status: venv
	$(BIN)/python -m devstack status --dir $(STACK_DIR)

stack-down: venv
	$(BIN)/python -m devstack down --dir $(STACK_DIR)

stack-restart: venv
	@test -n "$(C)" || { echo "usage: make stack-restart C=<component> (see make stack-status)" >&2; exit 2; }
	$(BIN)/python -m devstack restart $(C) --dir $(STACK_DIR)

stack-stop: venv
	@test -n "$(C)" || { echo "usage: make stack-stop C=<component or group> (see make stack-status)" >&2; exit 2; }
	$(BIN)/python -m devstack stop $(C) --dir $(STACK_DIR)

stack-start: venv
	@test -n "$(C)" || { echo "usage: make stack-start C=<component or group>" >&2; exit 2; }
	$(BIN)/python -m devstack start $(C) --dir $(STACK_DIR)

stack-logs: venv
	@test -n "$(C)" || { echo "usage: make stack-logs C=<component>" >&2; exit 2; }
	$(BIN)/python -m devstack logs $(C) --dir $(STACK_DIR)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
