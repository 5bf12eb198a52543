"""One benchmark measurement per subprocess (each OpenMMLab config has its own default scope and registries).

The child prints its result as one ``RESULT <json>`` line (:func:`emit`); the parent runs it and reads that line
back (:func:`run_child`), so logs and warnings on the child's stdout do not get in the way.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
import sys
from typing import Any, Callable

_PREFIX = 'RESULT '


def emit(result: Any) -> None:
    """Prints ``result`` as the child's result line."""
    print(_PREFIX + json.dumps(result), flush=True)


def run_child(script: str, args: list[str], cwd: str) -> tuple[Any | None, str]:
    """Runs ``python script *args`` in ``cwd``; returns its result (None if it failed) and the tail of its stderr."""
    proc = subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith(_PREFIX)), None)
    if proc.returncode != 0 or line is None:
        return None, proc.stderr[-3000:]
    return json.loads(line[len(_PREFIX):]), proc.stderr[-3000:]


def merge_results(path: str, update: Callable[[dict], None]) -> None:
    """Applies ``update`` to the ``results`` of a benchmark JSON in bench/run.py's format (created if missing) and
    writes it back atomically, so a benchmark run for a few models keeps the others' entries."""
    merged = json.load(open(path)) if osp.exists(path) else dict(quick=False, results={})
    update(merged['results'])
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(merged, f, indent=1)
    os.replace(path + '.tmp', path)
