"""Images and masks the blending tests share: smooth random texture and masks whose border
is zero (OpenCV's seamlessClone leaves a mask's outermost pixels out, so tests that compare
against it give it masks that do not use them)."""

from __future__ import annotations

import cv2
import numpy as np


def textured(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    """A smooth random texture covering the grey range: (h, w, channels) uint8."""
    noise = rng.normal(128, 60, (h, w, channels)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0).reshape(h, w, channels)
    return np.clip(smooth * 2 - 128, 0, 255).astype(np.uint8)


def ringed(mask: np.ndarray) -> np.ndarray:
    """``mask`` as uint8 with its outermost rows and columns set to 0."""
    mask = mask.astype(np.uint8)
    mask[0, :] = mask[-1, :] = 0
    mask[:, 0] = mask[:, -1] = 0
    return mask
