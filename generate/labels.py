"""Pixel labels of a synthetic example (docs/method.md §Labels).

Changed pixels are those inside the patch regions whose mean absolute change over channels
exceeds ``tol``; a 5x5 median filter cleans that mask. ``intensity`` and
``logistic-intensity`` then use the change median-filtered with a disk of radius 5.

Everything is computed on a window: the bounding box of the blended patches plus 5
pixels, which is exact because nothing outside the patches changes, both filters reach at
most 5 pixels, and image borders are padded by repeating the edge as the authors' filters
do. Two choices where the method is silent: the cleaned mask is kept inside the patch
regions (a 5x5 median can switch on a pixel at a concave corner between two patches), and
``intensity`` labels are the filtered change divided by 255 so that every label lies in
[0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from skimage.filters import rank
from skimage.morphology import disk

DISK_RADIUS = 5
_DISK = disk(DISK_RADIUS).astype(np.uint8)


def disk_median(values: np.ndarray) -> np.ndarray:
    """Median over a radius-5 disk of a 2-D uint8/uint16 array, edges repeated (exact)."""
    r = DISK_RADIUS
    padded = np.pad(values, r, mode="edge")
    return rank.median(padded, _DISK)[r:-r, r:-r]


def label_window(boxes: Sequence[tuple[int, int, int, int]], height: int,
                 width: int) -> tuple[int, int, int, int] | None:
    """The window (y0, x0, y1, x1) of an (height, width) label outside which
    :func:`label_map` leaves every pixel 0: the bounding box of ``boxes`` plus the
    filters' reach (5 pixels), within the image; None without boxes (all zero)."""
    if not boxes:
        return None
    margin = DISK_RADIUS
    return (max(min(b[0] for b in boxes) - margin, 0), max(min(b[1] for b in boxes) - margin, 0),
            min(max(b[2] for b in boxes) + margin, height),
            min(max(b[3] for b in boxes) + margin, width))


def label_map(dest: np.ndarray, result: np.ndarray, region: np.ndarray,
              boxes: Sequence[tuple[int, int, int, int]], label_mode: str, tol: float,
              logistic_params: Sequence[float], factor: float = 1.0) -> np.ndarray:
    """The (H, W) float32 label in [0, 1] of ``result`` made from ``dest``.

    ``region`` is the (H, W) bool union of the pasted patch regions, ``boxes`` the blended
    patch boxes (nothing changed outside them), ``factor`` the interpolation factor of
    ``continuous`` labels.
    """
    height, width, channels = dest.shape
    label = np.zeros((height, width), np.float32)
    window = label_window(boxes, height, width)
    if window is None:
        return label
    y0, x0, y1, x1 = window
    diff = cv2.absdiff(dest[y0:y1, x0:x1], result[y0:y1, x0:x1])
    # channel sums of |change| are integers: mean > tol  <=>  sum > channels * tol
    change = diff.reshape(y1 - y0, x1 - x0) if channels == 1 else diff.sum(
        axis=2, dtype=np.uint16)
    inside = region[y0:y1, x0:x1]
    changed = ((change > channels * tol) & inside).astype(np.uint8)
    mask = cv2.medianBlur(changed, 5).astype(bool) & inside
    if label_mode == "binary":
        out = mask.astype(np.float32)
    elif label_mode == "continuous":
        out = mask.astype(np.float32) * np.float32(factor)
    else:
        filtered = disk_median(np.where(mask, change, 0).astype(change.dtype))
        mean_change = filtered.astype(np.float32) / np.float32(channels)
        if label_mode == "intensity":
            out = np.where(mask, mean_change / np.float32(255.0), np.float32(0.0))
        else:
            k, x0_logistic = logistic_params
            logistic = 1.0 / (1.0 + np.exp(-k * (mean_change - x0_logistic)))
            out = np.where(mask, logistic, 0.0).astype(np.float32)
    label[y0:y1, x0:x1] = out
    return label
