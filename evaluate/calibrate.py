"""``nsa-eval calibrate``: run a trained model on held-out good images and store thresholds.

The good images are named by ``--good``: a folder of images, a text file listing image
paths (one a line, relative to the file), or ``elpv:TYPE``, the calibration half of the
held-out functional ELPV cells (:func:`elpv_calibration_split`). What is stored, and the
guarantee it carries, is described in :mod:`nsa.evaluate.calibration`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from nsa.evaluate.backends import TorchBackend
from nsa.evaluate.calibration import (
    CALIBRATION_FILE,
    DEFAULT_MAX_FPR,
    calibrate_scores,
    check_max_fpr,
    conformal_rank,
)
from nsa.evaluate.testsets import image_files
from nsa.generate.images import read_image, resize_square
from nsa.generate.sources import elpv_split
from nsa.train.checkpoint import write_json

from nsa.errors import UserError, writing
from nsa.progress import progress_bar

ELPV_PREFIX = "elpv:"


def elpv_calibration_split(cell_type: str) -> tuple[list[Path], list[Path]]:
    """The held-out functional ELPV cells (``elpv_split(...).test_good``, sorted by name)
    split in two: even positions calibrate, odd positions stay for testing.

    Every other cell rather than the first half: the file names follow the dataset's
    acquisition order, so alternating keeps both halves alike.
    """
    good = [Path(p) for p in elpv_split(cell_type).test_good]
    return good[0::2], good[1::2]


def good_images(spec: str | Path) -> tuple[list[Path], str]:
    """The files named by ``--good`` and a description of them."""
    text = str(spec)
    if text.startswith(ELPV_PREFIX):
        cell_type = text[len(ELPV_PREFIX):]
        files, rest = elpv_calibration_split(cell_type)
        return files, (f"ELPV {cell_type}: the even-position half of the held-out functional "
                       f"cells ({len(files)} of {len(files) + len(rest)})")
    path = Path(spec)
    if path.is_file():
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not a readable list of image paths ({exc})") from None
        files = [(path.parent / line) for line in lines if line and not line.startswith("#")]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{path}: lists {missing[0]}, which does not exist")
        return files, f"images listed in {path}"
    return image_files(path), f"images in {path}"


def calibrate(
    model: str | Path,
    good: str | Path,
    *,
    max_fpr: float = DEFAULT_MAX_FPR,
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Calibrate the run ``model`` on the good images ``good``; write and return
    ``RUN/calibration.json``.

    Raises UserError for a wrong ``--max-fpr``, too few images for it (before the model
    runs) or duplicate images (the same file twice would count twice).
    """
    check_max_fpr(max_fpr)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    files, description = good_images(good)
    conformal_rank(len(files), max_fpr)  # refuse too few images before any work
    backend = TorchBackend(Path(model), device)
    side = backend.geometry.side
    parts = []
    bar = progress_bar("images")
    bar.disable = not progress
    with bar:
        task = bar.add_task("calibrating", total=len(files))
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            resized = np.stack([
                resize_square(read_image(f, channels=backend.channels), side) for f in batch
            ])
            parts.append(backend.maps(resized))
            bar.advance(task, len(batch))
    maps = np.concatenate(parts)
    crop, top = backend.geometry.crop, 0
    region = (slice(None), slice(None))
    if crop:
        top = (side - crop) // 2
        region = (slice(top, top + crop), slice(top, top + crop))
    record = calibrate_scores(files, maps, max_fpr, region)
    hashes = [item["sha256"] for item in record["images"]]
    if len(set(hashes)) != len(hashes):
        raise UserError(f"--good {good}: the same image appears twice; each counts once")
    record.update(
        good=description, model_run=str(Path(model).resolve()),
        model_sha256=backend.model_sha256, geometry=backend.geometry.record(),
        settings={"device": str(backend.run.device), "batch_size": batch_size},
    )
    path = Path(model) / CALIBRATION_FILE
    with writing(path):
        write_json(record, path)
    return record


def calibrate_held_out_elpv(run: str | Path, cell_type: str, progress: bool = True
                            ) -> dict[str, Any]:
    """The pipeline's calibration of an ELPV run: on the calibration half of the held-out
    functional cells (:func:`elpv_calibration_split`), at 1 % when they are enough to
    certify it, else at the smallest whole percent they certify (2 % for the 74 mono
    cells). Evaluation then leaves those cells out of its decision counts."""
    n = len(elpv_calibration_split(cell_type)[0])
    max_fpr = max(DEFAULT_MAX_FPR, math.ceil(round(100 / (n + 1), 9)) / 100)
    return calibrate(run, f"{ELPV_PREFIX}{cell_type}", max_fpr=max_fpr, progress=progress)
