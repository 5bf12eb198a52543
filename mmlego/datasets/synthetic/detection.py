"""Synthetic COCO-format detection data (mmdet ``CocoDataset``).

Layout under ``out_dir``::

    images/train/000000.jpg ...      images/val/...   images/test/...
    annotations/instances_train.json annotations/instances_val.json
    annotations/instances_test.json
    meta.json

Load with ``dict(type='CocoDataset', data_root=out_dir,
ann_file='annotations/instances_train.json',
data_prefix=dict(img='images/train/'), metainfo=dict(classes=DET_CLASSES))``.
"""
from __future__ import annotations

import os

import numpy as np

from typing import Optional

from .shapes import (SHAPE_KINDS, SPLITS, ProgressFn, check_params,
                     compose_scene, ensure_dirs, make_meta, sample_rng,
                     save_jpeg, split_sizes, tick, write_json)

#: Detection classes; COCO ``category_id`` is ``index + 1``.
DET_CLASSES = SHAPE_KINDS

#: Default knobs of :func:`generate_detection`.
DET_DEFAULTS = dict(num_train=400, num_val=100, img_size=128)

TASK_ID = 1

# Scene knobs at the reference size 128 (object sizes scale with img_size).
_NUM_OBJECTS = (1, 4)
_SIZE_RANGE_128 = (16.0, 56.0)
_MAX_OCCLUSION = 0.5


def detection_params(seed: int = 0, num_train: int = 400, num_val: int = 100,
                     img_size: int = 128,
                     num_test: Optional[int] = None) -> dict:
    """Return the parameter dict recorded in ``meta.json``."""
    return dict(seed=int(seed), num_train=int(num_train),
                num_val=int(num_val),
                num_test=int(num_val if num_test is None else num_test),
                img_size=int(img_size))


def _round(values: list[float]) -> list[float]:
    return [round(float(v), 2) for v in values]


def _split(out_dir: str, split: str, split_id: int, count: int, seed: int,
           img_size: int, progress: ProgressFn) -> dict:
    scale = img_size / 128.0
    size_range = (_SIZE_RANGE_128[0] * scale, _SIZE_RANGE_128[1] * scale)
    images, annotations = [], []
    for index in range(count):
        rng = sample_rng(seed, TASK_ID, split_id, index)
        img, shapes, _ = compose_scene(rng, img_size, _NUM_OBJECTS,
                                       size_range, _MAX_OCCLUSION)
        file_name = f'{index:06d}.jpg'
        save_jpeg(os.path.join(out_dir, 'images', split, file_name), img)
        image_id = index + 1
        images.append(dict(id=image_id, file_name=file_name, width=img_size,
                           height=img_size))
        for shape in shapes:
            bbox = _round(shape.bbox)
            # Shoelace area of the (amodal) outline.
            x, y = shape.polygon[:, 0], shape.polygon[:, 1]
            area = 0.5 * abs(float(np.dot(x, np.roll(y, -1))
                                   - np.dot(y, np.roll(x, -1))))
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id,
                category_id=SHAPE_KINDS.index(shape.kind) + 1, bbox=bbox,
                area=round(area, 2), iscrowd=0,
                segmentation=[_round(shape.polygon.reshape(-1).tolist())]))
        tick(progress)
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(DET_CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories,
                info=dict(description=f'mmlego synthetic shapes ({split})'))


def generate_detection(out_dir: str, seed: int = 0, num_train: int = 400,
                       num_val: int = 100, img_size: int = 128,
                       progress: ProgressFn = None,
                       num_test: Optional[int] = None) -> dict:
    """Write the synthetic detection dataset into ``out_dir``.

    Each ``img_size`` square image holds 1-4 circles/squares/triangles of
    random size (16..56 px at 128, scaled with ``img_size``), colour, position
    and rotation on a cluttered, noisy background; objects overlap partially
    but none is more than 50% hidden. Annotations are COCO ``instances``
    files with boxes and polygon outlines.

    Args:
        out_dir: Target directory (created if needed; existing files with the
            same names are overwritten).
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
    ensure_dirs(out_dir, *(f'images/{split}' for split in SPLITS),
                'annotations')
    counts = {}
    for split_id, split, count in split_sizes(num_train, num_val, num_test):
        coco = _split(out_dir, split, split_id, count, seed, img_size,
                      progress)
        write_json(os.path.join(out_dir, 'annotations',
                                f'instances_{split}.json'), coco)
        counts[split] = dict(images=len(coco['images']),
                             instances=len(coco['annotations']))
    meta = make_meta('det', detection_params(seed, num_train, num_val,
                                             img_size, num_test),
                     classes=list(DET_CLASSES), counts=counts)
    write_json(os.path.join(out_dir, 'meta.json'), meta)
    return meta
