#!/usr/bin/env bash
# The algorithms' ordering at equal training steps and at (nearly) equal training time, for
# docs/results-smollm2.md. Run after run.sh: it evaluates checkpoints run.sh already kept (one every
# 100 steps), greedily, on the same prompts as run.sh's greedy evaluation, τ only:
#   equal steps: DFlash and DSpark at step 300, against Eagle3's final step 300;
#   equal time, ~25 min: Eagle3 at step 200 (28 min), DFlash's final draft (23 min), DSpark at step
#   600 (24 min, mid-schedule). (At 42 min the finals of Eagle3 and DSpark meet in run.sh's compare.)
# About 30 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")"
DS="${DEEPSPEC:-deepspec}"
RUNS=work/runs/smollm2
[ -d "$RUNS/dspark/step_300" ] || { echo "run run.sh first: equal_budgets.sh evaluates its checkpoints" >&2; exit 2; }
stage() { printf '\n== %s  (%s)\n' "$1" "$(date +%T)"; printf '%s\t%s\n' "$(date +%s)" "$1" >> work/stages.log; }

evaluate() {  # evaluate NAME CHECKPOINT: greedy, τ only, into work/eval/T0.0/NAME
  stage "eval: $1 at temperature 0.0"
  [ -f "work/eval/T0.0/$1/results.json" ] ||
    "$DS" eval --draft "$2" --temperature 0.0 --out "work/eval/T0.0/$1"
}
evaluate dflash-step300 "$RUNS/dflash/step_300"
evaluate dspark-step300 "$RUNS/dspark/step_300"
evaluate eagle3-step200 "$RUNS/eagle3/step_200"
evaluate dspark-step600 "$RUNS/dspark/step_600"

stage "compare at equal steps and at equal time"
"$DS" compare work/eval/T0.0/{eagle3,dflash-step300,dspark-step300} --baseline eagle3 --out work/compare/equal-steps
"$DS" compare work/eval/T0.0/{eagle3-step200,dflash,dspark-step600} --baseline eagle3 --out work/compare/equal-time
stage "equal budgets done"
