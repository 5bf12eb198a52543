#!/usr/bin/env bash
# Several models under one device budget: YOLOv3 + FCN + SimpleBaseline on the synthetic data, each teacher trained
# and its bank built as a user would (tools/train.py), then one shared budget trace replayed over the three
# (tools/replay_budget_trace.py): work_dirs/multi/trace/{trace.csv,trace.png}. Existing teachers and banks are reused.
#   MULTI_TEACHER_OPTIONS / MULTI_PIPELINE_OPTIONS: extra --cfg-options for every teacher / pipeline run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-.venv/bin/python}
WORK_DIR=${MULTI_WORK_DIR:-work_dirs/multi}
TRACE=${MULTI_TRACE:-configs/_base_/budgets/shared_device_trace.yaml}
declare -A TEACHERS=(
  [yolov3]=configs/detection/yolov3/yolov3_r18_synthdet.py
  [fcn]=configs/segmentation/fcn/fcn_r18-d8_synthseg.py
  [simplebaseline]=configs/pose/simplebaseline/simplebaseline_res18_synthpose-128x128.py)
declare -A LEGO=(
  [yolov3]=configs/detection/yolov3/yolov3_r18_legodnn_synthdet.py
  [fcn]=configs/segmentation/fcn/fcn_r18-d8_legodnn_synthseg.py
  [simplebaseline]=configs/pose/simplebaseline/simplebaseline_res18_legodnn_synthpose-128x128.py)

"$PY" tools/make_synthetic_data.py --out data/synthetic
MODELS=()
for name in yolov3 fcn simplebaseline; do
  teacher_dir="$WORK_DIR/$name/teacher"
  if [ ! -f "$teacher_dir/last_checkpoint" ]; then
    echo "== teacher $name: ${TEACHERS[$name]}"
    "$PY" tools/train.py "${TEACHERS[$name]}" --work-dir "$teacher_dir" ${MULTI_TEACHER_OPTIONS:+--cfg-options $MULTI_TEACHER_OPTIONS}
  fi
  teacher=$(cat "$teacher_dir/last_checkpoint")
  if [ ! -f "$WORK_DIR/$name/lego/bank/manifest.json" ]; then
    echo "== LegoDNN pipeline $name: ${LEGO[$name]}"
    "$PY" tools/train.py "${LEGO[$name]}" --work-dir "$WORK_DIR/$name/lego" --cfg-options "load_from=$teacher" \
      ${MULTI_PIPELINE_OPTIONS:-}
  fi
  MODELS+=(--model "${LEGO[$name]}" "$WORK_DIR/$name/lego/bank" "$teacher" --name "$name")
done
echo "== shared budget trace $TRACE over yolov3 + fcn + simplebaseline"
"$PY" tools/replay_budget_trace.py "$TRACE" "${MODELS[@]}" --out "$WORK_DIR/trace"
