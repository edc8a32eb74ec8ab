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
RUN_STAMP   := $(VENV)/.run-installed

# Python dependencies are locked in uv.lock and installed with uv (PyPI `uv`, the version pinned
# here), itself installed once into a small virtualenv under ~/.cache/authloyalty; UV=uv uses
# your own. `make lock` after editing pyproject.toml's dependencies.
CACHE_DIR  := $(or $(AUTHLOYALTY_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/authloyalty)
UV_VERSION := 0.13.9
UV_HOME    := $(CACHE_DIR)/uv-$(UV_VERSION)
UV         ?= $(UV_HOME)/bin/uv
export UV_CACHE_DIR ?= $(CACHE_DIR)/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# --inexact: `make run` after `make test` keeps the dev tools; --frozen: exactly uv.lock.
UV_SYNC    := $(UV) sync --frozen --inexact --python $(PYTHON)
PYTHON_CHECK := 'import sys; sys.exit(sys.version_info < (3, 11) and "$(PYTHON) is Python " + sys.version.split()[0] + ": 3.11+ required (make PYTHON=python3.11 ...)")'

.PHONY: help venv lock system-deps kafka-jars jaeger registry run test lint typecheck unit bench bench-profile faults clean \
        stack-up stack-down stack-status stack-restart stack-stop stack-start stack-logs

help:
	@echo "make run        start sso (:8000) and loyalty (:8001) with embedded storage in ./var"
	@echo "make test       lint, type-check and run the whole suite (starts its own PostgreSQL)"
	@echo "make unit       fast unit tests only"
	@echo "make lock       re-resolve uv.lock after editing the dependencies in pyproject.toml"
	@echo "make bench      throughput/latency vs. ceilings (BENCH_MODE=short|full), results in bench/results"
	@echo "make faults     kills, broker kills and a database stall under load; logout and bonus checks"
	@echo "                (FAULTS_ARGS=--quick: 90 s), results in bench/results/faults-latest.md"
	@echo "make stack-up   the production topology on this machine (ARGS=\"--brokers 3\" ...), in var/stack"
	@echo "make stack-status | stack-down | stack-restart C=sso-1 | stack-logs C=nginx"
	@echo "make stack-stop C=kafka | stack-start C=kafka   (an outage to rehearse the alerts)"

$(UV_HOME)/bin/uv:
	@$(PYTHON) -c $(PYTHON_CHECK)
	@echo "installing uv $(UV_VERSION) into $(UV_HOME) (once)"
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --disable-pip-version-check uv==$(UV_VERSION)

# The virtualenv (with pip, for those who add a package by hand), then uv.lock's packages and the
# project itself, editable: the runtime ones for `make run`, the dev extra for the rest.
$(BIN)/python: | $(filter $(UV_HOME)/bin/uv,$(UV))
	@$(PYTHON) -c $(PYTHON_CHECK)
	$(UV) venv --clear --seed --python $(PYTHON) $(VENV)

$(RUN_STAMP): pyproject.toml uv.lock | $(BIN)/python
	@echo "installing the runtime dependencies from uv.lock into $(VENV)"
	$(UV_SYNC)
	@touch $(RUN_STAMP)

$(STAMP): pyproject.toml uv.lock | $(BIN)/python
	@echo "installing the runtime and dev dependencies from uv.lock into $(VENV)"
	$(UV_SYNC) --extra dev
	@touch $(STAMP) $(RUN_STAMP)

venv: $(STAMP)

lock: | $(filter $(UV_HOME)/bin/uv,$(UV))
	$(UV) lock --python $(PYTHON)

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

run: $(RUN_STAMP)
	$(BIN)/authloyalty up $(ARGS)

# uv.lock must match pyproject.toml; the workflows in .github/workflows pass actionlint.
lint: venv
	@$(UV) lock --check --python $(PYTHON) || { echo "uv.lock is out of date with pyproject.toml: run make lock and commit uv.lock" >&2; exit 1; }
	$(BIN)/ruff check src tests devstack
	bash scripts/actionlint.sh

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

test: venv system-deps kafka-jars jaeger registry lint typecheck
	$(BIN)/pytest -q $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP) pyproject.toml uv.lock
	$(UV_SYNC) --extra dev --extra bench
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
