# prodready.django — developer entry points. Everything installs what it needs.
SHELL := /bin/bash
VENV  := .venv
PYTEST_ARGS ?=
# Two scenarios at a time (the test bed has 2 cores; most of a scenario is waiting).
PYTEST_WORKERS ?= 2

.PHONY: help setup test lint bench demo demo-clean clean

help:
	@echo "make demo        build the stack on a local test container (sets everything up)"
	@echo "make test        set up the test bed and run every check (lint, sanity, Molecule)"
	@echo "make lint        yamllint, ansible-lint, argument specs, role docs, collection checks, ansible-test sanity only"
	@echo "make bench       converge times, the demo stack's re-runs, deploys and serving -> docs/benchmarks.md"
	@echo "                 (SCENARIOS=\"stack serving\": some sections; roles demo stack oldnew deploys latency serving venv)"
	@echo "make demo-clean  remove the demo container"
	@echo "make clean       remove the virtualenv and caches (images and engine stay)"

setup:
	scripts/testbed.sh all

test: setup
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup tests $(PYTEST_ARGS)

lint:
	scripts/testbed.sh venv
	$(VENV)/bin/pytest tests/test_static.py tests/test_collection.py tests/test_docs.py tests/test_sanity.py $(PYTEST_ARGS)

# SCENARIOS: sections or role scenarios (none: all); BENCH_BASELINE: the commit "old vs new"
# compares with; BENCH_NAME/BENCH_HTTP_PORT/BENCH_HTTPS_PORT: the bench's own container.
bench: setup
	$(VENV)/bin/python scripts/bench.py $(SCENARIOS)

demo: setup
	scripts/demo.sh up

demo-clean:
	scripts/demo.sh down

clean:
	rm -rf $(VENV) .cache .pytest_cache
