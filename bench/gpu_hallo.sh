#!/usr/bin/env bash
# The hallo GPU table in one call, inside 8 minutes on an H200 (not run yet: no GPU was lent):
# random full-size weights (no downloads), 512x512, 40 DDIM steps, CFG 3.5, 16-frame clips, the
# first 3 clips of each job after prepare of the whole clip; fp16 (the reference's dtype) and
# bf16 on 10 s, fp16 on 120 s (peak CUDA memory against the 10 s job: the memory-flat check).
# Writes $OUT/gpu_hallo.md when $OUT is set.
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
out="${OUT:-/tmp}/gpu_hallo.md"
common=(--config full --device cuda --sizes 512 --steps 40 --guidance 3.5 --max-chunks 3 --threads 8)
{
  timeout 200 .venv/bin/python -m bench.hallo "${common[@]}" --dtype fp16 --memory
  timeout 120 .venv/bin/python -m bench.hallo "${common[@]}" --dtype bf16 --seconds 10
} 2>&1 | grep -v '^W0000\|^I0000\|^WARNING' | tee "$out"
