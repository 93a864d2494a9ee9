#!/usr/bin/env bash
# Two follow-up measurements for docs/results-smollm2.md, run after run.sh (they reuse its target,
# cache and runs), each evaluated greedily on the same prompts as run.sh:
#   1. the reduced draft vocabulary: DFlash with the full 49,152-token vocabulary and frozen
#      target head, same 100 steps, against run.sh's 8,192-token DFlash;
#   2. the training budget: DFlash and DSpark trained 3x longer (300 steps).
# About 55 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")"
DS="${DEEPSPEC:-deepspec}"
[ -d work/runs/smollm2/dflash ] || { echo "run run.sh first: ablations.sh reuses its work/ directory" >&2; exit 2; }
stage() { printf '\n== %s  (%s)\n' "$1" "$(date +%T)"; printf '%s\t%s\n' "$(date +%s)" "$1" >> work/stages.log; }

run() {  # run NAME SPEC [--set ...]: train, then evaluate greedily into work/eval/T0.0/NAME
  local name=$1 spec=$2
  shift 2
  stage "ablation train: $name"
  "$DS" train "$spec" --set "name=\"$name\"" "$@"
  stage "ablation eval: $name at temperature 0.0"
  "$DS" eval --draft "work/runs/smollm2/$name" --temperature 0.0 --out "work/eval/T0.0/$name"
}

# draft_vocab_size = the target's vocabulary size means no reduction (the frozen target head).
run dflash-fullvocab dflash.toml --set draft.draft_vocab_size=49152
run dflash-300 dflash.toml --set train.max_steps=300 --set train.save_every=100 --set train.val_every=100
run dspark-300 dspark.toml --set train.max_steps=300 --set train.save_every=100 --set train.val_every=100

stage "compare the ablations"
"$DS" compare work/eval/T0.0/dflash work/eval/T0.0/dflash-fullvocab --baseline dflash --out work/compare/vocab
"$DS" compare work/eval/T0.0/{eagle3,dflash,dspark,dflash-300,dspark-300} --baseline eagle3 --out work/compare/steps
stage "ablations done"
