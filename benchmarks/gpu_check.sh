#!/usr/bin/env bash
# The prepared device check (issue 13): at most 8 minutes on a GPU machine, seconds with --dry-run.
#   bash benchmarks/gpu_check.sh             # needs a GPU; prints a Markdown block for RESULTS.md
#   bash benchmarks/gpu_check.sh --dry-run   # tiny backbone, few steps, any machine (tested in CI)
# Runs the checkout in place (PYTHONPATH=.), so a machine whose python3 has torch, timm,
# scikit-learn and safetensors needs no install.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
exec timeout --signal=INT 480 "$PY" benchmarks/gpu_check.py "$@"
