#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# On a CPU-only machine pass --device cpu (gloo backend).
set -euo pipefail
CONFIG=$1
NPROCS=$2
PORT=${PORT:-29500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY=$ROOT/.venv/bin/python
exec "$PY" -m torch.distributed.run --nnodes=1 --nproc_per_node="$NPROCS" --master_port="$PORT" \
  "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
