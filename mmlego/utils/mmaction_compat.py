"""Make ``import mmaction.models`` work with the published mmaction2 1.2.0 distribution.

Both the wheel and the sdist of mmaction2 1.2.0 lack ``mmaction/models/localizers/drn/``, while
``mmaction/models/localizers/__init__.py`` imports ``DRN`` from it unconditionally, so ``import mmaction.models``
raises ``ModuleNotFoundError``. The least invasive fix is to make that one import optional in the installed
file: every other model registers as usual and only ``DRN`` (a temporal grounding localizer mmlego never uses)
is absent. ``tools/install_env.sh`` runs ``python -m mmlego.utils.mmaction_compat --apply``; in your own
environment run the same command once after installing mmaction2.

The patch is idempotent, touches nothing when the ``drn`` package is present (a fixed future release), and is
checked by ``python -m mmlego.utils.mmaction_compat`` (exit code 1 while the import is still broken).
"""
import argparse
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Optional

_BROKEN_LINE = re.compile(r'^from \.drn\.drn import DRN\n', re.MULTILINE)
_GUARDED = ('try:  # patched by mmlego: the mmaction2 1.2.0 distribution lacks localizers/drn\n'
            '    from .drn.drn import DRN\n'
            'except ImportError:\n'
            '    DRN = None\n')


def localizers_init() -> Optional[Path]:
    """Return the installed ``mmaction/models/localizers/__init__.py`` without importing mmaction.models."""
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / 'models' / 'localizers' / '__init__.py'


def needs_patch(init_file: Path) -> bool:
    """Whether ``init_file`` imports DRN unguarded while the ``drn`` package is missing."""
    missing = not (init_file.parent / 'drn' / 'drn.py').exists()
    return missing and _BROKEN_LINE.search(init_file.read_text()) is not None


def apply(init_file: Path) -> bool:
    """Guard the DRN import in ``init_file``; return True if the file was changed. Writes atomically."""
    if not needs_patch(init_file):
        return False
    text = _BROKEN_LINE.sub(_GUARDED, init_file.read_text())
    text = text.replace("'TCANet', 'DRN']", "'TCANet'] + (['DRN'] if DRN is not None else [])")
    tmp = init_file.with_suffix('.py.mmlego-tmp')
    tmp.write_text(text)
    os.replace(tmp, init_file)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--apply', action='store_true', help='patch the installed file if needed')
    args = parser.parse_args(argv)
    init_file = localizers_init()
    if init_file is None or not init_file.exists():
        print('mmaction2 is not installed; nothing to do.')
        return 0
    if args.apply:
        changed = apply(init_file)
        print(f'{"patched" if changed else "already fine"}: {init_file}')
    if needs_patch(init_file):
        print(f'{init_file} imports the missing mmaction DRN localizer; run '
              '`python -m mmlego.utils.mmaction_compat --apply`.', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
