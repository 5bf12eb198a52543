"""Synthetic semantic segmentation data (mmseg ``BaseSegDataset``).

Layout under ``out_dir``::

    img_dir/train/000000.jpg ...   ann_dir/train/000000.png ...
    img_dir/val/...                ann_dir/val/...
    img_dir/test/...               ann_dir/test/...
    meta.json

Label maps are single-channel uint8 PNGs holding the class index 0..3
(0 = background, a real class: load with ``reduce_zero_label=False``); 255 is
never written. Load with ``dict(type='BaseSegDataset', data_root=out_dir,
data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
metainfo=dict(classes=SEG_CLASSES, palette=SEG_PALETTE))``.
"""
from __future__ import annotations

import os

import numpy as np

from typing import Optional

from .shapes import (SHAPE_KINDS, SPLITS, ProgressFn, check_params,
                     compose_scene, ensure_dirs, make_meta, sample_rng,
                     save_jpeg, save_png, split_sizes, tick, write_json)

#: Segmentation classes; the label value is the index.
SEG_CLASSES = ('background',) + SHAPE_KINDS

#: Display palette (RGB) matching :data:`SEG_CLASSES`.
SEG_PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]

#: Default knobs of :func:`generate_segmentation`.
SEG_DEFAULTS = dict(num_train=300, num_val=60, img_size=128)

TASK_ID = 2

_NUM_OBJECTS = (1, 5)
_SIZE_RANGE_128 = (14.0, 56.0)
_MAX_OCCLUSION = 0.5


def segmentation_params(seed: int = 0, num_train: int = 300,
                        num_val: int = 60, img_size: int = 128,
                        num_test: Optional[int] = None) -> dict:
    """Return the parameter dict recorded in ``meta.json``."""
    return dict(seed=int(seed), num_train=int(num_train),
                num_val=int(num_val),
                num_test=int(num_val if num_test is None else num_test),
                img_size=int(img_size))


def generate_segmentation(out_dir: str, seed: int = 0, num_train: int = 300,
                          num_val: int = 60, img_size: int = 128,
                          progress: ProgressFn = None,
                          num_test: Optional[int] = None) -> dict:
    """Write the synthetic segmentation dataset into ``out_dir``.

    Scenes are like the detection ones (1-5 shapes of 14..56 px at 128,
    scaled with ``img_size``; cluttered noisy background); the label map marks
    the visible class of each pixel. ``pixel_frequency`` in ``meta.json``
    counts the train and val label maps (as before the test split existed).

    Args:
        out_dir: Target directory (created if needed).
        seed: Base seed; the output is a pure function of the arguments.
        num_train: Number of training images.
        num_val: Number of validation images.
        img_size: Image height and width in pixels (>= 32).
        progress: Optional callback invoked once per image.
        num_test: Number of test images (``None``: ``num_val``); a split of
            its own seeds, disjoint from train and val.

    Returns:
        The ``meta.json`` content that was written.
    """
    check_params(num_train, num_val, img_size, seed, num_test=num_test)
    ensure_dirs(out_dir, *(f'{d}/{s}' for d in ('img_dir', 'ann_dir')
                           for s in SPLITS))
    scale = img_size / 128.0
    size_range = (_SIZE_RANGE_128[0] * scale, _SIZE_RANGE_128[1] * scale)
    pixel_counts = np.zeros(len(SEG_CLASSES), np.int64)
    counts = {}
    for split_id, split, count in split_sizes(num_train, num_val, num_test):
        for index in range(count):
            rng = sample_rng(seed, TASK_ID, split_id, index)
            img, _, label = compose_scene(rng, img_size, _NUM_OBJECTS,
                                          size_range, _MAX_OCCLUSION)
            name = f'{index:06d}'
            save_jpeg(os.path.join(out_dir, 'img_dir', split, name + '.jpg'),
                      img)
            save_png(os.path.join(out_dir, 'ann_dir', split, name + '.png'),
                     label)
            if split != 'test':
                pixel_counts += np.bincount(label.ravel(),
                                            minlength=len(SEG_CLASSES))
            tick(progress)
        counts[split] = dict(images=count)
    freq = pixel_counts / max(1, int(pixel_counts.sum()))
    meta = make_meta('seg', segmentation_params(seed, num_train, num_val,
                                                img_size, num_test),
                     classes=list(SEG_CLASSES), palette=SEG_PALETTE,
                     counts=counts,
                     pixel_frequency=[round(float(f), 4) for f in freq])
    write_json(os.path.join(out_dir, 'meta.json'), meta)
    return meta
