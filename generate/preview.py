"""A PNG grid that shows what a preset's anomalies look like, before any training.

One row per example: destination | result (blended patch boxes outlined) | label map
(inferno colour map, black = 0, yellow = 1; an example without anomaly names its reason
there). Rows use examples 0..n-1 of the given seed,
so the preview shows exactly what a store with that seed starts with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from nsa.generate.synthesis import SourceSet, make_example

from nsa.errors import UserError

_GAP = 4
_HEADER = 22
_BOX_COLOUR = (0, 200, 255)  # BGR: amber


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def preview_grid(sources: SourceSet, settings: dict[str, Any], seed: int, n: int) -> np.ndarray:
    """The preview as an (rows, cols, 3) uint8 RGB array."""
    if n < 1:
        raise UserError(f"preview needs n >= 1 examples, not {n}")
    height, width = sources.shape[:2]
    cols = 3 * width + 2 * _GAP
    grid = np.full((_HEADER + n * (height + _GAP) - _GAP, cols, 3), 255, np.uint8)
    for i, title in enumerate(("destination", "result", "label")):
        cv2.putText(grid, title, (i * (width + _GAP) + 4, _HEADER - 7),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for row in range(n):
        example = make_example(sources, settings, seed, row)
        dest = _rgb(sources.images[example.dest_index])
        result = np.ascontiguousarray(_rgb(example.image))
        for y0, x0, y1, x1 in example.boxes:
            cv2.rectangle(result, (x0, y0), (x1 - 1, y1 - 1), _BOX_COLOUR[::-1], 1)
        label = np.ascontiguousarray(cv2.applyColorMap(
            np.rint(example.label * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1])
        if example.reason:  # say why this example has no anomaly
            cv2.putText(label, example.reason, (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (255, 255, 255), 1, cv2.LINE_AA)
        top = _HEADER + row * (height + _GAP)
        for i, tile in enumerate((dest, result, label)):
            left = i * (width + _GAP)
            grid[top:top + height, left:left + width] = tile
    return grid


def write_preview(sources: SourceSet, settings: dict[str, Any], seed: int, n: int,
                  path: Path | str) -> Path:
    """Write ``n`` examples as a PNG grid (destination | result | label map) to ``path``."""
    path = Path(path)
    grid = preview_grid(sources, settings, seed, n)
    ok, encoded = cv2.imencode(".png", grid[..., ::-1])
    if not ok:
        raise UserError(f"{path}: could not encode the preview as PNG")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise UserError(f"{path}: cannot write the preview ({exc.strerror})") from None
    return path
