#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded synthetic default.
# Until the LegoDNN pipeline lands: make the synthetic data, train a teacher, evaluate it and print its metric.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-.venv/bin/python}
CONFIG=${DEMO_CONFIG:-configs/action/tsn/tsn_r18_synthaction.py}
NAME=$(basename "$CONFIG" .py)
WORK_DIR=${DEMO_WORK_DIR:-work_dirs/demo/$NAME}

"$PY" tools/make_synthetic_data.py --out data/synthetic
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
CKPT=$(cat "$WORK_DIR/last_checkpoint")
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" | tee "$WORK_DIR/test.log"
echo
echo "Teacher: $CONFIG"
echo "Checkpoint: $CKPT"
grep -E "Epoch\(test\).*\[[0-9]+/[0-9]+\]" "$WORK_DIR/test.log" | tail -n 1 | sed 's/.*\]  */Metric: /'
