# Thin entry points: everything real lives in dev/ and the `kafkastore` CLI.
#   make run    install what is missing, then `kafkastore dev` (foreground; Ctrl-C stops all)
#   make test   install what is missing, then the whole test suite (CI=true: no skips)
#   make verify the long fault schedule (`kafkastore verify --long`; report in verify/results/)
SHELL := /bin/bash
.DEFAULT_GOAL := run

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The first interpreter on PATH that is 3.11 or newer.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && { echo $$p; break; }; done)

.PHONY: install system jars toxiproxy run test bench verify lint stop clean distclean

install: system $(STAMP) jars toxiproxy

system:
	@bash dev/bootstrap.sh

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required on PATH (python3.11 or newer)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create $(VENV): on Debian/Ubuntu \
	apt-get install python3-venv (for $(PYTHON))" >&2; rm -rf $(VENV); exit 1; }

# Re-install only when the project's metadata changed (the package itself is editable).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

jars: $(STAMP)
	@$(BIN)/python -m dev.kafka resolve >/dev/null

# The fault tests' network proxy, built once by `go install` into .kafkastore/cache/ (a failure
# is a warning, the fault tests then skip; under CI=true it fails).
toxiproxy: $(STAMP)
	@$(BIN)/python -m dev.toxiproxy install >/dev/null

run: install
	$(BIN)/kafkastore dev

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/kafkastore bench $(BENCH_ARGS)

verify: install
	$(BIN)/kafkastore verify --long $(VERIFY_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy tests/support

stop:
	@if [ -x $(BIN)/kafkastore ]; then $(BIN)/kafkastore dev stop; fi

# Data, logs and test stacks; keeps .venv and the Kafka jar cache.
clean: stop
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m dev.postgres remove .kafkastore/postgres \
		.kafkastore/postgres-standby; \
		for d in .kafkastore/verify/*/postgres; do [ -d "$$d" ] && $(BIN)/python -m dev.postgres remove "$$d"; done; true; fi
	rm -rf .kafkastore/kafka .kafkastore/postgres .kafkastore/postgres-standby .kafkastore/logs \
		.kafkastore/test-stack .kafkastore/verify \
		.kafkastore/dev.json .pytest_cache .mypy_cache .ruff_cache

distclean: clean
	rm -rf .kafkastore $(VENV) *.egg-info
