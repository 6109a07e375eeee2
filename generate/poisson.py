"""Poisson image blending over one patch's bounding box, solved by a discrete sine transform.

The blend replaces the destination inside a box by the function whose gradients follow a
guidance field and whose values on the box's outer ring are the destination's own
(Dirichlet boundary). It reproduces ``cv2.seamlessClone`` as the NSA authors used it:

- the blending mask is eroded three times by a 3x3 square (zero outside its bounding box),
  and the guidance is the source
  gradient (``mixed``: the stronger of source and destination gradient, compared per pixel
  and channel by ``|g_x - g_y|`` as OpenCV does) inside the eroded mask and the destination
  gradient outside it; a mask value ``f`` < 1 interpolates the two (FPI-Poisson);
- forward differences for gradients, backward differences for the divergence.

Writing the result as destination + correction, the correction solves a Poisson equation
whose right-hand side is the divergence of ``f * mask * (guide - destination gradient)``
with zero boundary values, so one DST-I per axis (``scipy.fft``) solves it exactly, over
the box only: the cost does not depend on the image size, and nothing can fail for thin
or tiny masks (OpenCV 5 asserts on some). Values are rounded to the nearest grey level
(or truncated as OpenCV does, the setting ``rounding``).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scipy import fft

_ERODE_KERNEL = np.ones((3, 3), np.uint8)
ERODE_ITERATIONS = 3


@lru_cache(maxsize=1024)
def _eigenvalues(height: int, width: int) -> np.ndarray:
    """Eigenvalues of the 5-point Laplacian with zero boundary on an interior grid."""
    ky = 2.0 * np.cos(np.pi * np.arange(1, height + 1) / (height + 1)) - 2.0
    kx = 2.0 * np.cos(np.pi * np.arange(1, width + 1) / (width + 1)) - 2.0
    return (ky[:, None] + kx[None, :]).astype(np.float32)[..., None]


def solve_dirichlet(rhs: np.ndarray) -> np.ndarray:
    """Solve ``laplacian(u) = rhs`` on an (h, w, C) interior grid with u = 0 around it."""
    h, w = rhs.shape[:2]
    spectrum = fft.dstn(rhs, type=1, axes=(0, 1), workers=1)
    spectrum /= _eigenvalues(h, w)
    return fft.idstn(spectrum, type=1, axes=(0, 1), workers=1)


def poisson_blend(dest: np.ndarray, src: np.ndarray, mask: np.ndarray, mixed: bool,
                  factor: float = 1.0, truncate: bool = False) -> np.ndarray:
    """Blend ``src`` into ``dest`` (both (h, w, C) uint8, same shape) where ``mask`` is set.

    ``mask`` is (h, w) uint8 0/1; the caller zeroes its outer ring (as the method does).
    Like OpenCV (4.12), the solve runs on the bounding box of the mask's nonzero pixels,
    whose outer ring keeps the destination's values, and the erosion also eats in from
    that box's edges. The solution is rounded to the nearest grey level, or with
    ``truncate`` cut toward zero as OpenCV does (``static_cast<uchar>`` after clipping to
    0..255), then clipped. Returns the blended (h, w, C) uint8 box.
    """
    out = dest.copy()
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or rows[-1] - rows[0] < 2 or cols[-1] - cols[0] < 2:
        return out
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    eroded = cv2.erode(mask[y0:y1, x0:x1], _ERODE_KERNEL, iterations=ERODE_ITERATIONS,
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    if not eroded.any():
        return out
    d = dest[y0:y1, x0:x1].astype(np.float32)
    s = src[y0:y1, x0:x1].astype(np.float32)
    # gradients on the (h-1, w-1) grid of pixels that have a right and a lower neighbour
    dgx = d[:-1, 1:] - d[:-1, :-1]
    dgy = d[1:, :-1] - d[:-1, :-1]
    sgx = s[:-1, 1:] - s[:-1, :-1]
    sgy = s[1:, :-1] - s[:-1, :-1]
    weight = eroded[:-1, :-1, None].astype(np.float32)
    if factor != 1.0:
        weight *= np.float32(factor)
    if mixed:
        weight = weight * (np.abs(sgx - sgy) > np.abs(dgx - dgy))
    gx = (sgx - dgx) * weight
    gy = (sgy - dgy) * weight
    rhs = gx[1:, 1:] - gx[1:, :-1] + gy[1:, 1:] - gy[:-1, 1:]
    interior = d[1:-1, 1:-1] + solve_dirichlet(rhs)
    (np.trunc if truncate else np.rint)(interior, out=interior)
    np.clip(interior, 0, 255, out=interior)
    out[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = interior
    return out
