"""bench/fidelity.py's statistics and its translation of the project's settings into the
release's ``patch_ex`` arguments (the arms themselves are the benchmark's business)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from bench_scripts import bench_script
from nsa.generate.presets import resolve_settings
from scipy import stats

#: The keyword parameters of the release's ``patch_ex`` (self_sup_data/self_sup_tasks.py).
PATCH_EX_KEYWORDS = {
    "same", "num_patches", "mode", "width_bounds_pct", "min_object_pct", "min_overlap_pct",
    "shift", "label_mode", "skip_background", "tol", "resize", "gamma_params",
    "intensity_logistic_params", "resize_bounds", "num_ellipses", "verbose",
    "cutpaste_patch_generation",
}



def test_welch_interval_is_scipys():
    a, b = [0.871, 0.859, 0.864], [0.859, 0.859, 0.875]
    diff, lo, hi = bench_script("fidelity").welch(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(sum(a) / 3 - sum(b) / 3)
    assert (lo, hi) == pytest.approx((expected.low, expected.high))


def test_welch_with_one_seed_has_no_interval():
    diff, lo, hi = bench_script("fidelity").welch([0.9], [0.8, 0.85])
    assert diff == pytest.approx(0.075) and math.isnan(lo) and math.isnan(hi)


def test_table_compares_each_arm_with_each_baseline():
    text = bench_script("fidelity").table(
        {"authors": {0: 0.86, 1: 0.87}, "project": {0: 0.88, 1: 0.86}, "pairing": {}},
        ["authors", "project"])
    rows = text.splitlines()
    assert len(rows) == 4  # header, rule, two arms with results
    assert rows[2].startswith("| authors | 2 | 0: 0.860, 1: 0.870 | 0.865 +- 0.007 |  |")
    assert "+0.005 [" in rows[3]


def test_release_arguments_are_the_elpv_presets_figures():
    settings = resolve_settings("elpv", {"size": 128})
    arguments = bench_script("fidelity").release_arguments(settings)
    assert set(arguments) == PATCH_EX_KEYWORDS
    assert arguments["mode"] == cv2.MIXED_CLONE
    assert arguments["width_bounds_pct"] == ((0.03, 0.4), (0.03, 0.4))
    assert arguments["intensity_logistic_params"] == pytest.approx((1 / 3, 7.0))
    assert arguments["gamma_params"] == (2.0, 0.05, 0.03)
    assert (arguments["num_patches"], arguments["skip_background"]) == (3, None)
    assert arguments["label_mode"] == "logistic-intensity"


def test_shifted_boxes_move_one_box_per_cell_by_the_shift_and_clip():
    cells = np.full((3, 32, 32, 1), 254, np.uint8)
    cells[1] = 0
    fidelity = bench_script("fidelity")
    up, down = fidelity.shifted_boxes(cells, 2), fidelity.shifted_boxes(cells, -2)
    changed = up != cells
    assert [int(c.any()) for c in (down != cells)] == [1, 0, 1]  # cell 1 clips at 0
    assert set(np.unique(up[changed])) <= {255, 2}  # 254 + 2 clips at 255
    assert np.array_equal(changed[[0, 2]], (down != cells)[[0, 2]])  # the same boxes
    for cell in changed[:, :, :, 0]:
        rows, cols = np.nonzero(cell)
        assert cell[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one box
        assert 6 <= rows.max() + 1 - rows.min() <= 14
