"""The metric definitions: AU-PRO, AUROC and average precision, exact and fast.

Every metric here is computed from two sorted score arrays (one per class) rather than one
argsort over all pixels with their labels: ``np.sort`` of a float array is several times
faster than ``argsort`` and needs no index array, which is what makes pixel metrics over a
whole MVTec test set (tens of millions of pixels) take a second instead of minutes.

- :func:`auroc` equals scikit-learn's ``roc_auc_score`` (the trapezoidal ROC area with ties
  collapsed, i.e. the Mann-Whitney statistic with ties counted half).
- :func:`average_precision` equals scikit-learn's ``average_precision_score``
  (sum over thresholds of recall increase times precision, no interpolation).
- :func:`aupro` is the per-region-overlap area of MVTec's reference evaluation as stated
  in ``docs/evaluation.md``: ground-truth regions labelled with 8-connectivity per image; all
  pixel scores of the set in one descending order; each defect-free pixel adds
  1/(defect-free pixels) to the FPR, each region pixel adds 1/(|region| * regions) to the
  PRO; one curve point per distinct score (ties form one threshold); (0, 0) prepended;
  trapezoid area up to ``fpr_limit`` with linear interpolation at the limit; divided by
  the limit. The value is never above 1.

Undefined metrics (a single class present, no defect-free pixel, no region) are ``nan``;
the tables write them as null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: An array, or a sequence of per-image 2-D arrays whose sizes may differ.
ArrayOrMaps = np.ndarray | Sequence[np.ndarray]

#: 8-connectivity inside each image and none across images of a (N, H, W) stack.
_EIGHT_CONNECTED_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_IMAGE[1] = True


class UndefinedMetric(ValueError):
    """The curve does not exist for these inputs (no defect-free pixel, or no region)."""


def _split_scores(scores: ArrayOrMaps, labels: ArrayOrMaps) -> tuple[np.ndarray, np.ndarray]:
    """Return (negative scores, positive scores), each sorted ascending."""
    pairs = _pairs(scores, labels)
    neg = np.concatenate([score[~label] for score, label in pairs])
    pos = np.concatenate([score[label] for score, label in pairs])
    return np.sort(neg), np.sort(pos)


def auroc(scores: ArrayOrMaps, labels: ArrayOrMaps) -> float:
    """Area under the ROC curve of ``scores`` against binary ``labels`` (any equal shapes).

    Counts, for every positive, the negatives scored below it plus half those scored
    equal: the exact trapezoidal area, equal to scikit-learn's ``roc_auc_score``.
    ``nan`` when only one class is present.
    """
    neg, pos = _split_scores(scores, labels)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    below = np.searchsorted(neg, pos, side="left").astype(np.float64)
    at_or_below = np.searchsorted(neg, pos, side="right").astype(np.float64)
    return float((below + at_or_below).sum() / (2.0 * neg.size * pos.size))


def average_precision(scores: ArrayOrMaps, labels: ArrayOrMaps) -> float:
    """Average precision of ``scores`` against binary ``labels``, as scikit-learn defines it.

    Sum over distinct thresholds (descending) of the recall gained times the precision
    there. Only thresholds that hold a positive gain recall, so it suffices to visit the
    distinct positive scores and count the negatives at or above each. ``nan`` without
    positives.
    """
    neg, pos = _split_scores(scores, labels)
    if pos.size == 0:
        return float("nan")
    pos_desc = pos[::-1]
    # last index of each run of equal positive scores, in descending order
    ends = np.flatnonzero(np.append(pos_desc[1:] != pos_desc[:-1], True))
    thresholds = pos_desc[ends]
    true_pos = (ends + 1).astype(np.float64)
    false_pos = (neg.size - np.searchsorted(neg, thresholds, side="left")).astype(np.float64)
    recall_gain = np.diff(true_pos, prepend=0.0) / pos.size
    return float(np.sum(recall_gain * true_pos / (true_pos + false_pos)))


def roc_points(
    scores: ArrayOrMaps, labels: ArrayOrMaps, max_points: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) points of the ROC curve for plotting, at most about ``max_points``.

    Every point lies exactly on the curve: thresholds are taken at quantiles of the scores
    and the rates counted there. Empty arrays when only one class is present.
    """
    neg, pos = _split_scores(scores, labels)
    if neg.size == 0 or pos.size == 0:
        return np.zeros(0), np.zeros(0)
    everything = np.concatenate([neg, pos])
    thresholds = np.unique(np.quantile(everything, np.linspace(0.0, 1.0, max_points)))[::-1]
    fpr = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
    tpr = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


@dataclass(frozen=True)
class ProSegments:
    """The PRO curve as consecutive segments, one per distinct defect-free score.

    Segment ``j`` runs from ``(fpr[j], pro_start[j])`` to ``(fpr[j + 1], pro_end[j])``.
    Thresholds that hold only region pixels add vertical steps of zero width, folded into
    the segments' ends; a threshold holding both kinds gives a sloped segment (the tie
    collapsed into one point). Only the segments needed to reach the FPR limit are kept.
    """

    fpr: np.ndarray
    pro_start: np.ndarray
    pro_end: np.ndarray


def _region_pixels(maps: ArrayOrMaps, masks: ArrayOrMaps) -> tuple[np.ndarray, np.ndarray]:
    """Scores of all region pixels and each pixel's PRO weight 1/(|region| * regions)."""
    if isinstance(maps, np.ndarray) and maps.ndim == 3:
        regions, n_regions = ndimage.label(masks, structure=_EIGHT_CONNECTED_PER_IMAGE)
        region_of_pixel = regions[masks]
        scores = maps[masks]
    else:  # maps of different sizes: label each image, numbering regions on from the last
        ids, score_parts, n_regions = [], [], 0
        for image_map, mask in zip(maps, masks, strict=True):
            regions, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
            ids.append(regions[mask] + n_regions)
            score_parts.append(image_map[mask])
            n_regions += count
        region_of_pixel, scores = np.concatenate(ids), np.concatenate(score_parts)
    if n_regions == 0:
        return scores, np.zeros(0)
    sizes = np.bincount(region_of_pixel, minlength=n_regions + 1).astype(np.float64)
    weights = 1.0 / (sizes[region_of_pixel] * n_regions)
    return scores, weights


def pro_segments(maps: ArrayOrMaps, masks: ArrayOrMaps, fpr_limit: float = 0.3) -> ProSegments:
    """Compute the PRO curve's segments up to the first one that passes ``fpr_limit``.

    Raises ValueError for shapes that do not match, and :class:`UndefinedMetric` when the
    curve does not exist (no defect-free pixel or no region).
    """
    pairs = _pairs(maps, masks)
    if isinstance(maps, np.ndarray):
        maps, masks = _stack(pairs)
    else:
        maps, masks = [m for m, _ in pairs], [k for _, k in pairs]
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    region_scores, region_weights = _region_pixels(maps, masks)
    free = maps[~masks] if isinstance(maps, np.ndarray) else np.concatenate(
        [m[~k] for m, k in zip(maps, masks, strict=True)]
    )
    n_free = free.size
    if n_free == 0 or region_scores.size == 0:
        raise UndefinedMetric("PRO needs defect-free pixels and at least one defect region")

    # Only the highest defect-free scores matter: those up to (and just past) the limit.
    needed = min(n_free, int(np.floor(fpr_limit * n_free)) + 2)
    if needed < n_free:
        cut = np.partition(free, n_free - needed)[n_free - needed]
        free = free[free >= cut]
    free_desc = np.sort(free)[::-1]
    # distinct defect-free scores, descending, and how many defect-free pixels are >= each
    ends = np.flatnonzero(np.append(free_desc[1:] != free_desc[:-1], True))
    thresholds = free_desc[ends]
    fpr = (ends + 1) / n_free

    order = np.argsort(region_scores)
    sorted_scores = region_scores[order]
    # cumulative PRO from the top: pro_at_or_above[i] = weight of region pixels >= sorted[i]
    pro_at_or_above = np.cumsum(region_weights[order][::-1])[::-1]
    pro_at_or_above = np.append(pro_at_or_above, 0.0)
    first_above = np.searchsorted(sorted_scores, thresholds, side="right")
    first_at = np.searchsorted(sorted_scores, thresholds, side="left")
    # PRO is a mean of fractions in [0, 1]; clip only the summation's rounding error
    pro_start = np.minimum(pro_at_or_above[first_above], 1.0)
    pro_end = np.minimum(pro_at_or_above[first_at], 1.0)

    past = np.flatnonzero(fpr > fpr_limit)
    stop = past[0] + 1 if past.size else fpr.size
    return ProSegments(
        fpr=np.concatenate([[0.0], fpr[:stop]]), pro_start=pro_start[:stop], pro_end=pro_end[:stop]
    )


def aupro(maps: ArrayOrMaps, masks: ArrayOrMaps, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by the limit.

    ``maps`` float (N, H, W) anomaly scores, ``masks`` bool (N, H, W) ground truth (a single
    (H, W) map, or sequences of per-image maps and masks of differing sizes, are accepted
    too). Exactly the algorithm of the module docstring; ``nan`` when there is no
    defect-free pixel or no defect region. A map that scores every defect pixel above
    every defect-free pixel gives 1.0; random scores give about 0.15.
    """
    try:
        curve = pro_segments(maps, masks, fpr_limit)
    except UndefinedMetric:
        return float("nan")
    x0, x1 = curve.fpr[:-1], curve.fpr[1:]
    y0, y1 = curve.pro_start, curve.pro_end
    crossing = x1 > fpr_limit
    # the last segment may pass the limit: cut it there, interpolating PRO linearly
    cut_x1 = np.where(crossing, fpr_limit, x1)
    width = x1 - x0
    fraction = np.divide(cut_x1 - x0, width, out=np.ones_like(width), where=width > 0)
    cut_y1 = y0 + fraction * (y1 - y0)
    area = np.sum((cut_x1 - x0) * (y0 + cut_y1) / 2.0)
    return float(min(area / fpr_limit, 1.0))


def pro_points(
    maps: ArrayOrMaps, masks: ArrayOrMaps, fpr_limit: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) polyline of the curve up to just past ``fpr_limit``, for plotting."""
    try:
        curve = pro_segments(maps, masks, fpr_limit)
    except UndefinedMetric:
        return np.zeros(0), np.zeros(0)
    x = np.repeat(curve.fpr, 2)[1:-1]
    y = np.column_stack([curve.pro_start, curve.pro_end]).ravel()
    return np.concatenate([[0.0], x]), np.concatenate([[0.0], y])


def _pairs(maps: ArrayOrMaps, masks: ArrayOrMaps) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair each map with its mask as (float array, bool array) of equal shape, or raise.

    Accepts one array of any shape with a mask array of the same shape, or sequences of
    per-image 2-D arrays (whose sizes may differ from image to image).
    """
    if isinstance(maps, np.ndarray) and isinstance(masks, np.ndarray):
        maps_list, masks_list = [maps], [masks]
    else:
        maps_list, masks_list = list(maps), list(masks)
        if len(maps_list) != len(masks_list):
            raise ValueError(f"{len(maps_list)} maps but {len(masks_list)} masks")
    pairs = []
    for image_map, mask in zip(maps_list, masks_list, strict=True):
        image_map, mask = np.asarray(image_map), np.asarray(mask).astype(bool, copy=False)
        if image_map.shape != mask.shape:
            raise ValueError(f"map shape {image_map.shape} != mask shape {mask.shape}")
        if not np.issubdtype(image_map.dtype, np.floating):
            image_map = image_map.astype(np.float64)
        pairs.append((image_map, mask))
    return pairs


def _stack(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The single (map, mask) pair of an array input as (N, H, W); one (H, W) map is N=1."""
    (maps, masks), = pairs
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {maps.shape}")
    return maps, masks
