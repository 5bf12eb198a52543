#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded synthetic default (TSN on synthetic moving shapes):
# synthetic data -> teacher -> LegoDNN pipeline (blocks, descendants, retraining, profiling) -> block bank ->
# a sweep of memory budgets, measured, with the accuracy/memory/latency table and plots.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-.venv/bin/python}
TEACHER_CONFIG=${DEMO_TEACHER_CONFIG:-configs/action/tsn/tsn_r18_synthaction.py}
LEGO_CONFIG=${DEMO_CONFIG:-configs/action/tsn/tsn_r18_legodnn_synthaction.py}
WORK_DIR=${DEMO_WORK_DIR:-work_dirs/demo}
TEACHER_DIR="$WORK_DIR/$(basename "$TEACHER_CONFIG" .py)"
LEGO_DIR="$WORK_DIR/$(basename "$LEGO_CONFIG" .py)"
SWEEP=${DEMO_SWEEP:-5}

"$PY" tools/make_synthetic_data.py --out data/synthetic
echo "== 1/3 teacher: $TEACHER_CONFIG"
"$PY" tools/train.py "$TEACHER_CONFIG" --work-dir "$TEACHER_DIR"
TEACHER=$(cat "$TEACHER_DIR/last_checkpoint")
echo "== 2/3 LegoDNN pipeline: $LEGO_CONFIG (teacher $TEACHER)"
"$PY" tools/train.py "$LEGO_CONFIG" --work-dir "$LEGO_DIR" --cfg-options "load_from=$TEACHER" train_cfg.overwrite=True ${DEMO_PIPELINE_OPTIONS:-}
echo "== 3/3 sweep of $SWEEP memory budgets over the bank"
"$PY" tools/test.py "$LEGO_CONFIG" "$LEGO_DIR/bank" --work-dir "$LEGO_DIR/test" --sweep "$SWEEP" \
  --sweep-dir "$LEGO_DIR/sweep" --cfg-options "load_from=$TEACHER"
echo
echo "Bank:   $LEGO_DIR/bank"
echo "Table:  $LEGO_DIR/sweep/sweep.csv"
echo "Plots:  $LEGO_DIR/sweep/sweep_budgets.png $LEGO_DIR/sweep/sweep_memory.png $LEGO_DIR/sweep/sweep_latency.png"
