"""Deterministic synthetic datasets in standard OpenMMLab formats.

Four small, learnable datasets that the packages' own dataset classes load:

* ``det``: COCO instances (mmdet ``CocoDataset``), see :mod:`.detection`.
* ``seg``: image / PNG label-map folders (mmseg ``BaseSegDataset``), see
  :mod:`.segmentation`.
* ``pose``: COCO-17 keypoints (mmpose ``CocoDataset``), see :mod:`.pose`.
* ``action``: raw frames + file lists (mmaction ``RawframeDataset``), see
  :mod:`.action`.

:func:`generate_all` writes each task into ``<root>/<task>`` atomically and
skips a task whose ``meta.json`` already records the same parameters.

Every task has three splits drawn from independent seeds: ``train``, ``val``
(profiling: LegoDNN's accuracy drops and best retraining epochs) and ``test``
(the size of ``val`` by default; reports), see :data:`SPLITS`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Optional

from .action import (ACTION_CLASSES, ACTION_DEFAULTS, action_params,
                     generate_action)
from .detection import (DET_CLASSES, DET_DEFAULTS, detection_params,
                        generate_detection)
from .pose import (COCO_SKELETON, KEYPOINT_NAMES, POSE_CLASSES,
                   POSE_DEFAULTS, generate_pose, pose_params)
from .segmentation import (SEG_CLASSES, SEG_DEFAULTS, SEG_PALETTE,
                           generate_segmentation, segmentation_params)
from .shapes import FORMAT_VERSION, SHAPE_KINDS, SPLITS, check_params

#: Task names, in generation order.
TASKS = ('det', 'seg', 'pose', 'action')

#: Default output root, relative to the repository.
DEFAULT_ROOT = os.path.join('data', 'synthetic')

_GENERATORS: dict[str, tuple[Callable[..., dict], Callable[..., dict],
                             dict]] = {
    'det': (generate_detection, detection_params, DET_DEFAULTS),
    'seg': (generate_segmentation, segmentation_params, SEG_DEFAULTS),
    'pose': (generate_pose, pose_params, POSE_DEFAULTS),
    'action': (generate_action, action_params, ACTION_DEFAULTS),
}

#: Factory ``(task, total) -> per-sample callback`` used for progress bars.
ProgressFactory = Callable[[str, int], Optional[Callable[[], Any]]]


def resolve_params(task: str, seed: int = 0, num_train: Optional[int] = None,
                   num_val: Optional[int] = None,
                   img_size: Optional[int] = None,
                   frames: Optional[int] = None,
                   num_test: Optional[int] = None) -> dict:
    """Return the full, validated parameters of one task.

    ``None`` knobs take the task's default (``num_test``: the resolved
    ``num_val``). ``frames`` only applies to ``action``.

    Raises:
        ValueError: On an unknown task or an invalid knob value.
    """
    if task not in _GENERATORS:
        raise ValueError(f'unknown task {task!r}; pass one or more of '
                         f'{", ".join(TASKS)}')
    _, make_params, defaults = _GENERATORS[task]
    knobs = dict(seed=seed, num_train=num_train, num_val=num_val,
                 img_size=img_size)
    if task == 'action':
        knobs['frames'] = frames
    knobs = {k: defaults[k] if v is None else v for k, v in knobs.items()}
    knobs['num_test'] = knobs['num_val'] if num_test is None else num_test
    check_params(knobs['num_train'], knobs['num_val'], knobs['img_size'],
                 knobs['seed'], knobs.get('frames'), knobs['num_test'])
    return make_params(**knobs)


def is_up_to_date(task_dir: str, task: str, params: dict) -> bool:
    """Whether ``task_dir/meta.json`` records this task, params and format."""
    try:
        with open(os.path.join(task_dir, 'meta.json'), encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict)
            and meta.get('format_version') == FORMAT_VERSION
            and meta.get('task') == task and meta.get('params') == params)


def generate_task(task: str, root: str = DEFAULT_ROOT, seed: int = 0,
                  num_train: Optional[int] = None,
                  num_val: Optional[int] = None,
                  img_size: Optional[int] = None,
                  frames: Optional[int] = None, force: bool = False,
                  progress_factory: Optional[ProgressFactory] = None,
                  num_test: Optional[int] = None) -> dict:
    """Generate one task into ``root/task`` atomically, unless up to date.

    The data is written to ``root/.<task>.tmp-<random suffix>`` and moved into place
    with :func:`os.replace`, so ``root/task`` is either the old complete
    dataset or the new complete one.

    Args:
        task: One of :data:`TASKS`.
        root: Output root directory.
        seed: Base seed.
        num_train: Training samples (``None``: task default).
        num_val: Validation samples (``None``: task default).
        img_size: Image size (``None``: task default).
        frames: Frames per clip, ``action`` only (``None``: default).
        force: Regenerate even if ``root/task`` is up to date.
        progress_factory: Optional ``(task, total) -> callback``.
        num_test: Test samples (``None``: as many as validation).

    Returns:
        ``dict(task=..., path=..., skipped=bool, meta=dict)``.
    """
    params = resolve_params(task, seed, num_train, num_val, img_size, frames,
                            num_test)
    dst = os.path.join(root, task)
    if not force and is_up_to_date(dst, task, params):
        with open(os.path.join(dst, 'meta.json'), encoding='utf-8') as f:
            meta = json.load(f)
        return dict(task=task, path=dst, skipped=True, meta=meta)
    generate = _GENERATORS[task][0]
    os.makedirs(root, exist_ok=True)
    progress = None
    if progress_factory is not None:
        progress = progress_factory(task, sum(params[f'num_{split}']
                                              for split in SPLITS))
    tmp = tempfile.mkdtemp(prefix=f'.{task}.tmp-', dir=root)
    old = None
    try:
        os.chmod(tmp, 0o755)
        meta = generate(tmp, progress=progress, **params)
        if os.path.lexists(dst):
            # rename() onto an empty directory is allowed; then clean up.
            old = tempfile.mkdtemp(prefix=f'.{task}.old-', dir=root)
            os.replace(dst, old)
        os.replace(tmp, dst)
    except BaseException:
        if old is not None and not os.path.lexists(dst):
            os.replace(old, dst)  # put the previous dataset back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dict(task=task, path=dst, skipped=False, meta=meta)


def generate_all(root: str = DEFAULT_ROOT, tasks: Iterable[str] = TASKS,
                 seed: int = 0, num_train: Optional[int] = None,
                 num_val: Optional[int] = None,
                 img_size: Optional[int] = None,
                 frames: Optional[int] = None, force: bool = False,
                 progress_factory: Optional[ProgressFactory] = None,
                 num_test: Optional[int] = None) -> list[dict]:
    """Generate several tasks (see :func:`generate_task`).

    All arguments are validated before anything is written.

    Returns:
        One :func:`generate_task` result per task, in the given order.
    """
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise ValueError(f'no task given; pass one or more of '
                         f'{", ".join(TASKS)}')
    for task in tasks:
        resolve_params(task, seed, num_train, num_val, img_size, frames,
                       num_test)
    return [generate_task(task, root, seed, num_train, num_val, img_size,
                          frames, force, progress_factory, num_test)
            for task in tasks]


__all__ = [
    'ACTION_CLASSES', 'ACTION_DEFAULTS', 'COCO_SKELETON', 'DEFAULT_ROOT',
    'DET_CLASSES', 'DET_DEFAULTS', 'FORMAT_VERSION', 'KEYPOINT_NAMES',
    'POSE_CLASSES', 'POSE_DEFAULTS', 'SEG_CLASSES', 'SEG_DEFAULTS',
    'SEG_PALETTE', 'SHAPE_KINDS', 'SPLITS', 'TASKS', 'generate_action', 'generate_all',
    'generate_detection', 'generate_pose', 'generate_segmentation',
    'generate_task', 'is_up_to_date', 'resolve_params'
]
