#!/usr/bin/env bash
# The one prepared GPU check: on a CUDA machine, in under ~8 minutes on one GPU,
#   1. installs deepspec with its CUDA torch and triton into .venv-gpu,
#   2. runs the GPU tests: the Triton kernels compiled on CUDA (not the interpreter), flex attention's
#      gradients against dense attention,
#   3. trains each algorithm ~100 steps on the quick tiny target with bf16, fused losses, flex
#      attention (train.attention = auto on CUDA) and torch.compile (online features, so no cache stage), and evaluates each with --speed,
#   4. counts FLOPs per step and measures the memory benchmark,
# and prints one summary (also written to $OUT/gpu-check/summary.txt).
#
#   bash scripts/gpu_check.sh prepare                # where a package index is reachable: the wheels below
#   bash scripts/gpu_check.sh                        # on the CUDA machine
#   GPU_CHECK_DRY_RUN=1 bash scripts/gpu_check.sh   # the same flow on a CPU with 4 steps (checks the script)
# The CUDA machine may have no network: the install is a venv over the system Python's packages (its
# CUDA torch, triton, transformers), deepspec without dependency resolution, and whatever of
# deepspec's dependencies the system lacks from the wheels `prepare` downloads into $WHEELS
# (default .gpu-wheels, ignored by git; copy it along). Knobs: OUT (results; default a temporary
# directory), STEPS (default 100), VENV (default .venv-gpu), WHEELS, PY_VERSION (of the CUDA
# machine's python3, for `prepare`; default 3.12).
set -uo pipefail
cd "$(dirname "$0")/.."
wheels="${WHEELS:-.gpu-wheels}"
# What deepspec needs that the CUDA image (torch, triton, transformers, accelerate, typer, rich, pytest
# and the scientific stack) lacks; downloaded without their dependencies, which the image has.
DEPS=(pydantic pydantic-core annotated-types typing-inspection zstandard tomli-w datasets dill multiprocess gguf)
if [ "${1:-}" = prepare ]; then
  python3 -m pip download --quiet --only-binary=:all: --python-version "${PY_VERSION:-3.12}" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --no-deps -d "$wheels" "${DEPS[@]}" && echo "wheels for the CUDA machine in $wheels ($(du -sh "$wheels" | cut -f1))"
  exit $?
fi
dry="${GPU_CHECK_DRY_RUN:-0}"
out="${OUT:-$(mktemp -d)}/gpu-check"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
t0=$(date +%s)

if [ "$dry" = 1 ]; then
  venv="${VENV:-.venv}"; steps="${STEPS:-4}"; sets=(--set train.mixed_precision=no --set train.fused_losses=off)
else
  venv="${VENV:-.venv-gpu}"; steps="${STEPS:-100}"
  sets=(--set train.mixed_precision=bf16 --set train.fused_losses=on --set train.compile=true)
  if ! command -v nvidia-smi >/dev/null 2>&1; then echo "no nvidia-smi: this is not a CUDA machine" >&2; exit 1; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /' | tee -a "$summary"
  {
    [ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
    # what the image lacks comes from the carried wheels, never the network
    "$venv/bin/pip" install --quiet --no-index --no-deps --find-links "$wheels" "${DEPS[@]}" \
      && "$venv/bin/pip" install --quiet --no-index --no-deps --no-build-isolation -e .
  } >"$out/setup.log" 2>&1 || { note "setup FAILED (see $out/setup.log; run \`bash scripts/gpu_check.sh prepare\` where an index is reachable)"; exit 1; }
fi
py="$venv/bin/python"
ds="$venv/bin/deepspec"
export DEEPSPEC_HOME="$out/home"
"$py" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())" | tee -a "$summary"

# 2. GPU tests: the kernels compiled natively (DEEPSPEC_KERNELS_NATIVE=1), the fused drafts, and flex
#    attention's gradients against dense attention (CPU has no flex backward).
if [ "$dry" = 1 ]; then native=0; else native=1; fi
if DEEPSPEC_KERNELS_NATIVE=$native "$venv/bin/pytest" -q tests/kernels "tests/drafts/test_algorithms.py::test_flex_attention_gradients_equal_dense_ones_on_cuda" \
    >"$out/tests.log" 2>&1; then
  note "GPU tests (kernels, flex attention gradients): $(tail -n 1 "$out/tests.log")"
else
  note "GPU tests FAILED: $(tail -n 1 "$out/tests.log") (see $out/tests.log)"
fi

# 3. Train and evaluate each algorithm on the quick tiny target.
"$py" - "$out/chats.jsonl" <<'EOF'
import json, sys
from deepspec_core.targets import tiny_data as td
root = td.stdlib_root()
convs = [c for src in td.read_sources(td.stdlib_files(root)[:300], root) for c in td.chat_pairs(src, max_answer_chars=600)]
open(sys.argv[1], "w").write("".join(json.dumps(c) + "\n" for c in convs[:400]))
EOF
for algo in $("$py" -c "from deepspec_core.spec import algorithms; print(' '.join(algorithms()))"); do
  start=$(date +%s)
  if "$ds" train "tiny-$algo" --no-progress "${sets[@]}" --set target.model=tiny-quick \
      --set "data.train=['$out/chats.jsonl']" --set data.max_length=256 --set cache.online=true \
      --set "output.root='$out/runs'" --set train.max_steps="$steps" --set train.save_every="$steps" \
      --set train.val_every="$steps" --set train.val_samples=16 --set train.global_batch_size=16 \
      --set train.micro_batch_size=16 >"$out/train-$algo.log" 2>&1; then
    train_s=$(( $(date +%s) - start ))
    if "$ds" eval --draft "$out/runs/tiny/tiny-$algo" --benchmarks humaneval,mbpp --limit 8 --data-dir packaged \
        --max-new-tokens 64 --temperature 0 --speed --out "$out/eval-$algo" >"$out/eval-$algo.log" 2>&1; then
      "$py" - "$out/eval-$algo/results.json" "$algo" "$train_s" <<'EOF' | tee -a "$summary"
import json, sys
r = json.load(open(sys.argv[1]))
m = r["macro"]
print(f"{sys.argv[2]}: trained in {sys.argv[3]} s; macro tau {m['tau']:.2f}, speedup {m.get('speedup') or 0:.2f}x "
      f"on {r['protocol']['device']}")
EOF
    else
      note "$algo: eval FAILED (see $out/eval-$algo.log)"
    fi
  else
    note "$algo: training FAILED (see $out/train-$algo.log)"
  fi
done

# 4. FLOPs per step and the memory benchmark.
"$py" benchmarks/train_flops.py >"$out/flops.txt" 2>&1 && sed 's/^/flops: /' "$out/flops.txt" | tee -a "$summary" \
  || note "train_flops FAILED (see $out/flops.txt)"
if [ "$dry" = 1 ]; then mem_args=(dspark 128); else mem_args=(dspark 256 512 1024); fi
"$py" benchmarks/draft_memory.py "${mem_args[@]}" >"$out/memory.txt" 2>&1 \
  && sed 's/^/memory: /' "$out/memory.txt" | tee -a "$summary" || note "draft_memory FAILED (see $out/memory.txt)"

note "gpu check done in $(( $(date +%s) - t0 )) s; logs and results in $out"
