"""Labels: changed-pixel mask and the disk-median intensity, computed on a window."""

import cv2
import numpy as np
import pytest
from nsa.generate.labels import disk_median, label_map
from scipy import ndimage
from skimage.morphology import disk


def test_disk_median_equals_scipys_median_filter_with_edge_padding():
    rng = np.random.default_rng(0)
    for dtype, top in ((np.uint8, 256), (np.uint16, 766)):
        values = rng.integers(0, top, (23, 31)).astype(dtype)
        expected = ndimage.median_filter(values, footprint=disk(5), mode="nearest")
        assert np.array_equal(disk_median(values), expected)


def reference_label(dest, result, region, label_mode, tol, k, x0, factor):
    """The label computed on the whole image, the way the method states it."""
    change = np.abs(dest.astype(np.float64) - result).mean(axis=2)
    changed = ((change > tol) & region).astype(np.uint8)
    mask = cv2.medianBlur(changed, 5).astype(bool) & region
    if label_mode == "binary":
        return mask.astype(np.float64)
    if label_mode == "continuous":
        return mask * factor
    filtered = ndimage.median_filter(change * mask, footprint=disk(5), mode="nearest")
    if label_mode == "intensity":
        return mask * filtered / 255
    return mask / (1 + np.exp(-k * (filtered - x0)))


def example_pair(channels: int, boxes):
    rng = np.random.default_rng(channels)
    dest = rng.integers(0, 256, (48, 48, channels)).astype(np.uint8)
    result = dest.copy()
    region = np.zeros((48, 48), bool)
    for y0, x0, y1, x1 in boxes:
        region[y0:y1, x0:x1] = True
        change = rng.integers(-40, 40, (y1 - y0, x1 - x0, channels))
        result[y0:y1, x0:x1] = np.clip(dest[y0:y1, x0:x1] + change, 0, 255)
    return dest, result, region


#: Patch boxes whose window lies inside the image (the window's margin decides the label
#: near its edge): taller than wide and wider than tall, so that a window taken from the
#: wrong axis cuts into them; and boxes touching the image borders (edge padding decides).
TALL = [(6, 20, 30, 31), (16, 24, 40, 34)]
WIDE = [(20, 6, 31, 30), (24, 16, 34, 40)]
AT_BORDERS = [(0, 2, 20, 25), (15, 20, 40, 48), (40, 0, 48, 10)]


@pytest.mark.parametrize("boxes", [TALL, WIDE, AT_BORDERS], ids=["tall", "wide", "at-borders"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("label_mode", ["binary", "continuous", "intensity",
                                        "logistic-intensity"])
def test_window_label_equals_the_whole_image_computation(channels, label_mode, boxes):
    dest, result, region = example_pair(channels, boxes)
    ours = label_map(dest, result, region, boxes, label_mode, 1.0, (1 / 3, 7), 0.4)
    expected = reference_label(dest, result, region, label_mode, 1.0, 1 / 3, 7, 0.4)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_labels_are_zero_outside_the_patch_regions():
    boxes = [(10, 10, 30, 20), (10, 20, 20, 30)]  # an L shape with a concave corner
    dest, result, region = example_pair(1, boxes)
    for mode in ("binary", "intensity", "logistic-intensity"):
        label = label_map(dest, result, region, boxes, mode, 1.0, (1 / 3, 7))
        assert not label[~region].any()
        assert label.min() >= 0 and label.max() <= 1


def test_changes_of_at_most_tol_are_not_labelled():
    dest = np.full((24, 24, 1), 100, np.uint8)
    result = dest.copy()
    result[4:20, 4:20] = 101
    region = np.ones((24, 24), bool)
    assert not label_map(dest, result, region, [(4, 4, 20, 20)], "binary", 1.0, (1, 1)).any()
    result[4:20, 4:20] = 102
    label = label_map(dest, result, region, [(4, 4, 20, 20)], "binary", 1.0, (1, 1))
    assert set(np.unique(label)) == {0.0, 1.0}


def test_logistic_label_of_a_uniform_change_is_the_logistic_of_that_change():
    dest = np.full((40, 40, 1), 50, np.uint8)
    result = dest.copy()
    result[10:30, 10:30] = 60
    region = np.zeros((40, 40), bool)
    region[10:30, 10:30] = True
    label = label_map(dest, result, region, [(10, 10, 30, 30)], "logistic-intensity", 1.0,
                      (1 / 3, 7))
    assert label[20, 20] == pytest.approx(1 / (1 + np.exp(-(10 - 7) / 3)), rel=1e-6)


def test_tol_is_a_mean_over_channels():
    dest = np.full((24, 24, 3), 100, np.uint8)
    result = dest.copy()
    region = np.ones((24, 24), bool)
    box = [(4, 4, 20, 20)]
    result[4:20, 4:20] = (102, 102, 102)  # mean change 2 = tol: not changed
    assert not label_map(dest, result, region, box, "binary", 2.0, (1, 1)).any()
    result[4:20, 4:20] = (100, 100, 107)  # mean change 7/3 > 2, though 2 channels kept
    assert label_map(dest, result, region, box, "binary", 2.0, (1, 1))[12, 12] == 1.0
