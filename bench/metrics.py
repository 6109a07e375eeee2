"""Time AU-PRO and pixel AUROC/AP on 100 and 1,000 maps of 256x256 against baselines.

Baselines, measured in the same run on the same data:
- AU-PRO: a straightforward per-threshold loop (what the NSA authors' code does): for each
  of ``--thresholds`` thresholds, binarise every map, measure every region's overlap and the
  FPR, then integrate. Run on 100 maps only; its cost grows linearly with maps.
- pixel AUROC/AP: scikit-learn's ``roc_auc_score`` / ``average_precision_score``.
Peak memory of ``aupro`` on 1,000 maps is measured separately with tracemalloc (numpy
reports its buffers to it): the largest extra allocation above the inputs.

Run: ``.venv/bin/python bench/metrics.py`` (takes about a minute on one core).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from nsa.evaluate.metrics import aupro, auroc, average_precision
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score


def synthetic_set(n: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 maps and bool masks with 1-3 elliptic defects per second image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    masks = np.zeros((n, side, side), dtype=bool)
    for i in range(0, n, 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(side // 8, side - side // 8, size=2)
            ry, rx = rng.integers(3, side // 8, size=2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    maps = (0.6 * rng.random(masks.shape, dtype=np.float32) + 0.4 * masks).astype(np.float32)
    return maps, masks


def per_threshold_aupro(
    maps: np.ndarray, masks: np.ndarray, thresholds: int, fpr_limit: float = 0.3
) -> float:
    """The baseline: binarise at each of ``thresholds`` levels, average region overlaps."""
    structure = np.ones((3, 3))
    labelled = [ndimage.label(m, structure=structure)[0] for m in masks]
    sizes = [np.bincount(regions.ravel())[1:] for regions in labelled]
    free = ~masks
    n_free = free.sum()
    points = []
    for t in np.linspace(maps.max(), maps.min(), thresholds):
        overlaps = []
        false_pos = 0
        for regions, size, image_map, image_free in zip(labelled, sizes, maps, free, strict=True):
            predicted = image_map >= t
            false_pos += (predicted & image_free).sum()
            hits = np.bincount(regions[predicted], minlength=size.size + 1)[1:]
            overlaps.extend(hits / size)
        points.append((false_pos / n_free, np.mean(overlaps)))
    fpr, pro = np.array(points).T
    keep = fpr <= fpr_limit
    return float(np.trapezoid(pro[keep], fpr[keep]) / fpr_limit)


def timed(label: str, func, *args) -> float:
    start = time.perf_counter()
    value = func(*args)
    seconds = time.perf_counter() - start
    print(f"{label:<42} {seconds:8.2f} s   value {value:.4f}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--thresholds", type=int, default=200)
    args = parser.parse_args()

    maps, masks = synthetic_set(1000, args.side, seed=0)
    few_maps, few_masks = maps[:100], masks[:100]
    print(f"{args.side}x{args.side} maps; baseline uses {args.thresholds} thresholds")
    ours_100 = timed("aupro, 100 maps", aupro, few_maps, few_masks)
    base_100 = timed(
        "per-threshold loop, 100 maps", per_threshold_aupro, few_maps, few_masks, args.thresholds
    )
    ours_1000 = timed("aupro, 1,000 maps", aupro, maps, masks)
    sk_auroc = timed("scikit-learn pixel AUROC, 1,000 maps", roc_auc_score, masks.ravel(),
                     maps.ravel())
    our_auroc = timed("auroc, 1,000 maps", auroc, maps, masks)
    sk_ap = timed("scikit-learn pixel AP, 1,000 maps", average_precision_score, masks.ravel(),
                  maps.ravel())
    our_ap = timed("average_precision, 1,000 maps", average_precision, maps, masks)
    tracemalloc.start()
    aupro(maps, masks)
    extra = tracemalloc.get_traced_memory()[1] / 1e9
    tracemalloc.stop()
    print(f"aupro, 1,000 maps: peak extra memory {extra:.2f} GB "
          f"(inputs {(maps.nbytes + masks.nbytes) / 1e9:.2f} GB)")
    print(f"aupro speed-up over the per-threshold loop, 100 maps: {base_100 / ours_100:.0f}x")
    print(f"aupro 1,000 maps vs 100 maps: {ours_1000 / ours_100:.1f}x the time for 10x the maps")
    print(f"auroc speed-up over scikit-learn: {sk_auroc / our_auroc:.1f}x")
    print(f"average_precision speed-up over scikit-learn: {sk_ap / our_ap:.1f}x")


if __name__ == "__main__":
    main()
