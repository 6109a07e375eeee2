#!/usr/bin/env bash
# GPU check (issue 7): on a GPU machine with the project installed in .venv, measures the
# streaming vs compute-only training rate, the authors' on-the-fly way, and nsa-gen's
# scaling. Full log: ${LOG:-gpu_check.log}; the table is printed last. A few minutes.
#   bash bench/gpu_check.sh                  # defaults: 20,000 ELPV examples at 256, batch 64
#   bash bench/gpu_check.sh --steps 50       # any option of bench/gpu_check.py
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
.venv/bin/python bench/gpu_check.py "$@" 2>&1 | tee "${LOG:-gpu_check.log}"
