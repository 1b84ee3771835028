#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): SFT -> reward model -> PPO (KL, cPM) -> TRL GRPO
# on one device in bf16, ~160 M-parameter model; writes out/gpu_check.md (the docs' GPU table) and
# out/gpu_check.json.  On a machine without CUDA it runs the tiny model on CPU (the CI path).
# Usage: bash benchmarks/gpu_check.sh [extra gpu_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec "$PY" benchmarks/gpu_check.py --markdown out/gpu_check.md --json out/gpu_check.json "$@"
