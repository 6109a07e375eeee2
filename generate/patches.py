"""Patch geometry: sizes, shapes, source locations, rescaling and destination placement.

All sampling follows docs/method.md §Synthesis (steps 2-6) and the CutPaste sampling of
§Baseline tasks. Boxes are half-open ``(y0, x0, y1, x1)`` in pixels. Every function takes the
example's generator, so a patch is a pure function of the example's stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: tries to find a source location or destination placement with enough object (method)
MAX_TRIES = 200

Box = tuple[int, int, int, int]


@dataclass
class PatchRecord:
    """What happened to one attempted patch; kept in the example for previews and tests."""

    half_widths: tuple[int, int] | None = None  # sampled half-widths (h, w) in pixels
    scale: float | None = None  # rescale factor drawn (None when not resized)
    src_box: Box | None = None  # where the patch was cut from the source
    dest_box: Box | None = None  # where it went in the result
    reason: str = ""  # "" when blended, else one of synthesis.SKIP_REASONS


@dataclass(frozen=True)
class WidthBounds:
    """Half-width bounds in pixels per axis, from the fractions of ``width_bounds``."""

    min_h: int
    max_h: int
    min_w: int
    max_w: int

    @classmethod
    def from_fractions(cls, fractions, height: int, width: int) -> WidthBounds:
        (lo_h, hi_h), (lo_w, hi_w) = fractions
        return cls(round(lo_h * height), round(hi_h * height),
                   round(lo_w * width), round(hi_w * width))


def sample_half_width(rng: np.random.Generator, side: int, lo: int, hi: int,
                      gamma_params) -> int:
    """``clip(int((offset + Gamma(shape, scale)) * side), lo, hi)``, or uniform in [lo, hi)."""
    if gamma_params is None:
        return int(rng.integers(lo, hi)) if hi > lo else lo
    shape, scale, offset = gamma_params
    return min(max(int((offset + rng.gamma(shape, scale)) * side), lo), hi)


def source_box(rng: np.random.Generator, height: int, width: int, bounds: WidthBounds,
               half_h: int, half_w: int) -> Box:
    """A box of the given half-widths around a centre at least ``min`` from the border,
    clipped to the image."""
    cy = int(rng.integers(bounds.min_h, height - bounds.min_h))
    cx = int(rng.integers(bounds.min_w, width - bounds.min_w))
    return (max(cy - half_h, 0), max(cx - half_w, 0),
            min(cy + half_h, height), min(cx + half_w, width))


def ellipse_mask(rng: np.random.Generator, height: int, width: int, count: int,
                 bounds: WidthBounds, half_h: int, half_w: int) -> np.ndarray:
    """Union of ``count`` random rotated ellipses inside a (height, width) box, uint8 0/1.

    Centres are uniform in the box, angles uniform in [0, pi), semi-axes uniform in
    [min half-width, max(min + 1, patch half-width // 2)) per axis, as in the authors'
    release; unlike it, the ellipse is a true rotation of one with those semi-axes.
    """
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(count):
        theta = rng.uniform(0.0, math.pi)
        y0 = rng.integers(0, height)
        x0 = rng.integers(0, width)
        a = int(rng.integers(bounds.min_h, max(bounds.min_h + 1, half_h // 2)))
        b = int(rng.integers(bounds.min_w, max(bounds.min_w + 1, half_w // 2)))
        dy, dx = ys - y0, xs - x0
        cos, sin = math.cos(theta), math.sin(theta)
        u = (dy * cos + dx * sin) / a
        v = (dx * cos - dy * sin) / b
        mask |= u * u + v * v <= 1.0
    return mask.astype(np.uint8)


def cutpaste_box(rng: np.random.Generator, height: int, width: int) -> Box:
    """CutPaste sampling: area U(0.02, 0.15) of the image, aspect (h/w, as in the authors'
    release) from U(0.3, 1) or U(1, 3.3) with equal chance, placed fully inside the image."""
    area = rng.uniform(0.02, 0.15) * height * width
    aspect = rng.uniform(0.3, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, 3.3)
    ph = min(max(round(math.sqrt(area * aspect)), 1), height)
    pw = min(max(round(math.sqrt(area / aspect)), 1), width)
    y0 = int(rng.integers(0, height - ph + 1))
    x0 = int(rng.integers(0, width - pw + 1))
    return (y0, x0, y0 + ph, x0 + pw)


def rescaled_size(scale: float, height: int, width: int, lo_h: int, hi_h: int, lo_w: int,
                  hi_w: int) -> tuple[int, int]:
    """New (height, width) for a patch rescaled by ``scale``, keeping its aspect ratio, with
    each side kept within its bounds (height first, then width, then height again)."""
    new_h = min(max(scale * height, lo_h), hi_h)
    new_w = min(max(int(new_h / height * width), lo_w), hi_w)
    new_h = min(max(int(new_w / width * height), lo_h), hi_h)
    return max(int(new_h), 1), max(int(new_w), 1)


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (h, w) or (h, w, C) uint8 array, keeping its rank."""
    if array.shape[:2] == (height, width):
        return array
    out = cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
    return out[..., None] if array.ndim == 3 and out.ndim == 2 else out


def centre_range(size: int, side: int) -> tuple[int, int]:
    """Half-open range of centres where a patch of ``size`` fits with a 1-pixel margin."""
    return size // 2 + 1, side - size // 2 - 1


def box_at(cy: int, cx: int, height: int, width: int) -> Box:
    """The box of a (height, width) patch centred at (cy, cx)."""
    y0, x0 = cy - height // 2, cx - width // 2
    return (y0, x0, y0 + height, x0 + width)


def clone_boxes(box: Box, mask: np.ndarray) -> tuple[Box, Box]:
    """Where ``cv2.seamlessClone`` (OpenCV 4.12) puts a patch that the authors' release
    centres on ``box``: (the bounding box of ``mask``'s nonzero pixels in patch
    coordinates, the box of the image it replaces).

    ``mask`` is the patch's (h, w) blending mask with its outer ring zero and some pixel
    set. The release passes the centre ``(x1 - w // 2, y0 + h // 2)`` (x, y); OpenCV
    puts the mask's bounding box (height ``bh``, width ``bw``) at ``centre - (bw // 2,
    bh // 2)``, so a patch of odd width lands one pixel right of its box and a
    non-rectangular one moves by how far its mask's box is off the centre. The returned
    box always lies inside ``box``.
    """
    y0, x0, y1, x1 = box
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    by0, by1, bx0, bx1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    cy, cx = y0 + (y1 - y0) // 2, x1 - (x1 - x0) // 2
    dy0, dx0 = cy - (by1 - by0) // 2, cx - (bx1 - bx0) // 2
    return (by0, bx0, by1, bx1), (dy0, dx0, dy0 + by1 - by0, dx0 + bx1 - bx0)
