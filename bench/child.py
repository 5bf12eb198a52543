"""One benchmark measurement per subprocess (each OpenMMLab config has its own default scope and registries).

The child prints its result as one ``RESULT <json>`` line (:func:`emit`); the parent runs it and reads that line
back (:func:`run_child`), so logs and warnings on the child's stdout do not get in the way.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

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
