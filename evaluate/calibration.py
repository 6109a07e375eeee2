"""Where "anomalous" begins: thresholds calibrated on defect-free images, with a guarantee.

``nsa-eval calibrate`` runs a trained model on good images that training never saw and
stores in the run directory (``calibration.json``):

- the **image threshold** ``t``: an image is anomalous when its score (``score_mean``,
  the mean of its map at the run's side, the ``nsa`` protocol's score) is above ``t``;
- the **pixel threshold**: the map value that the same fraction ``max_fpr`` of the good
  images' pixels exceed (pixels inside the region the model sees; no distribution-free
  guarantee here, pixels of one image are not exchangeable);
- the **normalisation** ``s / (s + t)``: a score in [0, 1] that is 0.5 exactly at the
  threshold, monotone, needing no other statistic (3t gives 0.75, t/3 gives 0.25);
- which images (path, SHA-256, score), how many, the model file's SHA-256 (a retrained
  model makes the calibration stale and it is then refused), and the guarantee.

The guarantee (split conformal prediction; Vovk, Gammerman & Shafer, *Algorithmic
Learning in a Random World*, 2005; stated as used here in Angelopoulos & Bates, *A Gentle
Introduction to Conformal Prediction and Distribution-Free Uncertainty Quantification*,
2021, §1 and Theorem D.1): with ``n`` calibration scores and the threshold the ``k``-th
smallest of them, ``k = ceil((n + 1) * (1 - max_fpr))``, a new good image that is
exchangeable with the calibration images (same line, same camera, same model) scores
above the threshold with probability

    P(false alarm) <= (n + 1 - k) / (n + 1) <= max_fpr,

averaged over the draw of the calibration set. For one given calibration set the
realised false-alarm rate is random: with continuous scores it follows
``Beta(n + 1 - k, k)`` (Vovk, *Conditional validity of inductive conformal predictors*,
ACML 2012, §4; Angelopoulos & Bates 2021, §3.2), so ``calibration.json`` also gives its
95 % upper bound and the probability that it exceeds twice the target.

Refused (one ``error:`` line, exit 2):

- ``k > n``, i.e. ``n < 1 / max_fpr - 1``: no order statistic certifies the target (99
  images for the default 1 %); the message gives the smallest target these images can
  certify, ``1 / (n + 1)``;
- fewer than :data:`MIN_IMAGES` = 20 images whatever the target: the threshold is then
  the largest of fewer than 20 scores, the smallest certifiable rate is at least
  1/20 = 5 %, and the realised rate's 95 % upper bound ``1 - 0.05 ** (1 / n)`` is at
  least 14.6 %: one good part in seven could be rejected, not a decision to put on a line.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from nsa.errors import UserError
from nsa.versions import package_versions

CALIBRATION_FILE = "calibration.json"
CALIBRATION_FORMAT = 1
MIN_IMAGES = 20
DEFAULT_MAX_FPR = 0.01
#: Confidence of the stated upper bound on the realised false-alarm rate.
CONFIDENCE = 0.95
#: The image score the thresholds apply to (the ``nsa`` protocol's: mean of the map).
IMAGE_SCORE = "score_mean"


def check_max_fpr(max_fpr: float) -> float:
    """``max_fpr`` as a float in (0, 0.5]; UserError naming ``--max-fpr`` otherwise."""
    if not (isinstance(max_fpr, int | float) and 0.0 < max_fpr <= 0.5):
        raise UserError(f"--max-fpr must be in (0, 0.5], got {max_fpr}")
    return float(max_fpr)


def check_threshold(value: float | None, option: str) -> float | None:
    """A user-given threshold in [0, 1] (maps and scores lie there), or None."""
    if value is None:
        return None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UserError(f"{option} must be in [0, 1] (scores and maps lie there), got {value}")
    return float(value)


def conformal_rank(n: int, max_fpr: float) -> int:
    """The 1-based rank ``k = ceil((n + 1)(1 - max_fpr))`` of the threshold among ``n``
    sorted scores; UserError when the images are too few (see the module docstring)."""
    check_max_fpr(max_fpr)
    smallest = 1.0 / (n + 1)
    if n < MIN_IMAGES:
        worst = 1.0 - (1.0 - CONFIDENCE) ** (1.0 / n) if n else 1.0
        raise UserError(
            f"--good: {n} good images; at least {MIN_IMAGES} are needed: {n} can certify "
            f"no false-alarm rate below {smallest:.1%}, and with {CONFIDENCE:.0%} confidence "
            f"only that it stays under {worst:.0%}; give at least "
            f"{max(MIN_IMAGES, images_needed(max_fpr))} for --max-fpr {max_fpr:g}"
        )
    # (n + 1)(1 - a) in floats can land a hair above an integer: round first
    k = math.ceil(round((n + 1) * (1.0 - max_fpr), 9))
    if k > n:
        raise UserError(
            f"--good: {n} good images cannot certify --max-fpr {max_fpr:g} (that needs "
            f"{images_needed(max_fpr)}); the smallest rate they certify is 1/(n+1) = "
            f"{smallest:.2%}: give --max-fpr {math.ceil(smallest * 1000) / 1000:g} or more images"
        )
    return k


def images_needed(max_fpr: float) -> int:
    """The fewest calibration images that certify ``max_fpr``: ``ceil(1 / max_fpr) - 1``."""
    return math.ceil(round(1.0 / max_fpr, 9)) - 1


def guarantee(n: int, k: int, max_fpr: float) -> dict[str, float | int | str]:
    """What the threshold at rank ``k`` of ``n`` promises (module docstring), as a record."""
    a, b = n + 1 - k, k  # realised false-alarm rate ~ Beta(n + 1 - k, k)
    return {
        "statement": "a new good image exchangeable with the calibration images scores "
        "above the image threshold with probability at most marginal_fpr_bound; for this "
        "calibration set the realised rate is at most fpr_upper_bound with probability "
        "confidence (split conformal; Beta(n+1-k, k))",
        "n": n,
        "k": k,
        "marginal_fpr_bound": a / (n + 1),
        "confidence": CONFIDENCE,
        "fpr_upper_bound": float(stats.beta.ppf(CONFIDENCE, a, b)),
        "p_fpr_above_twice_target": float(stats.beta.sf(2 * max_fpr, a, b)),
        "source": "Vovk et al. 2005; Vovk 2012 (ACML); Angelopoulos & Bates 2021",
    }


def pixel_threshold(maps: np.ndarray, max_fpr: float) -> float:
    """The smallest map value that at most ``max_fpr`` of the pixels of ``maps`` exceed.

    ``maps`` is any float array (the good images' pixels in the region the model sees).
    """
    values = np.sort(maps, axis=None)
    index = max(0, math.ceil(round(values.size * (1.0 - max_fpr), 9)) - 1)
    return float(values[index])


def normalize(score: float | np.ndarray, threshold: float) -> float | np.ndarray:
    """``s / (s + t)``: 0.5 at the image threshold ``t``, in [0, 1) for scores in [0, 1].

    A threshold of 0 (possible only with a user's ``--threshold 0``) maps every positive
    score to 1 and 0 to 0.5.
    """
    s = np.asarray(score, dtype=np.float64)
    out = np.where(s > 0, 1.0, 0.5) if threshold <= 0.0 else s / (s + threshold)
    return float(out) if out.ndim == 0 else out


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Thresholds:
    """What turns a map into decisions: image threshold on ``score_mean`` (None: no
    decision), pixel threshold on map values (None: no mask), and where they came from."""

    image: float | None
    pixel: float | None
    source: str  # "calibration", "option", "calibration+option" or "none"
    calibration: dict[str, Any] | None = None

    @property
    def decides(self) -> bool:
        return self.image is not None

    def normalized(self, score: float) -> float | None:
        return None if self.image is None else float(normalize(score, self.image))


def thresholds(
    calibration: dict[str, Any] | None, image: float | None = None, pixel: float | None = None
) -> Thresholds:
    """Combine a stored calibration with user overrides (``--threshold``,
    ``--pixel-threshold``, each in [0, 1]); either may be missing."""
    image = check_threshold(image, "--threshold")
    pixel = check_threshold(pixel, "--pixel-threshold")
    stored_image = calibration["image_threshold"] if calibration else None
    stored_pixel = calibration["pixel_threshold"] if calibration else None
    overridden = image is not None or pixel is not None
    source = ("calibration+option" if calibration and overridden else
              "calibration" if calibration else "option" if overridden else "none")
    return Thresholds(
        image=image if image is not None else stored_image,
        pixel=pixel if pixel is not None else stored_pixel,
        source=source, calibration=calibration,
    )


def calibrate_scores(
    files: Sequence[Path],
    maps: np.ndarray,
    max_fpr: float,
    region: tuple[slice, slice] = (slice(None), slice(None)),
) -> dict[str, Any]:
    """The calibration record for good images ``files`` and their maps.

    ``maps`` float32 (n, side, side) in [0, 1], one per file, at the run's side; ``region``
    is the part of each map the model sees (objects: the centre crop), where the pixel
    threshold is taken. Raises UserError for too few images or an uncertifiable target.
    """
    check_max_fpr(max_fpr)
    n = len(files)
    k = conformal_rank(n, max_fpr)
    scores = maps.reshape(n, -1).mean(axis=1, dtype=np.float64)
    order = np.sort(scores)
    image_threshold = float(order[k - 1])
    seen = maps[:, region[0], region[1]]
    pixel = pixel_threshold(seen, max_fpr)
    return {
        "format": CALIBRATION_FORMAT,
        "protocol": "nsa",
        "image_score": IMAGE_SCORE,
        "max_fpr": max_fpr,
        "n_images": n,
        "image_threshold": image_threshold,
        "pixel_threshold": pixel,
        "normalization": {
            "formula": "normalized_score = score_mean / (score_mean + image_threshold)",
            "at_threshold": 0.5,
        },
        "guarantee": guarantee(n, k, max_fpr),
        "calibration_fpr": float(np.mean(scores > image_threshold)),
        "pixel_rate": float(np.mean(seen > pixel)),
        "scores": {
            "min": float(order[0]), "median": float(np.median(order)),
            "max": float(order[-1]), "mean": float(order.mean()),
        },
        "images": [
            {"file": str(Path(f).resolve()), "sha256": file_sha256(f), "score": float(s)}
            for f, s in zip(files, scores, strict=True)
        ],
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def stale_reason(calibration: dict[str, Any], model_sha256: str) -> str | None:
    """Why a stored calibration does not belong to the model file, or None."""
    if calibration.get("format") != CALIBRATION_FORMAT:
        return f"format {calibration.get('format')!r}, expected {CALIBRATION_FORMAT}"
    if calibration.get("model_sha256") != model_sha256:
        return "it was made for another model.pt (the run was retrained): calibrate again"
    return None


def calibration_hashes(calibration: dict[str, Any] | None) -> set[str]:
    """SHA-256 of every calibration image (to keep them out of measured false-alarm rates)."""
    if not calibration:
        return set()
    return {item["sha256"] for item in calibration.get("images", [])}


def summary_line(calibration: dict[str, Any]) -> str:
    """One human line: threshold, images, target and the guarantee."""
    g = calibration["guarantee"]
    return (
        f"image threshold {calibration['image_threshold']:.6f} (score_mean), pixel threshold "
        f"{calibration['pixel_threshold']:.4f}, from {calibration['n_images']} good images: "
        f"false-alarm rate <= {g['marginal_fpr_bound']:.2%} (target {calibration['max_fpr']:g}); "
        f"with {g['confidence']:.0%} confidence this calibration's rate is <= "
        f"{g['fpr_upper_bound']:.2%}"
    )


def map_batches(
    files: Sequence[Path], batch_size: int, maps_of: Callable[[Sequence[Path]], np.ndarray]
) -> np.ndarray:
    """Concatenate ``maps_of(batch)`` over ``files`` in batches: float32 (n, side, side)."""
    parts = [maps_of(files[i : i + batch_size]) for i in range(0, len(files), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0, 0), np.float32)
