"""Drawing primitives and file helpers shared by the synthetic generators.

Images are ``uint8`` arrays in OpenCV's BGR order. Every random choice goes
through a caller-supplied :class:`numpy.random.Generator`, so a scene is a pure
function of its generator state; polygons are drawn with sub-pixel precision
(``cv2`` ``shift`` bits) and anti-aliasing, label masks without anti-aliasing.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

#: Version of the on-disk format; bump it whenever the output of any
#: generator changes, so that cached datasets are regenerated.
#: 5: a third split, ``test`` (train and val files unchanged from 4).
FORMAT_VERSION = 5

#: Splits in generation order. A sample's seed includes its split's position
#: here (train 0, val 1, test 2), so the splits are independent draws: the
#: test split shares no sample with train or val, and adding it left their
#: files byte-identical.
SPLITS = ('train', 'val', 'test')

#: Shape kinds that can be drawn; the first three are the detection classes.
SHAPE_KINDS = ('circle', 'square', 'triangle')

#: JPEG quality used for every written image.
JPEG_QUALITY = 95

_SHIFT = 4  # sub-pixel bits for cv2 drawing calls
_SCALE = 1 << _SHIFT

ProgressFn = Optional[Callable[[], Any]]


@dataclass
class Shape:
    """One drawn shape.

    Attributes:
        kind: One of :data:`SHAPE_KINDS`.
        polygon: ``(N, 2)`` float array, outline in pixel coordinates.
        color: BGR colour.
    """

    kind: str
    polygon: np.ndarray
    color: tuple[int, int, int]

    @property
    def bbox(self) -> list[float]:
        """Bounding box ``[x, y, w, h]`` of the outline."""
        x0, y0 = self.polygon.min(axis=0)
        x1, y1 = self.polygon.max(axis=0)
        return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def shape_polygon(kind: str, cx: float, cy: float, size: float,
                  angle: float = 0.0) -> np.ndarray:
    """Return the outline of a shape as an ``(N, 2)`` float polygon.

    ``size`` is the nominal extent: the diameter of a circle, ``0.85 * size``
    is the side of a square and ``1.1 * size`` the side of an equilateral
    triangle, so the three kinds cover similar areas.

    Args:
        kind: ``'circle'``, ``'square'`` or ``'triangle'``.
        cx: Centre x in pixels.
        cy: Centre y in pixels.
        size: Nominal extent in pixels.
        angle: Rotation in radians.

    Returns:
        The polygon vertices, in order.
    """
    if kind == 'circle':
        n = 32
        radius = size / 2.0
        phase = 0.0
    elif kind == 'square':
        n = 4
        radius = 0.85 * size / math.sqrt(2.0)
        phase = math.pi / 4
    elif kind == 'triangle':
        n = 3
        radius = 1.1 * size / math.sqrt(3.0)
        phase = -math.pi / 2
    else:
        raise ValueError(f'unknown shape kind {kind!r}; use one of '
                         f'{SHAPE_KINDS}')
    theta = phase + angle + np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + radius * np.cos(theta),
                     cy + radius * np.sin(theta)], axis=1)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _SCALE).astype(np.int32)


def fill_polygon(img: np.ndarray, polygon: np.ndarray,
                 color: Sequence[int] | int, antialias: bool = True) -> None:
    """Fill a float polygon in place (sub-pixel, optionally anti-aliased)."""
    line_type = cv2.LINE_AA if antialias else cv2.LINE_8
    color = tuple(int(c) for c in np.atleast_1d(color))
    cv2.fillPoly(img, [_fixed(polygon)], color, line_type, _SHIFT)


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Return a boolean mask of the polygon (no anti-aliasing)."""
    mask = np.zeros((height, width), np.uint8)
    fill_polygon(mask, polygon, 1, antialias=False)
    return mask.astype(bool)


def draw_line(img: np.ndarray, p0: Sequence[float], p1: Sequence[float],
              color: Sequence[int] | int, thickness: int,
              antialias: bool = True) -> None:
    """Draw a line between float points in place."""
    line_type = cv2.LINE_AA if antialias else cv2.LINE_8
    color = tuple(int(c) for c in np.atleast_1d(color))
    cv2.line(img, tuple(_fixed(p0).tolist()), tuple(_fixed(p1).tolist()),
             color, max(1, int(thickness)), line_type, _SHIFT)


def draw_disc(img: np.ndarray, center: Sequence[float], radius: float,
              color: Sequence[int] | int, thickness: int = -1,
              antialias: bool = True) -> None:
    """Draw a filled (``thickness=-1``) or outlined circle in place."""
    line_type = cv2.LINE_AA if antialias else cv2.LINE_8
    color = tuple(int(c) for c in np.atleast_1d(color))
    cv2.circle(img, tuple(_fixed(center).tolist()),
               max(1, int(round(radius * _SCALE))), color, thickness,
               line_type, _SHIFT)


def blend_polygon(img: np.ndarray, polygon: np.ndarray,
                  color: Sequence[int], alpha: float) -> np.ndarray:
    """Return ``img`` with the polygon alpha-blended on top (for trails)."""
    overlay = img.copy()
    fill_polygon(overlay, polygon, color)
    return cv2.addWeighted(overlay, alpha, img, 1.0 - alpha, 0.0)


def random_color(rng: np.random.Generator, low: int = 0,
                 high: int = 256) -> tuple[int, int, int]:
    """Return a uniformly random BGR colour with channels in [low, high)."""
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def hsv_color(rng: np.random.Generator, hue_range: tuple[float, float],
              sat_range: tuple[int, int] = (150, 256),
              val_range: tuple[int, int] = (150, 256)) -> tuple[int, int, int]:
    """Return a random BGR colour from an OpenCV HSV range (hue in 0..180)."""
    hue = rng.uniform(*hue_range) % 180
    hsv = np.array([[[hue, rng.integers(*sat_range), rng.integers(*val_range)]]],
                   np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def contrasting_color(rng: np.random.Generator, background: np.ndarray,
                      min_dist: float = 90.0,
                      tries: int = 20) -> tuple[int, int, int]:
    """Return a random colour far (L1) from the given mean background colour."""
    best, best_d = None, -1.0
    for _ in range(tries):
        color = random_color(rng)
        dist = float(np.abs(np.asarray(color, float) - background).sum())
        if dist >= min_dist:
            return color
        if dist > best_d:
            best, best_d = color, dist
    return best


def make_background(rng: np.random.Generator, height: int, width: int,
                    num_lines: tuple[int, int] = (2, 6)) -> np.ndarray:
    """Return a cluttered background: smooth colour gradient plus lines.

    The gradient is a random 3x3 colour grid upsampled bicubically; random
    thin distractor lines are drawn on top. Add pixel noise with
    :func:`add_noise` after the foreground is drawn.

    Args:
        rng: Random generator.
        height: Image height.
        width: Image width.
        num_lines: ``[low, high)`` range of the number of distractor lines.

    Returns:
        A ``(height, width, 3)`` uint8 BGR image.
    """
    grid = rng.uniform(20, 235, size=(3, 3, 3)).astype(np.float32)
    img = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(*num_lines))):
        p0 = rng.uniform(0, [width, height])
        p1 = rng.uniform(0, [width, height])
        draw_line(img, p0, p1, random_color(rng),
                  int(rng.integers(1, 3)))
    return img


def add_noise(rng: np.random.Generator, img: np.ndarray,
              sigma_range: tuple[float, float] = (6.0, 14.0)) -> np.ndarray:
    """Return ``img`` plus i.i.d. gaussian pixel noise, clipped to uint8."""
    sigma = rng.uniform(*sigma_range)
    noisy = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(
        np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def compose_scene(rng: np.random.Generator, size: int,
                  num_objects: tuple[int, int],
                  size_range: tuple[float, float],
                  max_occlusion: float = 0.5,
                  tries: int = 30) -> tuple[np.ndarray, list[Shape],
                                            np.ndarray]:
    """Draw random shapes on a cluttered background.

    Objects lie fully inside the image and may overlap, but a candidate that
    would hide more than ``max_occlusion`` of an earlier object is re-drawn
    (and dropped after ``tries`` failed attempts), so every returned object is
    at least ``1 - max_occlusion`` visible. At least one object is always
    placed.

    Args:
        rng: Random generator.
        size: Image height and width.
        num_objects: Inclusive ``(min, max)`` number of objects requested.
        size_range: ``(min, max)`` nominal object size in pixels.
        max_occlusion: Largest hidden fraction allowed for any object.
        tries: Placement attempts per object.

    Returns:
        ``(image, shapes, label_map)``: the noisy BGR image, the shapes in
        drawing order, and a uint8 map holding ``1 + kind index`` of the
        visible shape at each pixel (0 = background).
    """
    img = make_background(rng, size, size)
    shapes: list[Shape] = []
    masks: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    wanted = int(rng.integers(num_objects[0], num_objects[1] + 1))
    for _ in range(wanted):
        for _attempt in range(tries):
            kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
            extent = float(rng.uniform(*size_range))
            angle = float(rng.uniform(0, 2 * math.pi))
            half = 0.64 * extent
            cx, cy = rng.uniform(half, size - half, size=2)
            poly = shape_polygon(kind, cx, cy, extent, angle)
            if poly.min() < 0 or poly.max() > size - 1:
                continue
            mask = polygon_mask(poly, size, size)
            if not mask.any():
                continue
            ok = all(
                (vis & ~mask).sum() >= (1 - max_occlusion) * full.sum()
                for vis, full in zip(visible, masks))
            if ok:
                break
        else:
            continue
        visible = [vis & ~mask for vis in visible]
        ys, xs = np.nonzero(mask)
        bg = img[ys, xs].reshape(-1, 3).mean(axis=0)
        shapes.append(Shape(kind, poly, contrasting_color(rng, bg)))
        masks.append(mask)
        visible.append(mask)
    label = np.zeros((size, size), np.uint8)
    for shape, mask in zip(shapes, masks):
        fill_polygon(img, shape.polygon, shape.color)
        label[mask] = SHAPE_KINDS.index(shape.kind) + 1
    return add_noise(rng, img), shapes, label


# --------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------

def sample_rng(seed: int, task_id: int, split_id: int,
               index: int) -> np.random.Generator:
    """Return the generator of one sample; independent of all other samples."""
    return np.random.default_rng([seed, task_id, split_id, index])


def save_jpeg(path: str, img: np.ndarray) -> None:
    """Write a BGR image as JPEG (quality :data:`JPEG_QUALITY`)."""
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f'could not write {path}')


def save_png(path: str, img: np.ndarray) -> None:
    """Write an image losslessly as PNG."""
    if not cv2.imwrite(path, img):
        raise OSError(f'could not write {path}')


def write_json(path: str, obj: Any) -> None:
    """Write JSON deterministically (sorted keys, fixed separators)."""
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, sort_keys=True, separators=(',', ':'))
        f.write('\n')


def make_meta(task: str, params: dict, **extra: Any) -> dict:
    """Return the ``meta.json`` content of a task directory."""
    return dict(format_version=FORMAT_VERSION, task=task,
                generator='mmlego.datasets.synthetic', params=params, **extra)


def check_params(num_train: int, num_val: int, img_size: int,
                 seed: int = 0, frames: Optional[int] = None,
                 num_test: Optional[int] = None) -> None:
    """Validate generator knobs, raising ``ValueError`` with a clear hint."""
    checks = [('num_train', num_train, 1, '--num-train N'),
              ('num_val', num_val, 1, '--num-val N'),
              ('img_size', img_size, 32, '--img-size S'),
              ('seed', seed, 0, '--seed N')]
    if num_test is not None:
        checks.append(('num_test', num_test, 1, '--num-test N'))
    if frames is not None:
        checks.append(('frames', frames, 3, 'frames=N'))
    for name, value, low, flag in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f'{name} must be an integer, got {value!r}; '
                             f'pass {flag} with an integer >= {low}')
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}; '
                             f'pass {flag} with a value >= {low}')


def split_sizes(num_train: int, num_val: int,
                num_test: Optional[int]) -> list[tuple[int, str, int]]:
    """``(split_id, split, count)`` of every split, in :data:`SPLITS` order.

    ``num_test=None`` makes the test split the size of val.
    """
    counts = (num_train, num_val, num_val if num_test is None else num_test)
    return [(split_id, split, int(count))
            for split_id, (split, count) in enumerate(zip(SPLITS, counts))]


def ensure_dirs(root: str, *subdirs: str) -> None:
    """Create ``root/subdir`` for each subdir."""
    for sub in subdirs:
        os.makedirs(os.path.join(root, sub), exist_ok=True)


def tick(progress: ProgressFn) -> None:
    """Advance a progress callback, if any."""
    if progress is not None:
        progress()
