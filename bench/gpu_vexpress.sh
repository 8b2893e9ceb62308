#!/usr/bin/env bash
# The vexpress GPU table in one call (see bench/gpu_table.py); writes $OUT/gpu_table.md when $OUT is set.
# Inductor's caches go to a folder kept between the cases, so each dtype compiles once.
set -euo pipefail
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/parla-inductor-cache}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec .venv/bin/python -m bench.gpu_table --output "${OUT:-/tmp}/gpu_table.md" "$@"
