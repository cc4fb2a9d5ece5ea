PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
# How long `make soak` runs: seconds or minutes, e.g. 60s, 10m.
DURATION ?= 10m
# Where it writes soak.json and soak.png (CI's short run writes elsewhere than the committed ones).
SOAK_OUT ?= bench/results

.PHONY: help protos test lint demo bench bench-quick bench-peers soak clean

help:
	@echo "make demo        start Redis and the sidecar, load sample data, call it, stop everything"
	@echo "make test        install what the tests need and run them"
	@echo "make bench       the full benchmark (writes bench/results/latest.json)"
	@echo "make bench-quick the benchmark in under a minute (CI runs it)"
	@echo "make soak        load at half the maximum while Redis and the bundle server fail"
	@echo "                 (DURATION=10m by default; writes bench/results/soak.json and .png)"
	@echo "make protos      regenerate the wire code from protos/"
	@echo "make lint        ruff and mypy"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[server,demo]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[server,dev]'
	touch $@

$(BENCH_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[server,dev,bench]'
	touch $@

protos: $(DEV_STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=client --pyi_out=client \
		--grpc_python_out=client protos/featuresidecar/v1/*.proto

test: $(DEV_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check client sidecar tests bench
	$(VENV)/bin/mypy

bench: $(DEV_STAMP)
	$(PY) bench/run.py

bench-quick: $(DEV_STAMP)
	$(PY) bench/run.py --quick

# Feast goes into its own environment: it is a peer to measure, never a dependency.
bench-peers: $(DEV_STAMP)
	test -x bench/.peers-venv/bin/feast || { $(PYTHON) -m venv bench/.peers-venv \
		&& bench/.peers-venv/bin/pip install --quiet 'feast[redis]==0.67.0'; }
	$(PY) bench/run.py

soak: $(BENCH_STAMP)
	$(PY) bench/soak.py --duration $(DURATION) --out $(SOAK_OUT)

demo: $(DEMO_STAMP)
	$(VENV)/bin/feature-sidecar demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
