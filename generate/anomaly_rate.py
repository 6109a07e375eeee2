"""The end-of-generation check that a store holds enough anomalous examples.

NSA learns from synthetic anomalies; a store where almost no example got one trains a
model that flags nothing, yet generation itself succeeds. :func:`check_anomaly_rate`
counts them once the chunks are written and, below :data:`LOW_ANOMALY_RATE`, prints one
``warning:`` line naming the most common reason an example stayed normal and its likely
cause, and records the same text in the store's ``warnings`` attribute.
"""

from __future__ import annotations

import sys

import numpy as np
from nsa.generate.shards import Store

#: Below this fraction of anomalous examples a finished store gets a warning.
LOW_ANOMALY_RATE = 0.5

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


def check_anomaly_rate(store: Store) -> str | None:
    """Warn (stderr and ``attrs["warnings"]``) when under :data:`LOW_ANOMALY_RATE` of the
    store's written examples are anomalous; return the warning, or None when none is due.

    Reads the (N,) ``labels`` and ``reason`` arrays of ``store`` (opened ``r+``).
    """
    labels = np.asarray(store.group["labels"][:])
    rate = float(labels.mean()) if labels.size else 0.0
    if rate >= LOW_ANOMALY_RATE:
        return None
    names = list(store.attrs.get("reasons", []))
    counts = np.bincount(np.asarray(store.group["reason"][:]), minlength=len(names))
    counts[0] = 0  # index 0: an anomaly was made
    top = int(np.argmax(counts)) if counts.any() else None
    why = ""
    if top is not None and top < len(names):
        reason = names[top]
        why = (f"; most often no anomaly because of {reason!r} ({int(counts[top])} examples),"
               f" likely cause: {LIKELY_CAUSES.get(reason, 'unknown')}")
    message = (f"{store.path}: only {int(labels.sum())} of {labels.size} examples "
               f"({rate:.0%}) are anomalous{why}")
    print(f"warning: {message}", file=sys.stderr)
    warnings = list(store.attrs.get("warnings", []))
    if message not in warnings:  # a resumed store is checked again
        warnings.append(message)
    store.group.attrs["warnings"] = warnings
    store.attrs["warnings"] = warnings
    return message
