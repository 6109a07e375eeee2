"""The end-of-generation check that a store holds enough anomalous examples.

NSA learns from synthetic anomalies; a store where almost no example got one trains a
model that flags nothing, yet generation itself succeeds. :func:`check_anomaly_rate`
counts them once the chunks are written and, below :data:`LOW_ANOMALY_RATE`, prints a
``warning:`` line with indented lines under it: the most common reason an example stayed
normal, its likely cause (:func:`likely_cause`), and that the store is still usable. The
store's ``warnings`` attribute records the same text as one line, its parts joined by
``; ``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from nsa.generate.presets import PRESETS
from nsa.generate.shards import Store
from nsa.generate.synthesis import MIN_BLEND_PIXELS

#: Below this fraction of anomalous examples a finished store gets a warning.
LOW_ANOMALY_RATE = 0.5

#: A blended patch whose shorter side is under this many pixels mostly leaves no change
#: that the label keeps (the blend keeps the patch's rim, the label's 5x5 median filter
#: removes thin changes), whatever the image's contrast. Measured on ELPV cells at 64 and
#: 128 px (the same pixel sizes, the same odds at both): no example got an anomaly from
#: patches under 8 px, about 40% from 8-11 px, 75% from 12-15 px, about 90% or more above.
SMALL_PATCH = 12

#: The last line of the warning: what the store is good for as it is.
USABLE = ("the store is complete and usable; made again with the cause removed (nsa-gen "
          "--overwrite; a pipeline does so when its [generate] settings change), it gives "
          "training more anomalies to learn from")

#: The likely cause behind each reason an example has no anomaly (``SKIP_REASONS``).
LIKELY_CAUSES = {
    "no-change": "the blended patches changed (almost) no pixel: images with very little "
    "contrast, e.g. few grey levels (deep images whose data use a small part of their "
    "range, very dark or flat images)",
    "region-too-small": "the blending regions were too small: images or objects small "
    "for the preset's patch sizes",
    "no-object": "the preset's object mask found too little object in the images "
    "(wrong --preset for these images?)",
    "no-placement": "no place found for the patches: objects small for the preset's "
    "patch sizes (wrong --preset?)",
}


def too_small(reason: np.ndarray, boxes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Which examples stayed normal because their patches were too few pixels: a blending
    region under ``MIN_BLEND_PIXELS`` (``region-too-small``), or ``no-change`` with every
    blended patch's shorter side under :data:`SMALL_PATCH` pixels.

    ``reason`` is (N,) indices into ``names``, ``boxes`` (N, P, 4) int (y0, x0, y1, x1),
    rows of -1 where no patch was blended; returns an (N,) bool array.
    """
    boxes = np.asarray(boxes, np.int64)
    sides = np.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
    largest = np.where(boxes[..., 0] >= 0, sides, 0).max(axis=1, initial=0)
    code = {name: i for i, name in enumerate(names)}
    small = reason == code.get("region-too-small", -1)
    return small | ((reason == code.get("no-change", -1)) & (largest < SMALL_PATCH))


def likely_cause(reason: np.ndarray, boxes: np.ndarray, names: Sequence[str],
                 settings: Mapping[str, Any]) -> list[str]:
    """The warning's detail lines: how many examples stayed normal (``reason`` (N,)
    other than 0) and why, with what to try; none when every example got an anomaly.

    The cause is the image size when most examples without an anomaly had patches too
    few pixels to leave one (:func:`too_small`; ``boxes`` (N, P, 4) as stored), with a
    larger ``--size`` to try (``settings["size"]`` against the preset's own); otherwise
    the commonest reason's entry in :data:`LIKELY_CAUSES`.
    """
    reason = np.asarray(reason)
    counts = np.bincount(reason, minlength=len(names))
    counts[0] = 0  # index 0: an anomaly was made
    if not counts.any():
        return []
    top = int(np.argmax(counts))
    name = names[top] if top < len(names) else f"reason {top}"
    normal = int(counts.sum())
    small = int(too_small(reason, boxes, names).sum())
    if 2 * small > normal:
        size = settings.get("size")
        preset_size = PRESETS.get(settings.get("preset"), {}).get("size")
        preset = (f"; the preset's is {preset_size}"
                  if size and preset_size and size < preset_size else "")
        return [f"{normal:,} stayed normal, {small:,} of them because their patches were too "
                f"small at --size {size} (under {SMALL_PATCH} px across, or blending regions "
                f"under {MIN_BLEND_PIXELS} pixels)",
                "a larger size makes more anomalies: --size (a pipeline's [generate] size)"
                + preset]
    return [f"{normal:,} stayed normal, most often for the reason {name!r} "
            f"({int(counts[top]):,} examples)",
            f"likely cause: {LIKELY_CAUSES.get(name, 'unknown')}"]


def check_anomaly_rate(store: Store) -> str | None:
    """Warn (stderr and ``attrs["warnings"]``) when under :data:`LOW_ANOMALY_RATE` of the
    store's written examples are anomalous; return the warning as recorded (without the
    store's path, which the printed one starts with), or None when none is due.

    Reads the (N,) ``labels`` and ``reason`` and (N, P, 4) ``boxes`` arrays and the
    ``settings`` of ``store`` (opened ``r+``).
    """
    labels = np.asarray(store.group["labels"][:])
    rate = float(labels.mean()) if labels.size else 0.0
    if rate >= LOW_ANOMALY_RATE:
        return None
    why = likely_cause(np.asarray(store.group["reason"][:]), np.asarray(store.group["boxes"][:]),
                       list(store.attrs.get("reasons", [])), store.attrs.get("settings", {}))
    parts = [f"only {int(labels.sum()):,} of {labels.size:,} examples ({rate:.1%}) are "
             f"anomalous, under {LOW_ANOMALY_RATE:.0%}", *why, USABLE]
    print(f"warning: {store.path}: " + "\n  ".join(parts), file=sys.stderr)
    message = "; ".join(parts)  # recorded without the path: the store may move
    warnings = list(store.attrs.get("warnings", []))
    if message not in warnings:  # a resumed store is checked again
        warnings.append(message)
    store.group.attrs["warnings"] = warnings
    store.attrs["warnings"] = warnings
    return message
