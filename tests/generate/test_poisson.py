"""The DST Poisson blend: OpenCV's seamlessClone semantics, solved over the box only."""

import cv2
import numpy as np
import pytest
from nsa.generate.poisson import poisson_blend
from scipy import ndimage, sparse
from scipy.sparse import linalg as sparse_linalg
from synthetic_images import ringed, textured


def cv2_blend(dest, src, mask, y, x, mixed):
    """The authors' call: grayscale padded to 3 channels, patch placed so that the mask's
    bounding box lands exactly at (y, x) + its offset."""
    h, w = mask.shape
    src_full = dest.copy()
    src_full[y:y + h, x:x + w] = src
    mask_full = np.zeros(dest.shape[:2], np.uint8)
    mask_full[y:y + h, x:x + w] = mask * 255
    rows, cols = np.flatnonzero(mask_full.any(1)), np.flatnonzero(mask_full.any(0))
    rh, rw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    centre = (int(cols[0] + rw // 2), int(rows[0] + rh // 2))
    pad = np.zeros_like(dest)
    flag = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
    out = cv2.seamlessClone(np.concatenate([src_full, pad, pad], 2),
                            np.concatenate([dest, pad, pad], 2), mask_full, centre, flag)
    return out[..., :1]


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("shape", ["rectangle", "ellipse"])
def test_blend_matches_opencv_seamless_clone_within_one_grey_level(mixed, shape):
    rng = np.random.default_rng(1)
    dest, source = textured(rng, 96, 96), textured(rng, 96, 96)
    for _ in range(3):
        h, w = (int(v) for v in rng.integers(20, 60, 2))
        y, x = (int(v) for v in rng.integers(2, 96 - 62, 2))
        mask = np.ones((h, w), np.uint8)
        if shape == "ellipse":
            yy, xx = np.mgrid[:h, :w]
            mask = (((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1)
        mask = ringed(mask)
        src = source[10:10 + h, 12:12 + w]
        ours = dest.copy()
        ours[y:y + h, x:x + w] = poisson_blend(dest[y:y + h, x:x + w], src, mask, mixed)
        theirs = cv2_blend(dest, src, mask, y, x, mixed)
        # OpenCV truncates the solution to integers, we round: at most one level apart
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
        assert not np.array_equal(ours, dest)


def test_pixels_outside_the_masks_bounding_box_keep_the_destination():
    rng = np.random.default_rng(2)
    dest, src = textured(rng, 40, 50), textured(rng, 40, 50)
    mask = np.zeros((40, 50), np.uint8)
    mask[5:30, 8:45] = 1
    out = poisson_blend(dest, src, mask, mixed=False)
    keep = np.ones((40, 50), bool)
    keep[6:29, 9:44] = False  # interior of the mask's bounding box
    assert np.array_equal(out[keep], dest[keep])


def test_source_with_the_same_gradients_leaves_the_destination_unchanged():
    rng = np.random.default_rng(3)
    dest = textured(rng, 40, 40) // 2
    out = poisson_blend(dest, dest + 60, ringed(np.ones((40, 40))), mixed=False)
    assert np.array_equal(out, dest)


def test_zero_factor_leaves_the_destination_unchanged():
    rng = np.random.default_rng(4)
    dest, src = textured(rng, 30, 30), textured(rng, 30, 30)
    out = poisson_blend(dest, src, ringed(np.ones((30, 30))), mixed=False, factor=0.0)
    assert np.array_equal(out, dest)


def test_colour_channels_are_blended_independently():
    rng = np.random.default_rng(5)
    dest, src = textured(rng, 36, 44, 3), textured(rng, 36, 44, 3)
    mask = ringed(np.ones((36, 44)))
    colour = poisson_blend(dest, src, mask, mixed=True)
    for c in range(3):
        single = poisson_blend(dest[..., c:c + 1], src[..., c:c + 1], mask, mixed=True)
        assert np.array_equal(colour[..., c:c + 1], single)


@pytest.mark.parametrize("h,w", [(4, 51), (51, 4), (3, 3), (8, 8), (1, 20)])
def test_thin_or_tiny_masks_do_not_raise(h, w):
    rng = np.random.default_rng(6)
    dest, src = textured(rng, h, w), textured(rng, h, w)
    out = poisson_blend(dest, src, ringed(np.ones((h, w))), mixed=True)
    assert out.shape == dest.shape and out.dtype == np.uint8


def sparse_blend(dest: np.ndarray, src: np.ndarray, mask: np.ndarray, mixed: bool,
                 factor: float = 1.0) -> np.ndarray:
    """The test oracle: the blend's float64 solution on a one-channel box, by a sparse
    direct solve of the 5-point Poisson equation (no DST).

    Guidance per pixel edge: ``factor`` x the source's forward difference inside the mask
    eroded three times by a 3x3 square (``mixed``: only where the source's
    ``|gx - gy|`` beats the destination's), the destination's elsewhere; divergence by
    backward differences; the domain is the mask's bounding box, whose outer ring keeps the
    destination.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    d, s = dest[box][..., 0].astype(np.float64), src[box][..., 0].astype(np.float64)
    h, w = d.shape
    inner = ndimage.binary_erosion(mask[box].astype(bool), np.ones((3, 3)), iterations=3,
                                   border_value=0)
    dgx, dgy = d[:-1, 1:] - d[:-1, :-1], d[1:, :-1] - d[:-1, :-1]
    sgx, sgy = s[:-1, 1:] - s[:-1, :-1], s[1:, :-1] - s[:-1, :-1]
    take = inner[:-1, :-1] * factor
    if mixed:
        take = take * (np.abs(sgx - sgy) > np.abs(dgx - dgy))
    vx, vy = dgx + take * (sgx - dgx), dgy + take * (sgy - dgy)
    index = -np.ones((h, w), int)
    index[1:-1, 1:-1] = np.arange((h - 2) * (w - 2)).reshape(h - 2, w - 2)
    at, to, vals, rhs = [], [], [], np.zeros((h - 2) * (w - 2))
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            i = index[y, x]
            rhs[i] = vx[y, x] - vx[y, x - 1] + vy[y, x] - vy[y - 1, x]
            at.append(i), to.append(i), vals.append(-4.0)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if index[ny, nx] >= 0:
                    at.append(i), to.append(index[ny, nx]), vals.append(1.0)
                else:
                    rhs[i] -= d[ny, nx]
    matrix = sparse.csr_matrix((vals, (at, to)), shape=(rhs.size, rhs.size))
    out = dest[..., 0].astype(np.float64)
    out[box][1:-1, 1:-1] = sparse_linalg.spsolve(matrix, rhs).reshape(h - 2, w - 2)
    return out


@pytest.mark.parametrize("mixed,factor", [(False, 1.0), (True, 1.0), (False, 0.4)])
def test_blend_is_the_poisson_solution_rounded_to_the_nearest_grey_level(mixed, factor):
    rng = np.random.default_rng(7)
    dest, src = textured(rng, 34, 41), textured(rng, 34, 41)
    yy, xx = np.mgrid[:34, :41]
    mask = ringed(((yy - 17) / 15) ** 2 + ((xx - 20) / 19) ** 2 <= 1)
    exact = sparse_blend(dest, src, mask, mixed, factor)
    expected = np.clip(np.rint(exact), 0, 255)
    ours = poisson_blend(dest, src, mask, mixed, factor)[..., 0].astype(np.float64)
    # float32 solve: a value within 1e-3 of a half level may round either way
    clear = np.abs(exact - np.floor(exact) - 0.5) > 1e-3
    assert clear.mean() > 0.99
    assert np.array_equal(ours[clear], expected[clear])
    assert np.abs(ours - expected).max() <= 1


def test_solutions_beyond_the_grey_range_are_clipped_to_0_and_255():
    dest = np.full((30, 36, 1), 250, np.uint8)
    dest[:, :18] = 5
    stripes = ((np.arange(36) // 3) % 2 * 255).astype(np.uint8)
    src = np.broadcast_to(stripes[None, :, None], (30, 36, 1)).copy()
    mask = ringed(np.ones((30, 36)))
    exact = sparse_blend(dest, src, mask, mixed=False)
    assert exact.min() < -1 and exact.max() > 256  # the solve leaves the grey range
    ours = poisson_blend(dest, src, mask, mixed=False)[..., 0]
    expected = np.clip(np.rint(exact), 0, 255)
    clear = np.abs(exact - np.floor(exact) - 0.5) > 1e-3
    assert np.array_equal(ours[clear], expected[clear])
    assert (ours == 0).any() and (ours == 255).any()
