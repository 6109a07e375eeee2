"""Anomaly maps and scores for new, unlabelled images: ``nsa-eval predict``.

For each image in a folder: ``maps/<stem>.npy`` (the raw float32 map at the run's side,
objects zero outside their centre crop, exactly what the metrics would see under the
``nsa`` protocol), ``maps/<stem>.png`` (image | heat-map overlay), and one row of
``scores.csv`` with both image scores (``score_mean``: the NSA protocol's, ``score_max``:
the MVTec protocol's). ``predict.json`` records the run, geometry and versions; it is
written last and atomically (a previous one is removed first), so a folder holding it is a
finished prediction. Images are found and scaled by :mod:`nsa.generate.images`' rules, with
the run's white level. Empty image files, a file as ``--out`` and a model with non-finite
weights or maps are refused with one line naming them before anything is written.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from nsa.evaluate.inference import (
    anomaly_maps,
    check_finite_maps,
    image_score,
    load_run,
)
from nsa.evaluate.pictures import overlay_panel, write_picture
from nsa.evaluate.run import check_out, warn
from nsa.evaluate.tables import write_text_atomic
from nsa.evaluate.testsets import TestImage, TestSet, check_files
from nsa.generate.images import depth_mismatch, image_files, read_image, resize_square

from nsa.errors import UserError, writing
from nsa.progress import progress_bar
from nsa.versions import package_versions


def predict(
    model: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """Write maps and ``scores.csv`` for every image in the folder ``images``; return the CSV.

    Images are matched to outputs by file stem, so two images with one stem are refused.
    """
    files = image_files(Path(images))
    stems = [f.stem for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise UserError(f"{images}: several images share the name {duplicates[0]!r}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    out = Path(out)
    check_out(out)
    check_files(TestSet("predict", str(images), [TestImage(f, 0) for f in files], False))
    run = load_run(model, device)
    net, geometry, channels, torch_device = run.net, run.geometry, run.channels, run.device
    with writing(out):
        (out / "maps").mkdir(parents=True, exist_ok=True)
        (out / "predict.json").unlink(missing_ok=True)  # a failed run must not look finished

    warnings: list[str] = []
    mismatch = depth_mismatch(files[0], run.white_level)  # the first image stands for all
    if mismatch:
        warn(mismatch, warnings)
    rows = []
    bar = progress_bar("images")
    bar.disable = not progress
    with bar:
        task = bar.add_task("predicting", total=len(files))
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            resized = np.stack([
                resize_square(read_image(f, channels=channels, white_level=run.white_level),
                              geometry.side)
                for f in batch
            ])
            maps = anomaly_maps(net, resized, geometry, torch_device)
            check_finite_maps(maps, model, batch)
            for path, image, anomaly_map in zip(batch, resized, maps, strict=True):
                mean, top = image_score(anomaly_map, "nsa"), image_score(anomaly_map, "mvtec")
                with writing(out / "maps" / f"{path.stem}.npy"):
                    np.save(out / "maps" / f"{path.stem}.npy", anomaly_map)
                panel = overlay_panel(image, anomaly_map, None, f"mean {mean:.4f} max {top:.4f}")
                write_picture(out / "maps" / f"{path.stem}.png", panel)
                rows.append((path.name, mean, top))
            bar.advance(task, len(batch))

    scores = out / "scores.csv"
    with writing(scores), open(scores, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "score_mean", "score_max"])
        writer.writerows((name, f"{mean:.6f}", f"{top:.6f}") for name, mean, top in rows)
    record = {
        "model_run": str(Path(model).resolve()),
        "images": str(Path(images).resolve()),
        "n_images": len(files),
        "geometry": geometry.record(),
        "white_level": run.white_level,
        "warnings": warnings,
        "settings": {"device": str(torch_device), "batch_size": batch_size},
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(out / "predict.json", json.dumps(record, indent=2) + "\n")
    return scores
