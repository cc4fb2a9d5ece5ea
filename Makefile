PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: help venv protos test lint typecheck demo bench bench-quick bench-peers clean

help:
	@echo "make demo        start Redis and the sidecar, load sample data, call it, stop everything"
	@echo "make test        install what the tests need and run them"
	@echo "make protos      regenerate the wire code from protos/"
	@echo "make lint        ruff and mypy"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[server,dev]'
	touch $(STAMP)

venv: $(STAMP)

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=client --pyi_out=client \
		--grpc_python_out=client protos/featuresidecar/v1/*.proto

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check client sidecar tests bench
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(VENV)/bin/feature-sidecar demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
