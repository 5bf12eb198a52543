#!/usr/bin/env python
"""Generate the synthetic OpenMMLab datasets (det, seg, pose, action).

Example::

    python tools/make_synthetic_data.py --out data/synthetic --tasks det seg

Each task goes to ``<out>/<task>`` atomically; a task whose ``meta.json``
already records the same parameters is skipped unless ``--force`` is given.
Unset size knobs take each task's default. Every task gets three splits from
independent seeds: ``train``, ``val`` (LegoDNN profiling) and ``test``
(reports; as large as ``val`` unless ``--num-test`` says otherwise).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, Sequence

_REPO = Path(__file__).resolve().parents[1]
_TASKS = ('det', 'seg', 'pose', 'action')


def _load_synthetic() -> ModuleType:
    """Import ``mmlego.datasets.synthetic`` without its parent packages.

    The generator only needs numpy and cv2; loading it by path keeps the
    (often repeated, mostly skipping) CLI call free of the torch/OpenMMLab
    imports that ``mmlego.datasets`` pulls in.
    """
    name = '_mmlego_synthetic'
    if name in sys.modules:
        return sys.modules[name]
    pkg_dir = _REPO / 'mmlego' / 'datasets' / 'synthetic'
    spec = importlib.util.spec_from_file_location(
        name, pkg_dir / '__init__.py',
        submodule_search_locations=[str(pkg_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _progress_factory(quiet: bool) -> Callable[[str, int],
                                               Optional[Callable[[], None]]]:
    def factory(task: str, total: int) -> Optional[Callable[[], None]]:
        if quiet:
            return None
        print(f'[{task}] generating {total} samples', flush=True)
        try:
            from mmengine.utils import ProgressBar
        except ImportError:  # mmengine missing: no bar, still works
            return None
        bar = ProgressBar(total, file=sys.stdout)
        return bar.update
    return factory


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        description='Generate deterministic synthetic OpenMMLab datasets.')
    parser.add_argument('--out', default='data/synthetic',
                        help='output root (default: data/synthetic)')
    parser.add_argument('--tasks', nargs='+', default=list(_TASKS),
                        choices=_TASKS, metavar='TASK',
                        help='tasks to generate, any of: '
                        f'{" ".join(_TASKS)} (default: all)')
    parser.add_argument('--seed', type=int, default=0,
                        help='base random seed (default: 0)')
    parser.add_argument('--num-train', type=int, default=None,
                        help='training samples per task (default: per task)')
    parser.add_argument('--num-val', type=int, default=None,
                        help='validation samples per task '
                        '(default: per task)')
    parser.add_argument('--num-test', type=int, default=None,
                        help='test samples per task (default: as many as '
                        'validation)')
    parser.add_argument('--img-size', type=int, default=None,
                        help='image size in pixels, >= 32 (default: per '
                        'task: det/seg 128, pose 160, action 64)')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if up to date')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress output')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit code (argument errors exit with 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    synthetic = _load_synthetic()
    # Validate everything up front so that a bad knob writes nothing.
    try:
        for task in args.tasks:
            synthetic.resolve_params(task, args.seed, args.num_train,
                                     args.num_val, args.img_size,
                                     num_test=args.num_test)
    except ValueError as err:
        parser.error(str(err))
    factory = _progress_factory(args.quiet)
    for task in dict.fromkeys(args.tasks):
        start = time.perf_counter()
        result = synthetic.generate_task(
            task, args.out, args.seed, args.num_train, args.num_val,
            args.img_size, force=args.force, progress_factory=factory,
            num_test=args.num_test)
        if args.quiet:
            continue
        if result['skipped']:
            print(f'[{task}] up to date: {result["path"]} '
                  '(use --force to regenerate)')
        else:
            print(f'\n[{task}] wrote {result["path"]} in '
                  f'{time.perf_counter() - start:.1f}s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
