#!/usr/bin/env bash
# The aniportrait GPU rows in one call (H200: well under 8 minutes): random full-size weights, 512x512,
# 25 steps, bf16, 10 s and 120 s of audio, the first 4 chunks of each after prepare of the whole clip.
# Writes $OUT/gpu_aniportrait.md when $OUT is set.
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec .venv/bin/python -m bench.aniportrait --config full --device cuda --dtype bf16 --seconds 10,120 \
  --max-chunks 4 --case-timeout-s 200 --output "${OUT:-/tmp}/gpu_aniportrait.md" "$@"
