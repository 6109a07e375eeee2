"""From a map to a decision: pass/fail, normalised score, defect outline; and their rates.

:func:`decide` applies :class:`~nsa.evaluate.calibration.Thresholds` to one map: the
image is anomalous when its ``score_mean`` is above the image threshold; its defect mask
is the map resized bilinearly to the image's own resolution and taken above the pixel
threshold, for anomalous images only (a part that passes has no outline).

:func:`decision_metrics` counts what those decisions do on a labelled test set: the
image-level false-alarm rate, miss rate, F1 and confusion counts at a threshold chosen
*beforehand* (never on the test defects). Good test images that were used to calibrate
(same SHA-256) are left out of these counts, so the false-alarm rate is measured on
images the threshold never saw.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from nsa.evaluate.calibration import (
    Thresholds,
    calibration_hashes,
    file_sha256,
    summary_line,
)
from nsa.evaluate.inference import resize_map


@dataclass(frozen=True)
class Decision:
    """One image's decision; all None/False when there is no image threshold.

    ``mask`` bool (H, W) at the image's own resolution, or None without a pixel threshold.
    """

    normalized: float | None
    anomalous: bool | None
    defect_area_px: int | None
    mask: np.ndarray | None


def decide(side_map: np.ndarray, native_shape: tuple[int, int], limits: Thresholds
           ) -> Decision:
    """The decision for a float32 (side, side) map of an image of ``native_shape`` (H, W)."""
    if not limits.decides:
        return Decision(None, None, None, None)
    score = float(side_map.mean(dtype=np.float64))
    anomalous = bool(score > limits.image)
    mask = None
    if limits.pixel is not None:
        if anomalous:
            mask = resize_map(side_map, native_shape) > limits.pixel
        else:
            mask = np.zeros(native_shape, dtype=bool)
    area = int(mask.sum()) if mask is not None else None
    return Decision(limits.normalized(score), anomalous, area, mask)


def say_uncalibrated(model: str) -> None:
    """The one warning of a prediction without thresholds."""
    print(f"warning: {model} has no calibration (run `nsa-eval calibrate`) and no "
          "--threshold: scores.csv has no decisions and maps/ no masks", file=sys.stderr)


def say_thresholds(limits: Thresholds) -> None:
    """One line on stderr: where the thresholds come from."""
    if limits.calibration and limits.source == "calibration":
        print(f"calibrated: {summary_line(limits.calibration)}", file=sys.stderr)
    else:
        print(f"thresholds ({limits.source}): image {limits.image}, pixel {limits.pixel}",
              file=sys.stderr)


def count_calibration_images(files: list, limits: Thresholds) -> int:
    """How many of ``files`` were calibration images (same SHA-256); warns when any are:
    their false-alarm rate is biased low, as the threshold was taken on them."""
    used = calibration_hashes(limits.calibration)
    count = sum(1 for f in files if used and file_sha256(f) in used)
    if count:
        print(f"warning: {count} of these {len(files)} images were calibration images; "
              "a false-alarm rate measured on them is biased low", file=sys.stderr)
    return count


def decision_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float, calibration_used: np.ndarray
) -> dict[str, Any]:
    """Image-level decisions at ``threshold`` (anomalous: score > threshold).

    ``scores`` float (N,) ``score_mean`` values, ``labels`` int (N,) 0 good / 1 defective,
    ``calibration_used`` bool (N,): images that were calibration images and are left out.
    Rates are NaN when undefined (no good or no defective image left).
    """
    keep = ~calibration_used
    flagged = scores[keep] > threshold
    truth = labels[keep] == 1
    tp = int(np.sum(flagged & truth))
    fp = int(np.sum(flagged & ~truth))
    fn = int(np.sum(~flagged & truth))
    tn = int(np.sum(~flagged & ~truth))
    nan = float("nan")
    return {
        "threshold": float(threshold),
        "false_alarm_rate": fp / (fp + tn) if fp + tn else nan,
        "miss_rate": fn / (fn + tp) if fn + tp else nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan,
        "true_positives": tp, "false_positives": fp,
        "false_negatives": fn, "true_negatives": tn,
        "n_left_out_as_calibration_images": int(calibration_used.sum()),
    }


def outcome(label: int | None, anomalous: bool | None) -> str:
    """'false alarm', 'miss', 'caught', 'passed', or '' when either is unknown."""
    if label is None or anomalous is None:
        return ""
    if anomalous:
        return "caught" if label == 1 else "false alarm"
    return "miss" if label == 1 else "passed"
