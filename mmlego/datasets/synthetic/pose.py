"""Synthetic COCO-17 keypoint data (mmpose top-down ``CocoDataset``).

Layout under ``out_dir``::

    images/train/000000.jpg ...   images/val/...   images/test/...
    annotations/person_keypoints_train.json
    annotations/person_keypoints_val.json
    annotations/person_keypoints_test.json
    meta.json

Each image shows one or two stick figures whose 17 joints follow the COCO
layout. Every joint is a dot with its own fixed colour and a dark ring; the
figure's left limbs are warm-coloured and its right limbs cool-coloured, so
left and right are distinguishable (note: a horizontal flip augmentation keeps
the colours but swaps the labels). The figures face the viewer, so the
figure's left side usually appears on the image's right, as in COCO.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from .shapes import (SPLITS, ProgressFn, check_params, split_sizes, contrasting_color, add_noise,
                     draw_disc, draw_line, ensure_dirs, fill_polygon,
                     hsv_color, make_background, make_meta, sample_rng,
                     save_jpeg, tick, write_json)

#: COCO-17 keypoint names, in order.
KEYPOINT_NAMES = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
    'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
    'right_knee', 'left_ankle', 'right_ankle')

#: COCO person skeleton (1-based keypoint indices, as in the COCO json).
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13],
    [6, 7], [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3],
    [2, 4], [3, 5], [4, 6], [5, 7]]

#: Classes of the pose dataset.
POSE_CLASSES = ('person',)

#: Default knobs of :func:`generate_pose`.
POSE_DEFAULTS = dict(num_train=300, num_val=60, img_size=160)

TASK_ID = 3


def _joint_palette() -> list[tuple[int, int, int]]:
    """Fixed distinct BGR colour per keypoint (left: hues 0..77, right +90)."""
    import cv2
    colors = [(255, 255, 255)]  # nose
    for i in range(8):  # eye, ear, shoulder, elbow, wrist, hip, knee, ankle
        for hue in (11 * i, 11 * i + 90):  # left, right
            hsv = np.array([[[hue, 255, 255 if i % 2 == 0 else 200]]],
                           np.uint8)
            colors.append(tuple(int(c) for c in
                                cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]))
    return colors


JOINT_COLORS = _joint_palette()

# Limbs as (joint a, joint b, side): side 0 = left, 1 = right.
_ARMS = [(5, 7, 0), (7, 9, 0), (6, 8, 1), (8, 10, 1)]
_LEGS = [(11, 13, 0), (13, 15, 0), (12, 14, 1), (14, 16, 1)]


def pose_params(seed: int = 0, num_train: int = 300, num_val: int = 60,
                img_size: int = 160, num_test: Optional[int] = None) -> dict:
    """Return the parameter dict recorded in ``meta.json``."""
    return dict(seed=int(seed), num_train=int(num_train),
                num_val=int(num_val),
                num_test=int(num_val if num_test is None else num_test),
                img_size=int(img_size))


def _canonical_figure(rng: np.random.Generator,
                      torso: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Joints of an upright figure with random joint angles.

    The neck is at the origin, y points down, the figure's left is +x.

    Returns:
        ``(keypoints (17, 2), head_center (2,), head_radius)``.
    """
    t = torso
    kpt = np.zeros((17, 2))
    shoulder_w = rng.uniform(0.35, 0.5) * t
    hip_w = rng.uniform(0.2, 0.3) * t
    kpt[5], kpt[6] = (shoulder_w, 0.0), (-shoulder_w, 0.0)
    kpt[11], kpt[12] = (hip_w, t), (-hip_w, t)
    # Head, tilted around the neck, looking slightly sideways (yaw).
    hr = rng.uniform(0.3, 0.38) * t
    tilt = rng.uniform(-0.35, 0.35)
    yaw = rng.uniform(-0.5, 0.5)
    head = np.array([0.0, -0.2 * t - hr])
    face = np.array([
        [yaw * 0.6 * hr, 0.15 * hr],                    # nose
        [0.4 * hr + yaw * 0.5 * hr, -0.2 * hr],         # left eye
        [-0.4 * hr + yaw * 0.5 * hr, -0.2 * hr],        # right eye
        [0.95 * hr + yaw * 0.3 * hr, -0.05 * hr],       # left ear
        [-0.95 * hr + yaw * 0.3 * hr, -0.05 * hr]])     # right ear
    rot = _rotation(tilt)
    head = head @ rot.T
    kpt[0:5] = head + face @ rot.T
    # Limbs: angle 0 points straight down, positive angles point outwards.
    for side, sign in ((0, 1.0), (1, -1.0)):
        upper, fore = rng.uniform(0.5, 0.65) * t, rng.uniform(0.45, 0.6) * t
        a1 = rng.uniform(-0.4, 2.8)
        a2 = a1 + rng.uniform(-2.0, 2.0)
        sh = kpt[5 + side]
        kpt[7 + side] = sh + upper * np.array([sign * math.sin(a1),
                                               math.cos(a1)])
        kpt[9 + side] = kpt[7 + side] + fore * np.array(
            [sign * math.sin(a2), math.cos(a2)])
        thigh, shin = rng.uniform(0.55, 0.7) * t, rng.uniform(0.5, 0.65) * t
        b1 = rng.uniform(-0.25, 1.0)
        b2 = b1 + rng.uniform(-1.0, 1.0)
        hip = kpt[11 + side]
        kpt[13 + side] = hip + thigh * np.array([sign * math.sin(b1),
                                                 math.cos(b1)])
        kpt[15 + side] = kpt[13 + side] + shin * np.array(
            [sign * math.sin(b2), math.cos(b2)])
    return kpt, head, hr


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _extent(kpt: np.ndarray, head: np.ndarray, hr: float,
            pad: float) -> np.ndarray:
    """``[x0, y0, x1, y1]`` around joints and head, padded by ``pad``."""
    lo = np.minimum(kpt.min(axis=0), head - hr) - pad
    hi = np.maximum(kpt.max(axis=0), head + hr) + pad
    return np.concatenate([lo, hi])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
             - inter)
    return inter / max(union, 1e-6)


def _place_figure(rng: np.random.Generator, size: int, torso: float):
    """Random figure, rotated and translated into the image."""
    kpt, head, hr = _canonical_figure(rng, torso)
    rot = _rotation(rng.uniform(-0.6, 0.6))
    kpt, head = kpt @ rot.T, head @ rot.T
    thick = max(1.0, 0.08 * torso)
    ext = _extent(kpt, head, hr, thick + 1)
    offset = np.empty(2)
    for axis in range(2):
        lo, hi = -ext[axis], size - 1 - ext[axis + 2]
        offset[axis] = (rng.uniform(lo, hi) if lo <= hi
                        else (lo + hi) / 2 + rng.uniform(-0.1, 0.1) * size)
    return kpt + offset, head + offset, hr, thick


def _draw_figure(img: np.ndarray, rng: np.random.Generator, kpt: np.ndarray,
                 head: np.ndarray, hr: float, thick: float,
                 torso: float) -> np.ndarray:
    """Draw a figure in place; return its boolean footprint mask."""
    size = img.shape[0]
    ys, xs = np.clip(kpt[[5, 6, 11, 12]], 0, size - 1).astype(int).T[::-1]
    bg = img[ys, xs].reshape(-1, 3).mean(axis=0)
    limb_colors = (hsv_color(rng, (0, 30)), hsv_color(rng, (95, 130)))
    body_color = contrasting_color(rng, bg, min_dist=70)
    head_color = contrasting_color(rng, bg, min_dist=70)
    lt = int(round(thick))
    mask = np.zeros(img.shape[:2], np.uint8)
    for target, value in ((img, None), (mask, 1)):
        for a, b, side in _LEGS:
            draw_line(target, kpt[a], kpt[b], value or limb_colors[side], lt)
        fill_polygon(target, kpt[[5, 6, 12, 11]], value or body_color)
        draw_line(target, (kpt[5] + kpt[6]) / 2, head, value or body_color,
                  lt + 1)
        for a, b, side in _ARMS:
            draw_line(target, kpt[a], kpt[b], value or limb_colors[side], lt)
        draw_disc(target, head, hr, value or head_color)
    jr = max(1.5, 0.075 * torso)
    for j in range(17):
        radius = jr * (0.6 if j < 5 else 1.0)
        draw_disc(img, kpt[j], radius + 1, (20, 20, 20))
        draw_disc(img, kpt[j], radius, JOINT_COLORS[j])
        draw_disc(mask, kpt[j], radius + 1, 1)
    return mask.astype(bool)


def _render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list]:
    """Render one image; return it and a list of ``(keypoints, vis, box)``."""
    img = make_background(rng, size, size)
    two = rng.random() < 0.4
    t_range = (0.12, 0.2) if two else (0.155, 0.31)
    figures = []
    for k in range(2 if two else 1):
        for _ in range(20):
            torso = rng.uniform(*t_range) * size
            fig = _place_figure(rng, size, torso)
            box = _extent(fig[0], fig[1], fig[2], fig[3])
            if all(_iou(box, f[4]) < 0.25 for f in figures):
                figures.append((*fig, box, torso))
                break
    people = []
    masks = []
    for kpt, head, hr, thick, box, torso in figures:
        masks.append(_draw_figure(img, rng, kpt, head, hr, thick, torso))
    for i, (kpt, head, hr, thick, box, torso) in enumerate(figures):
        inside = ((kpt >= 0) & (kpt <= size - 1)).all(axis=1)
        vis = np.where(inside, 2, 1)
        xy = np.clip(np.rint(kpt), 0, size - 1).astype(int)
        for later in masks[i + 1:]:
            vis[later[xy[:, 1], xy[:, 0]]] = 1
        # Person box with a 10% margin on each side, clipped to the image.
        w, h = box[2] - box[0], box[3] - box[1]
        x0, y0 = max(0.0, box[0] - 0.1 * w), max(0.0, box[1] - 0.1 * h)
        x1 = min(size - 1.0, box[2] + 0.1 * w)
        y1 = min(size - 1.0, box[3] + 0.1 * h)
        people.append((kpt, vis, [x0, y0, x1 - x0, y1 - y0]))
    return add_noise(rng, img), people


def generate_pose(out_dir: str, seed: int = 0, num_train: int = 300,
                  num_val: int = 60, img_size: int = 160,
                  progress: ProgressFn = None,
                  num_test: Optional[int] = None) -> dict:
    """Write the synthetic keypoint dataset into ``out_dir``.

    Each image has one (60%) or two (40%) stick figures with random joint
    angles, size, rotation (+-34 deg), position and limb colours on a
    cluttered, noisy background. ``keypoints`` visibility is 2 for visible
    joints and 1 for joints hidden by a later figure or outside the image.
    The ``area`` of an instance is its box area.

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
    ensure_dirs(out_dir, *(f'images/{split}' for split in SPLITS),
                'annotations')
    category = dict(id=1, name='person', supercategory='person',
                    keypoints=list(KEYPOINT_NAMES), skeleton=COCO_SKELETON)
    counts = {}
    for split_id, split, count in split_sizes(num_train, num_val, num_test):
        images, annotations = [], []
        for index in range(count):
            rng = sample_rng(seed, TASK_ID, split_id, index)
            img, people = _render(rng, img_size)
            file_name = f'{index:06d}.jpg'
            save_jpeg(os.path.join(out_dir, 'images', split, file_name), img)
            images.append(dict(id=index + 1, file_name=file_name,
                               width=img_size, height=img_size))
            for kpt, vis, bbox in people:
                flat = []
                for (x, y), v in zip(kpt, vis):
                    flat += [round(float(x), 2), round(float(y), 2), int(v)]
                bbox = [round(float(v), 2) for v in bbox]
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=index + 1,
                    category_id=1, keypoints=flat,
                    num_keypoints=int((vis > 0).sum()), bbox=bbox,
                    area=round(bbox[2] * bbox[3], 2), iscrowd=0))
            tick(progress)
        write_json(os.path.join(out_dir, 'annotations',
                                f'person_keypoints_{split}.json'),
                   dict(images=images, annotations=annotations,
                        categories=[category],
                        info=dict(description='mmlego synthetic stick '
                                              f'figures ({split})')))
        counts[split] = dict(images=len(images),
                             instances=len(annotations))
    meta = make_meta('pose', pose_params(seed, num_train, num_val, img_size,
                                         num_test),
                     classes=list(POSE_CLASSES),
                     keypoints=list(KEYPOINT_NAMES), counts=counts)
    write_json(os.path.join(out_dir, 'meta.json'), meta)
    return meta
