#!/usr/bin/env bash
# Set up .venv and run the main job: the whole pipeline on the embedded tiny target.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh .venv
.venv/bin/deepspec demo "$@"
