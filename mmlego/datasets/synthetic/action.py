"""Synthetic action-recognition clips (mmaction ``RawframeDataset``).

Layout under ``out_dir``::

    rawframes/<clip_name>/img_00001.jpg ... img_000NN.jpg
    train_list.txt  val_list.txt  test_list.txt
                                     lines "<clip_name> <num_frames> <label>"
    classes.txt                      one class name per line
    meta.json

Clip names are ``train_000000``, ``val_000000``, ``test_000000``, ...
(relative to ``rawframes``). Load with ``dict(type='RawframeDataset',
ann_file=out_dir + '/train_list.txt',
data_prefix=dict(img=out_dir + '/rawframes'), filename_tmpl='img_{:05}.jpg',
start_index=1)``.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from .shapes import (SHAPE_KINDS, ProgressFn, add_noise, blend_polygon,
                     check_params, contrasting_color, ensure_dirs,
                     fill_polygon, make_background, make_meta, sample_rng,
                     save_jpeg, shape_polygon, split_sizes, tick, write_json)

#: Action classes; the label is the index.
ACTION_CLASSES = ('move_right', 'move_left', 'move_up', 'move_down', 'grow',
                  'shrink')

#: Default knobs of :func:`generate_action`. 1920 training clips: on 480 a TSN teacher learns them by heart (100%
#: training accuracy, 0.47 val); on 1920 the quarter-width teacher reaches 0.83 val in about 5 min. 240 val and test
#: clips: one clip is 0.4 points of top-1.
ACTION_DEFAULTS = dict(num_train=1920, num_val=240, img_size=64, frames=16)

TASK_ID = 4

#: The trail shows the shape ``TRAIL_GAP`` and ``2 * TRAIL_GAP`` frames ago.
TRAIL_GAP = 4  # frames between trail ghosts: at ~1.7 px/frame a smaller gap hides the trail behind the shape
_TRAIL_ALPHAS = (0.4, 0.7)  # oldest first

_DIRECTIONS = {0: (1.0, 0.0), 1: (-1.0, 0.0), 2: (0.0, -1.0), 3: (0.0, 1.0)}


def action_params(seed: int = 0, num_train: int = 1920, num_val: int = 240,
                  img_size: int = 64, frames: int = 16,
                  num_test: Optional[int] = None) -> dict:
    """Return the parameter dict recorded in ``meta.json``."""
    return dict(seed=int(seed), num_train=int(num_train),
                num_val=int(num_val),
                num_test=int(num_val if num_test is None else num_test),
                img_size=int(img_size), frames=int(frames))


def _trajectory(rng: np.random.Generator, label: int, size: int,
                frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(T, 2)`` and sizes ``(T,)`` for frames ``-2g .. frames-1``.

    The first ``2 * TRAIL_GAP`` entries extrapolate the motion backwards so
    that the first frame also has a trail.
    """
    scale = size / 64.0
    lead = 2 * TRAIL_GAP
    t = np.arange(-lead, frames, dtype=float) / max(1, frames - 1)  # 0..1
    if label in _DIRECTIONS:
        extent = rng.uniform(11, 18) * scale
        dist = rng.uniform(18, 30) * scale
        direction = np.array(_DIRECTIONS[label])
        # Small random deviation from the axis.
        direction = direction + rng.uniform(-0.15, 0.15) * direction[::-1]
        half = 0.64 * extent
        start = np.empty(2)
        for axis in range(2):
            move = direction[axis] * np.array([t[0], t[-1]]) * dist
            lo = half - move.min()
            hi = size - 1 - half - move.max()
            start[axis] = rng.uniform(lo, hi) if lo <= hi else size / 2
        centres = start + np.outer(t, direction) * dist
        sizes = np.full(len(t), extent)
    else:
        small, large = rng.uniform(7, 11) * scale, rng.uniform(24, 32) * scale
        s0, s1 = (small, large) if label == 4 else (large, small)
        # Interpolate linearly (extrapolated sizes stay positive).
        sizes = np.maximum(s0 + (s1 - s0) * t, 3.0 * scale)
        half = 0.64 * sizes.max()
        centre = rng.uniform(half, size - 1 - half, size=2) if \
            half < size / 2 else np.full(2, size / 2)
        centres = np.tile(centre, (len(t), 1))
    jitter = rng.normal(0.0, 0.35 * scale, centres.shape)
    return centres + jitter, sizes


def _render_clip(rng: np.random.Generator, label: int, size: int,
                 frames: int) -> list[np.ndarray]:
    background = make_background(rng, size, size, num_lines=(1, 3))
    # Low-contrast background: with a few hundred clips, a from-scratch model otherwise memorizes backgrounds
    # instead of learning the motion cue.
    background = (0.35 * background + 0.65 * background.mean(axis=(0, 1))).astype(np.uint8)
    scale = size / 64.0
    # Optional static distractor shape (drawn under the moving one).
    if rng.random() < 0.6:
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        extent = rng.uniform(8, 16) * scale
        centre = rng.uniform(0.64 * extent, size - 1 - 0.64 * extent, size=2)
        poly = shape_polygon(kind, *centre, extent,
                             rng.uniform(0, 2 * math.pi))
        fill_polygon(background, poly,
                     contrasting_color(rng, background.mean(axis=(0, 1))))
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    angle = rng.uniform(0, 2 * math.pi)
    spin = rng.uniform(-0.05, 0.05)
    color = contrasting_color(rng, background.mean(axis=(0, 1)), 120)
    centres, sizes = _trajectory(rng, label, size, frames)
    lead = 2 * TRAIL_GAP
    clip = []
    for f in range(frames):
        img = background
        for k, alpha in zip((2, 1), _TRAIL_ALPHAS):
            i = f + lead - k * TRAIL_GAP
            poly = shape_polygon(kind, *centres[i], sizes[i],
                                 angle + spin * (i - lead))
            img = blend_polygon(img, poly, color, alpha)
        i = f + lead
        img = img.copy()
        fill_polygon(img, shape_polygon(kind, *centres[i], sizes[i],
                                        angle + spin * f), color)
        clip.append(add_noise(rng, img, (4.0, 10.0)))
    return clip


def generate_action(out_dir: str, seed: int = 0, num_train: int = 1920,
                    num_val: int = 240, img_size: int = 64, frames: int = 16,
                    progress: ProgressFn = None,
                    num_test: Optional[int] = None) -> dict:
    """Write the synthetic action-recognition dataset into ``out_dir``.

    In each clip a shape of random kind and colour moves right/left/up/down
    (18..30 px over the clip at 64 px, scaled with ``img_size``) or grows or
    shrinks. Each frame also shows a fading trail of the shape 2 and 4 frames
    earlier, so a single frame carries a weak cue of the class; frames get
    fresh pixel noise, the background has a gradient, lines and often a
    static distractor shape. Labels are balanced (``index % 6``).

    Args:
        out_dir: Target directory (created if needed).
        seed: Base seed; the output is a pure function of the arguments.
        num_train: Number of training clips.
        num_val: Number of validation clips.
        img_size: Frame height and width in pixels (>= 32).
        frames: Frames per clip (>= 3).
        progress: Optional callback invoked once per clip.
        num_test: Number of test clips (``None``: ``num_val``); a split of
            its own seeds, disjoint from train and val.

    Returns:
        The ``meta.json`` content that was written.
    """
    check_params(num_train, num_val, img_size, seed, frames, num_test)
    ensure_dirs(out_dir, 'rawframes')
    counts = {}
    for split_id, split, count in split_sizes(num_train, num_val, num_test):
        lines = []
        for index in range(count):
            rng = sample_rng(seed, TASK_ID, split_id, index)
            label = index % len(ACTION_CLASSES)
            clip_name = f'{split}_{index:06d}'
            clip_dir = os.path.join(out_dir, 'rawframes', clip_name)
            os.makedirs(clip_dir, exist_ok=True)
            for f, img in enumerate(_render_clip(rng, label, img_size,
                                                 frames)):
                save_jpeg(os.path.join(clip_dir, f'img_{f + 1:05d}.jpg'), img)
            lines.append(f'{clip_name} {frames} {label}\n')
            tick(progress)
        with open(os.path.join(out_dir, f'{split}_list.txt'), 'w',
                  encoding='utf-8') as fh:
            fh.writelines(lines)
        counts[split] = dict(clips=count)
    with open(os.path.join(out_dir, 'classes.txt'), 'w',
              encoding='utf-8') as fh:
        fh.writelines(name + '\n' for name in ACTION_CLASSES)
    meta = make_meta('action', action_params(seed, num_train, num_val,
                                             img_size, frames, num_test),
                     classes=list(ACTION_CLASSES), counts=counts,
                     filename_tmpl='img_{:05}.jpg', start_index=1,
                     trail_gap=TRAIL_GAP)
    write_json(os.path.join(out_dir, 'meta.json'), meta)
    return meta
