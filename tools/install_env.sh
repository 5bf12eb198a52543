#!/usr/bin/env bash
# Creates .venv/ at the repository root with the whole OpenMMLab stack, pinned in requirements/constraints.txt.
# Idempotent: a second run on the same machine reuses the cached mmcv wheel and finishes in a few minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${MMLEGO_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
CONSTRAINTS=$ROOT/requirements/constraints.txt
pin() { sed -n "s/^$1==\(.*\)$/\1/p" "$CONSTRAINTS"; }
TORCH=$(pin torch); MMCV=$(pin mmcv)
log() { printf '[install_env] %s\n' "$*"; }

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PY=$VENV/bin/python
PIP=("$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS")

log "torch $TORCH"
"${PIP[@]}" -q torch torchvision setuptools wheel ninja

# mmcv's ops are compiled with CUDA where torch sees a GPU (FORCE_CUDA), else for the CPU only; the wheel is
# ABI-bound to torch: cache it per torch version and per CPU/CUDA build, so a GPU machine never reuses a CPU wheel.
CUDA=$("$PY" -c "import torch; print(torch.version.cuda if torch.cuda.is_available() and torch.version.cuda else '')")
if [ -n "$CUDA" ]; then BUILD=cuda$CUDA; FORCE_CUDA=1; else BUILD=cpu; FORCE_CUDA=0; fi
CACHE=${MMLEGO_CACHE:-$HOME/.cache/mmlego}/mmcv-$MMCV-torch-$TORCH-$BUILD
LEGACY=${MMLEGO_CACHE:-$HOME/.cache/mmlego}/mmcv-$MMCV-torch-$TORCH  # before the key had -cpu: CPU builds
if [ "$BUILD" = cpu ] && [ -d "$LEGACY" ] && [ ! -d "$CACHE" ]; then mv "$LEGACY" "$CACHE"; fi
ops_match="from mmcv.ops import get_compiling_cuda_version as v; assert (v() != 'not available') == bool('$CUDA')"
if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV'; $ops_match" 2>/dev/null; then
  wheel=$(ls "$CACHE"/mmcv-"$MMCV"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    log "building mmcv $MMCV ($BUILD) from source with C++20 (about 10 minutes on 2 cores; cached in $CACHE)"
    src=$(mktemp -d)
    trap 'rm -rf "$src"' EXIT
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$src" "mmcv==$MMCV"
    tar -xzf "$src"/mmcv-"$MMCV".tar.gz -C "$src"
    # torch >= 2.10 headers require C++20; mmcv 2.1.0 hard-codes c++14/c++17.
    sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV/setup.py"
    mkdir -p "$CACHE"
    (cd "$src/mmcv-$MMCV" && MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$src/dist" .)
    # Atomic: a half-written wheel never lands in the cache.
    built=$(ls "$src"/dist/mmcv-*.whl)
    cp "$built" "$CACHE/.tmp.whl" && mv "$CACHE/.tmp.whl" "$CACHE/$(basename "$built")"
    wheel=$CACHE/$(basename "$built")
  fi
  log "installing $wheel"
  "$PY" -m pip uninstall -y -q mmcv 2>/dev/null || true  # e.g. a CPU build on a machine that now has a GPU
  "${PIP[@]}" -q "$wheel"
fi

log "OpenMMLab packages and mmlego"
"${PIP[@]}" -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/export.txt" -r "$ROOT/requirements/tests.txt"
# xtcocotools' wheel is built against numpy 1 ("numpy.dtype size changed" under numpy 2): rebuild it.
if ! "$PY" -c "import xtcocotools.mask" 2>/dev/null; then
  "${PIP[@]}" -q --force-reinstall --no-deps --no-build-isolation --no-binary xtcocotools xtcocotools
fi
"${PIP[@]}" -q --no-deps -e "$ROOT"
"$PY" -m mmlego.utils.mmaction_compat --apply
"$PY" -c "import mmlego, mmcv.ops, mmdet.models, mmseg.models, mmpose.models, mmaction.models, pulp; print('[install_env] ok')"
