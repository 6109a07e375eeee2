"""The metric definitions: AU-PRO as docs/evaluation.md states it, AUROC/AP as scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nsa.evaluate.metrics import aupro, auroc, average_precision, pro_points, roc_points
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score


def literal_aupro(maps, masks, fpr_limit: float) -> float:
    """The algorithm of docs/evaluation.md written out step by step, as the test oracle.

    ``maps`` and ``masks`` are (N, H, W) arrays or lists of 2-D arrays."""
    regions_per_image = [ndimage.label(m, structure=np.ones((3, 3)))[0] for m in masks]
    n_regions = sum(int(r.max()) for r in regions_per_image)
    n_free = sum(int((~m).sum()) for m in masks)
    weights_free, weights_region = [], []
    for mask, regions in zip(masks, regions_per_image, strict=True):
        free = np.where(mask, 0.0, 1.0 / n_free)
        region = np.zeros(mask.shape)
        for r in range(1, regions.max() + 1):
            inside = regions == r
            region[inside] = 1.0 / (inside.sum() * n_regions)
        weights_free.append(free.ravel())
        weights_region.append(region.ravel())
    all_scores = np.concatenate([m.ravel() for m in maps])
    weights_free, weights_region = np.concatenate(weights_free), np.concatenate(weights_region)
    order = np.argsort(-all_scores, kind="stable")
    scores = all_scores[order]
    fpr = np.cumsum(weights_free[order])
    pro = np.cumsum(weights_region[order])
    last_of_run = np.append(scores[1:] != scores[:-1], True)
    fpr = np.concatenate([[0.0], fpr[last_of_run]])
    pro = np.concatenate([[0.0], pro[last_of_run]])
    area = 0.0
    for j in range(1, fpr.size):
        if fpr[j] <= fpr_limit:
            area += (fpr[j] - fpr[j - 1]) * (pro[j] + pro[j - 1]) / 2
        else:
            slope = (pro[j] - pro[j - 1]) / (fpr[j] - fpr[j - 1])
            y = pro[j - 1] + slope * (fpr_limit - fpr[j - 1])
            area += (fpr_limit - fpr[j - 1]) * (y + pro[j - 1]) / 2
            break
    return area / fpr_limit


def test_aupro_hand_worked_two_single_pixel_regions() -> None:
    # curve (0,0) -> (0,.5) -> (.5,.5) -> (.5,1) -> (1,1)
    maps = np.array([[[0.9, 0.8, 0.4, 0.1]]])
    masks = np.array([[[1, 0, 1, 0]]], dtype=bool)
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(0.5)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.75)


def test_aupro_interpolates_linearly_at_the_limit() -> None:
    # curve (0,0) -> (0,.5) -> (1/3,1): PRO at FPR .3 is .95; area .3*(.5+.95)/2
    maps = np.array([[[0.9, 0.5, 0.5, 0.3, 0.1]]])
    masks = np.array([[[1, 1, 0, 0, 0]]], dtype=bool)
    assert aupro(maps, masks) == pytest.approx(0.3 * (0.5 + 0.95) / 2 / 0.3)


def test_aupro_treats_tied_scores_as_one_threshold() -> None:
    # a region pixel and a defect-free pixel share 0.5: one sloped segment, whatever
    # order the two pixels are stored in
    masks = np.array([[[1, 1, 0, 0, 0]]], dtype=bool)
    forward = aupro(np.array([[[0.9, 0.5, 0.5, 0.3, 0.1]]]), masks)
    swapped = aupro(np.array([[[0.5, 0.9, 0.5, 0.3, 0.1]]]), masks)
    assert forward == swapped == pytest.approx(0.725)


def test_aupro_is_zero_while_a_defect_free_pixel_outscores_every_defect() -> None:
    # curve (0,0) -> (.5,0) -> (.5,1) -> (1,1): nothing of a region found up to FPR .5
    maps = np.array([[[0.9, 0.5, 0.1]]])
    masks = np.array([[[0, 1, 0]]], dtype=bool)
    assert aupro(maps, masks) == 0.0
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)


def test_aupro_of_a_perfect_map_is_one() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 32, 32), dtype=bool)
    masks[0, 3:9, 4:20] = True
    masks[2, 20:30, 20:22] = True
    masks[2, 1, 1] = True
    maps = np.where(masks, 0.6 + 0.4 * rng.random(masks.shape), 0.5 * rng.random(masks.shape))
    assert aupro(maps, masks) == pytest.approx(1.0, abs=1e-12)
    assert aupro(maps, masks) <= 1.0


def test_aupro_of_random_scores_is_about_fifteen_percent() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((20, 64, 64), dtype=bool)
    for i in range(20):
        y, x = rng.integers(0, 48, size=2)
        masks[i, y : y + 12, x : x + 16] = True
    maps = rng.random(masks.shape)
    assert aupro(maps, masks) == pytest.approx(0.15, abs=0.02)


def test_aupro_does_not_change_under_a_strictly_increasing_transform() -> None:
    rng = np.random.default_rng(2)
    masks = rng.random((3, 24, 24)) > 0.8
    maps = np.round(rng.random(masks.shape), 2)  # many ties
    assert aupro(np.exp(3.0 * maps) - 7.0, masks) == aupro(maps, masks)


def test_aupro_weighs_each_region_equally() -> None:
    # one 3x3 region found perfectly, one 1-pixel region missed (scored below every
    # defect-free pixel): PRO is 1/2 at every FPR below 1, not 9/10 by pixel count
    masks = np.zeros((1, 16, 16), dtype=bool)
    masks[0, 2:5, 2:5] = True
    masks[0, 12, 12] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 2:5, 2:5] = 1.0
    maps[0, 12, 12] = 0.0
    assert aupro(maps, masks) == pytest.approx(0.5)


def test_aupro_labels_regions_with_eight_connectivity() -> None:
    # (3,3) touches (4,4) only diagonally: one region of 3 pixels, so finding (3,3) alone
    # gives PRO 1/3 (with 4-connectivity it would be one of two regions: 1/2)
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 3, 3] = masks[0, 4, 4] = masks[0, 4, 5] = True
    maps = np.full(masks.shape, 0.5)
    maps[masks] = 0.0
    maps[0, 3, 3] = 1.0
    assert aupro(maps, masks) == pytest.approx(1 / 3)


def test_aupro_does_not_join_regions_across_images() -> None:
    # a found pixel on image 0's bottom edge, a missed 3-pixel region on image 1's top edge:
    # two regions (PRO 1/2), not one of 4 pixels (PRO 1/4)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 3, 1] = True
    masks[1, 0, 0:3] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 3, 1] = 1.0
    maps[1, 0, 0:3] = 0.0
    assert aupro(maps, masks) == pytest.approx(0.5)


def test_aupro_is_nan_without_any_defect_region() -> None:
    assert np.isnan(aupro(np.random.default_rng(0).random((2, 8, 8)), np.zeros((2, 8, 8), bool)))


def test_aupro_rejects_maps_and_masks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        aupro(np.zeros((2, 8, 8)), np.zeros((2, 8, 9), dtype=bool))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    levels=st.integers(2, 50),
    fpr_limit=st.sampled_from([0.05, 0.3, 0.5, 1.0]),
)
def test_aupro_equals_the_literal_algorithm_and_stays_at_most_one(
    seed: int, levels: int, fpr_limit: float
) -> None:
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 9, 11)) > rng.uniform(0.5, 0.95)
    masks[0, 0, 0] = True
    masks[1, -1, -1] = False
    maps = rng.integers(0, levels, size=masks.shape) / levels + 0.3 * masks * rng.random()
    value = aupro(maps, masks, fpr_limit)
    assert value == pytest.approx(literal_aupro(maps, masks, fpr_limit), abs=1e-12)
    assert 0.0 <= value <= 1.0


def test_aupro_takes_a_list_of_maps_of_different_sizes() -> None:
    rng = np.random.default_rng(5)
    masks = [rng.random((9, 13)) > 0.7, rng.random((16, 5)) > 0.9, np.zeros((4, 4), bool)]
    maps = [np.round(rng.random(m.shape), 1) + 0.2 * m for m in masks]
    assert aupro(maps, masks) == pytest.approx(literal_aupro(maps, masks, 0.3), abs=1e-12)


def test_pro_points_pass_through_the_curve_up_to_the_limit() -> None:
    fpr, pro = pro_points(np.array([[[0.9, 0.8, 0.4, 0.1]]]), np.array([[[1, 0, 1, 0]]], bool))
    assert list(zip(fpr, pro, strict=True)) == [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), levels=st.integers(2, 1000), n=st.integers(2, 400))
def test_auroc_and_average_precision_equal_scikit_learn(seed: int, levels: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < rng.uniform(0.05, 0.95)
    labels[0], labels[1] = True, False
    scores = (rng.integers(0, levels, n) + 2.0 * labels * rng.random()).astype(np.float32)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def test_auroc_and_average_precision_take_pixel_maps_of_any_shape() -> None:
    rng = np.random.default_rng(3)
    masks = rng.random((4, 16, 16)) > 0.9
    maps = rng.random(masks.shape) + masks
    assert auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert average_precision(maps, masks) == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel())
    )


def test_auroc_and_average_precision_take_lists_of_maps_of_different_sizes() -> None:
    rng = np.random.default_rng(6)
    masks = [rng.random((9, 13)) > 0.7, rng.random((16, 5)) > 0.9]
    maps = [rng.random(m.shape) + 0.5 * m for m in masks]
    flat_maps = np.concatenate([m.ravel() for m in maps])
    flat_masks = np.concatenate([m.ravel() for m in masks])
    assert auroc(maps, masks) == pytest.approx(roc_auc_score(flat_masks, flat_maps))
    assert average_precision(maps, masks) == pytest.approx(
        average_precision_score(flat_masks, flat_maps)
    )


def test_auroc_is_nan_with_one_class_and_average_precision_without_positives() -> None:
    assert np.isnan(auroc(np.arange(4.0), np.zeros(4, bool)))
    assert np.isnan(average_precision(np.arange(4.0), np.zeros(4, bool)))


def test_roc_points_lie_on_the_curve_from_origin_to_one() -> None:
    rng = np.random.default_rng(4)
    labels = rng.random(500) < 0.3
    fpr, tpr = roc_points(rng.random(500) + labels, labels)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_one_negative_or_one_positive_is_enough_for_auroc_ap_and_roc_points() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2])
    for labels in (np.array([0, 1, 1, 1, 1], bool), np.array([1, 0, 0, 0, 0], bool)):
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
        assert average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels, scores))
        fpr, tpr = roc_points(scores, labels)
        assert (fpr[-1], tpr[-1]) == (1.0, 1.0)


def test_one_class_gives_nan_and_no_roc_points_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for labels in (np.zeros(4, bool), np.ones(4, bool)):
            assert np.isnan(auroc(np.arange(4.0), labels))
            fpr, tpr = roc_points(np.arange(4.0), labels)
            assert fpr.size == 0 and tpr.size == 0


def test_roc_points_come_at_about_max_points_thresholds() -> None:
    rng = np.random.default_rng(8)
    labels = rng.random(5000) < 0.3
    scores = rng.random(5000) + labels
    assert 900 <= roc_points(scores, labels)[0].size <= 1001
    assert roc_points(scores, labels, max_points=20)[0].size <= 21


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.5])
def test_an_fpr_limit_outside_zero_to_one_is_refused(limit: float) -> None:
    maps, masks = np.array([[[0.9, 0.8, 0.4, 0.1]]]), np.array([[[1, 0, 1, 0]]], bool)
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(maps, masks, fpr_limit=limit)


def test_aupro_is_defined_with_a_single_defect_free_pixel() -> None:
    maps, masks = np.array([[[0.9, 0.5, 0.4]]]), np.array([[[1, 0, 1]]], bool)
    assert aupro(maps, masks) == pytest.approx(literal_aupro(maps, masks, 0.3))
    assert aupro(maps, masks) == pytest.approx(0.5)  # PRO 0.5 until FPR jumps to 1


def test_pro_points_and_an_undefined_curve() -> None:
    maps, masks = np.array([[[0.9, 0.8, 0.4, 0.1]]]), np.array([[[1, 0, 1, 0]]], bool)
    fpr, pro = pro_points(maps, masks, fpr_limit=0.6)
    assert fpr[-1] == 1.0 and pro[-1] == 1.0  # past 0.5: the curve goes on to (1, 1)
    fpr, pro = pro_points(maps, np.zeros_like(masks))
    assert fpr.size == 0 and pro.size == 0


def test_a_single_two_dimensional_map_and_integer_scores_are_accepted() -> None:
    rng = np.random.default_rng(9)
    mask = rng.random((12, 10)) > 0.8
    int_map = rng.integers(0, 50, mask.shape) + 30 * mask
    expected = aupro(int_map[None].astype(np.float64), mask[None])
    assert aupro(int_map.astype(np.float64), mask) == pytest.approx(expected)
    assert aupro(int_map, mask) == pytest.approx(expected)
    assert aupro([int_map], [mask]) == pytest.approx(expected)
    assert auroc(int_map, mask) == pytest.approx(roc_auc_score(mask.ravel(), int_map.ravel()))
