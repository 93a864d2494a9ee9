#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install deepspec into it, editable, with dev extras.
#   bash scripts/setup.sh [VENV_DIR]        (default: .venv)
# TORCH_SPEC picks the torch build installed first (default torch==2.13.0). Installing torch before
# the project keeps pip from resolving the open `torch>=2.4` range to a different, multi-GB build.
# EXTRAS picks the optional extras (default: dev; the test command adds kernels for Triton).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "$venv/bin/pip" install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
"$venv/bin/pip" install --quiet -e ".[${EXTRAS:-dev}]"
"$venv/bin/deepspec" --version
