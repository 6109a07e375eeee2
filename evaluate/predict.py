"""Anomaly maps and scores for new, unlabelled images: ``nsa-eval predict``.

For each image in a folder: ``maps/<stem>.npy`` (the raw float32 map at the run's side,
objects zero outside their centre crop, exactly what the metrics would see under the
``nsa`` protocol), ``maps/<stem>.png`` (image | heat-map overlay), and one row of
``scores.csv`` with both image scores (``score_mean``: the NSA protocol's, ``score_max``:
the MVTec protocol's). ``predict.json`` records the run, geometry, thresholds and
versions; it is written last and atomically, so a folder holding it is a finished
prediction. Images are found and scaled by :mod:`nsa.generate.images`' rules, with the
run's white level. Empty image files, a file or a non-empty folder that is not an nsa-eval
output as ``--out`` and a model with non-finite weights or maps are refused with one line
naming them before anything is written; an earlier nsa-eval output in ``--out`` is then
removed, and only it (:mod:`nsa.evaluate.outputs`).

Decisions (:mod:`nsa.evaluate.decisions`): with the run's calibration (``nsa-eval
calibrate``) or ``--threshold``, ``scores.csv`` also gives ``normalized_score``,
``anomalous`` and ``defect_area_px``, and ``maps/<stem>_mask.png`` the binary defect mask
(255 defect) at the image's own resolution; without, those columns are empty and a
warning says so once. ``report.html`` shows it all in one page. ``model`` may also be an
ONNX file from ``nsa-train export`` (run with onnxruntime, without the run directory).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from nsa.evaluate.backends import load_backend
from nsa.evaluate.calibration import thresholds
from nsa.evaluate.decisions import (
    count_calibration_images,
    decide,
    say_thresholds,
    say_uncalibrated,
)
from nsa.evaluate.inference import check_finite_maps, image_score
from nsa.evaluate.outputs import check_out, replace_output
from nsa.evaluate.pictures import overlay_panel, write_picture
from nsa.evaluate.report import REPORT_FILE, ReportRow, thumbnail, write_report
from nsa.evaluate.run import warn
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
    threshold: float | None = None,
    pixel_threshold: float | None = None,
) -> Path:
    """Write maps and ``scores.csv`` for every image in the folder ``images``; return the CSV.

    Images are matched to outputs by file stem, so two images with one stem are refused.
    ``threshold`` / ``pixel_threshold`` (in [0, 1]) override the calibrated ones.
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
    run = load_backend(model, device)
    geometry, channels = run.geometry, run.channels
    limits = thresholds(run.calibration, threshold, pixel_threshold)
    replace_output(out, "predict")  # an earlier output's files go, predict.json first
    with writing(out / "maps"):
        (out / "maps").mkdir()
    if limits.decides:
        say_thresholds(limits)
    else:
        say_uncalibrated(str(model))

    warnings: list[str] = []
    for message in run.warnings:
        warn(message, warnings)
    mismatch = depth_mismatch(files[0], run.white_level)  # the first image stands for all
    if mismatch:
        warn(mismatch, warnings)
    rows, report_rows = [], []
    bar = progress_bar("images")
    bar.disable = not progress
    with bar:
        task = bar.add_task("predicting", total=len(files))
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            decoded = [read_image(f, channels=channels, white_level=run.white_level)
                       for f in batch]
            resized = np.stack([resize_square(pixels, geometry.side) for pixels in decoded])
            maps = run.maps(resized)
            check_finite_maps(maps, model, batch)
            for path, pixels, image, anomaly_map in zip(
                batch, decoded, resized, maps, strict=True
            ):
                mean, top = image_score(anomaly_map, "nsa"), image_score(anomaly_map, "mvtec")
                decision = decide(anomaly_map, pixels.shape[:2], limits)
                if decision.anomalous and decision.mask is not None:
                    write_picture(out / "maps" / f"{path.stem}_mask.png",
                                  decision.mask.astype(np.uint8) * 255)
                with writing(out / "maps" / f"{path.stem}.npy"):
                    np.save(out / "maps" / f"{path.stem}.npy", anomaly_map)
                panel = overlay_panel(image, anomaly_map, None, f"mean {mean:.4f} max {top:.4f}")
                write_picture(out / "maps" / f"{path.stem}.png", panel)
                rows.append((path.name, mean, top, decision))
                report_rows.append(ReportRow(path.name, "", None, mean, decision,
                                             thumbnail(image, anomaly_map, decision.mask)))
            bar.advance(task, len(batch))

    scores = out / "scores.csv"
    with writing(scores), open(scores, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "score_mean", "score_max", "normalized_score", "anomalous",
                         "defect_area_px"])
        writer.writerows(
            (name, f"{mean:.6f}", f"{top:.6f}",
             "" if d.normalized is None else f"{d.normalized:.6f}",
             "" if d.anomalous is None else str(d.anomalous).lower(),
             "" if d.defect_area_px is None else d.defect_area_px)
            for name, mean, top, d in rows
        )
    record = {
        "model_run": str(Path(model).resolve()),
        "images": str(Path(images).resolve()),
        "n_images": len(files),
        "geometry": geometry.record(),
        "model": (model_record := run.record()),
        "white_level": run.white_level,
        "warnings": warnings,
        "thresholds": {"source": limits.source, "image": limits.image, "pixel": limits.pixel,
                       "calibration_created": (limits.calibration or {}).get("created")},
        "n_anomalous": sum(1 for *_, d in rows if d.anomalous),
        "n_calibration_images": count_calibration_images(files, limits),
        "settings": {"device": model_record["device"], "batch_size": batch_size},
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_report(out / REPORT_FILE, title=f"nsa-eval predict: {Path(images).name}",
                 subtitle=f"{len(files)} unlabelled images in {Path(images).resolve()}",
                 rows=report_rows, limits=limits, provenance=record)
    write_text_atomic(out / "predict.json", json.dumps(record, indent=2) + "\n")
    return scores
