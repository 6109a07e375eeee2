"""Patch geometry: half-widths, boxes, ellipses, CutPaste boxes and rescaled sizes."""

import numpy as np
from nsa.generate import patches as geometry

BOUNDS = geometry.WidthBounds(min_h=2, max_h=26, min_w=3, max_w=20)


def test_width_bounds_are_rounded_fractions_of_each_side():
    bounds = geometry.WidthBounds.from_fractions([[0.03, 0.4], [0.05, 0.2]], 64, 100)
    assert bounds == geometry.WidthBounds(2, 26, 5, 20)


def test_gamma_half_widths_are_clipped_to_the_bounds():
    rng = np.random.default_rng(0)
    widths = [geometry.sample_half_width(rng, 64, 2, 26, (2, 0.05, 0.03)) for _ in range(3000)]
    assert min(widths) == 2 and max(widths) == 26


def test_uniform_half_widths_cover_min_to_max_exclusive():
    rng = np.random.default_rng(1)
    widths = {geometry.sample_half_width(rng, 64, 2, 6, None) for _ in range(500)}
    assert widths == {2, 3, 4, 5}


def test_source_boxes_lie_in_the_image_around_a_centre_away_from_the_border():
    rng = np.random.default_rng(2)
    for _ in range(500):
        y0, x0, y1, x1 = geometry.source_box(rng, 64, 64, BOUNDS, 20, 10)
        assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64
        assert y1 - y0 <= 40 and x1 - x0 <= 20
        assert y1 - y0 >= 20 + BOUNDS.min_h and x1 - x0 >= 10 + BOUNDS.min_w


def test_ellipse_masks_are_nonempty_unions_inside_the_box():
    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = geometry.ellipse_mask(rng, 30, 20, 5, BOUNDS, 15, 10)
        assert mask.shape == (30, 20) and mask.dtype == np.uint8
        assert mask.sum() > 0 and set(np.unique(mask)) <= {0, 1}


def test_cutpaste_boxes_have_the_area_and_aspect_of_the_supplement():
    rng = np.random.default_rng(4)
    for _ in range(500):
        y0, x0, y1, x1 = geometry.cutpaste_box(rng, 100, 100)
        h, w = y1 - y0, x1 - x0
        assert y0 >= 0 and y1 <= 100 and x0 >= 0 and x1 <= 100
        assert 0.015 <= h * w / 100**2 <= 0.16
        assert 0.25 <= w / h <= 3.6


def test_rescaled_sizes_keep_the_aspect_ratio_within_the_bounds():
    assert geometry.rescaled_size(1.3, 20, 10, 2, 26, 2, 26) == (26, 13)
    assert geometry.rescaled_size(0.7, 40, 40, 2, 26, 2, 26) == (26, 26)
    h, w = geometry.rescaled_size(0.5, 10, 40, 2, 26, 3, 20)
    assert 2 <= h <= 26 and 3 <= w <= 20


def test_a_patch_fits_only_where_its_centre_range_is_not_empty():
    lo, hi = geometry.centre_range(10, 64)
    assert geometry.box_at(lo, lo, 10, 10)[0] >= 1
    assert geometry.box_at(hi - 1, hi - 1, 10, 10)[2] <= 63
    lo, hi = geometry.centre_range(63, 64)
    assert hi <= lo
