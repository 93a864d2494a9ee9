#!/usr/bin/env bash
# The test command: a fresh virtual environment, the install the README describes, pytest, ruff and mypy.
#   bash scripts/test.sh [PYTEST_ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
# triton too: its kernels are tested on the CPU through Triton's interpreter.
EXTRAS=dev,kernels bash scripts/setup.sh "$venv"
"$venv/bin/ruff" check src tests kernels benchmarks examples
"$venv/bin/mypy" src
# A private DEEPSPEC_HOME keeps the tests from reading or writing the user's ~/.deepspec.
DEEPSPEC_HOME="$(dirname "$venv")/home" "$venv/bin/pytest" -q --durations=15 "$@"
