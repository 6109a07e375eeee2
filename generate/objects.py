"""Object masks: which pixels belong to the object rather than a plain background.

A pixel is "object" when the mean over its channels differs from the background
brightness ``b`` by more than ``t``; a 7x7 median filter removes the grain that a hard
threshold leaves. Patches are sampled and placed so that they cover enough object
(``min_object_pct``, ``min_overlap_pct``), and seams are avoided on plain background.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def object_mask(image: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """Return the (H, W) uint8 0/1 object mask of an (H, W, C) uint8 image.

    ``background`` is ``(b, t)``: brightness of the background and the threshold.
    """
    channels = image.shape[2]
    b, t = float(background[0]), float(background[1])
    # compare channel sums with C*b and C*t: exact, unlike a rounded floating-point mean
    total = image.sum(axis=2, dtype=np.float64)
    mask = (np.abs(total - channels * b) > channels * t).astype(np.uint8)
    return cv2.medianBlur(mask, 7)
