"""Evaluate a trained run on labelled test sets: the library behind ``nsa-eval``.

:func:`evaluate` takes test sets (from :mod:`nsa.evaluate.testsets`), runs the model batch
by batch, computes image AUROC/AP, pixel AUROC/AP and AU-PRO per set under one protocol,
and writes into ``out``: ``metrics.json``, ``metrics.csv``, ``metrics.md``,
``maps/<set>/<defect>/<image>.png``, ``curves.png`` and ``report.html``; with the run's
calibration, decisions at its threshold too (:mod:`nsa.evaluate.eval_decisions`). Its
keyword names are the CLI's option names.

Everything that can be checked is checked before ``out`` is touched (options, ``out`` not
a file nor a non-empty folder that is not an nsa-eval output, no empty image or mask file,
a model with finite weights). An earlier nsa-eval output in ``out`` is then removed, and
only it (:mod:`nsa.evaluate.outputs`). ``metrics.json`` is written last and atomically,
so a folder with ``metrics.json`` holds a finished evaluation. Defect images whose mask
is all zero stay in the pixel metrics (their pixels are all good pixels), are counted per set
(``defect_images_with_empty_mask``) and reported by one ``warning:`` line on stderr; such
lines (also: test images deeper than 8 bits for a model trained on 8-bit ones) are kept
in metrics.json's ``warnings``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nsa.evaluate.eval_decisions import (
    decisions_markdown,
    evaluation_thresholds,
    report_rows,
    set_decisions,
    thresholds_record,
    write_decision_report,
)
from nsa.evaluate.inference import (
    Geometry,
    anomaly_maps,
    check_finite_maps,
    check_protocol,
    image_score,
    load_run,
    resize_map,
    resize_mask,
)
from nsa.evaluate.metrics import aupro, auroc, average_precision, pro_points, roc_points
from nsa.evaluate.outputs import check_out, replace_output
from nsa.evaluate.pictures import (
    Curves,
    overlay_panel,
    picture_indices,
    write_curves,
    write_picture,
)
from nsa.evaluate.report import thumbnail
from nsa.evaluate.tables import mean_row, paper_figures, write_tables
from nsa.evaluate.testsets import TestSet, check_files, read_test_image
from nsa.generate.images import depth_mismatch, resize_square

from nsa.errors import UserError
from nsa.progress import progress_bar
from nsa.versions import package_versions

PROTOCOL_DESCRIPTIONS = {
    "nsa": "NSA paper: maps at the run's side, objects through the centre crop padded back, "
    "image score = mean of the map",
    "mvtec": "MVTec reference: maps resized to the masks' native resolution, "
    "image score = max of the map",
}
FPR_LIMIT = 0.3


@dataclass
class ScoredSet:
    """What one pass of the model over a test set yields.

    ``maps``/``masks`` are the pixel maps the metrics see (at the protocol's resolution;
    None without masks); ``pictures`` maps the index of each image chosen for a picture
    to (resized image, map, mask) at the run's side; ``empty_masks`` lists the defect
    images whose mask has no defect pixel.
    """

    labels: np.ndarray
    scores: np.ndarray
    maps: np.ndarray | list[np.ndarray] | None
    masks: np.ndarray | list[np.ndarray] | None
    pictures: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]]
    empty_masks: list[Path]
    thumbnails: list[str] = field(default_factory=list)  # report.html, one per image


def score_testset(
    model: torch.nn.Module,
    testset: TestSet,
    *,
    geometry: Geometry,
    channels: int,
    protocol: str,
    device: torch.device,
    batch_size: int,
    max_pictures: int,
    white_level: int | None = None,
    model_name: str | Path = "the model",
    advance=lambda n: None,
    shared: dict[Path, np.ndarray | None] | None = None,
) -> ScoredSet:
    """Run the model over ``testset`` batch by batch and keep what the metrics need.

    Images are scaled by ``white_level`` as the run's training images were. ``shared``
    maps the paths of images that other test sets of the same evaluation hold too (MVTec
    LOCO's good images are in all three) to their anomaly map once one set has scored them
    (None before): the model sees each such image once. Raises UserError naming
    ``model_name`` when a map holds NaN or infinity.
    """
    shared = {} if shared is None else shared
    side = geometry.side
    chosen = set(picture_indices(len(testset.images), max_pictures).tolist())
    scores, maps, masks, pictures, empty, thumbnails = [], [], [], {}, [], []
    for start in range(0, len(testset.images), batch_size):
        batch = testset.images[start : start + batch_size]
        decoded = [read_test_image(image, channels, testset.has_masks, white_level)
                   for image in batch]
        resized = np.stack([resize_square(pixels, side) for pixels, _ in decoded])
        known = [shared.get(image.path) for image in batch]
        todo = [offset for offset, side_map in enumerate(known) if side_map is None]
        if todo:
            fresh = anomaly_maps(model, resized[todo], geometry, device)
            check_finite_maps(fresh, model_name, [batch[offset].path for offset in todo])
            for offset, side_map in zip(todo, fresh, strict=True):
                known[offset] = side_map
                if batch[offset].path in shared:
                    shared[batch[offset].path] = side_map
        batch_maps = np.stack(known)
        for offset, ((_, native_mask), side_map) in enumerate(
            zip(decoded, batch_maps, strict=True)
        ):
            index = start + offset
            if batch[offset].label == 1 and native_mask is not None and not native_mask.any():
                empty.append(batch[offset].path)
            side_mask = None
            if native_mask is None:
                metric_map = side_map
            elif protocol == "mvtec":
                metric_map = resize_map(side_map, native_mask.shape)
                masks.append(native_mask)
                side_mask = resize_mask(native_mask, side)
            else:
                metric_map = side_map
                side_mask = resize_mask(native_mask, side)
                masks.append(side_mask)
            if native_mask is not None:
                maps.append(metric_map)
            scores.append(image_score(metric_map, protocol))
            if index in chosen:
                pictures[index] = (resized[offset], side_map, side_mask)
            thumbnails.append(thumbnail(resized[offset], side_map, side_mask))
        advance(len(batch))
    if testset.has_masks and protocol == "nsa":
        maps, masks = np.stack(maps), np.stack(masks)  # one (N, H, W) stack: the fast path
    return ScoredSet(
        labels=np.array([image.label for image in testset.images]),
        scores=np.array(scores),
        maps=maps if testset.has_masks else None,
        masks=masks if testset.has_masks else None,
        pictures=pictures,
        empty_masks=empty,
        thumbnails=thumbnails,
    )


def metrics_row(testset: TestSet, scored: ScoredSet) -> dict[str, Any]:
    """Every metric of one set (NaN where undefined), its counts and the paper's figures."""
    row: dict[str, Any] = {
        "description": testset.description,
        "n_good": testset.n_good,
        "n_defect": testset.n_defect,
        "image_auroc": auroc(scored.scores, scored.labels),
        "image_ap": average_precision(scored.scores, scored.labels),
        "pixel_auroc": float("nan"),
        "pixel_ap": float("nan"),
        "aupro": float("nan"),
        "defect_images_with_empty_mask": len(scored.empty_masks) if testset.has_masks else None,
    }
    if scored.maps is not None:
        row["pixel_auroc"] = auroc(scored.maps, scored.masks)
        row["pixel_ap"] = average_precision(scored.maps, scored.masks)
        row["aupro"] = aupro(scored.maps, scored.masks, FPR_LIMIT)
    row["paper_key"] = list(testset.paper_key) if testset.paper_key else None
    row["paper"] = paper_figures(testset.paper_key)
    return row


def write_set_pictures(out: Path, testset: TestSet, scored: ScoredSet) -> None:
    """maps/<set>/<defect>/<image stem>.png for the images chosen for pictures."""
    for index, (image, side_map, side_mask) in sorted(scored.pictures.items()):
        item = testset.images[index]
        caption = f"{item.defect} score {scored.scores[index]:.4f}"
        path = out / "maps" / testset.name / item.defect / f"{item.path.stem}.png"
        write_picture(path, overlay_panel(image, side_map, side_mask, caption))


def warn(message: str, warnings: list[str]) -> None:
    """Print ``warning: message`` on stderr and keep it for metrics.json's ``warnings``."""
    print(f"warning: {message}", file=sys.stderr)
    warnings.append(message)


def empty_mask_warning(testset: TestSet, scored: ScoredSet) -> str | None:
    """The warning for defect images of the set whose masks are all zero, if any."""
    if not scored.empty_masks:
        return None
    return (f"{testset.name}: {len(scored.empty_masks)} of {testset.n_defect} defect images "
            f"have a mask with no defect pixel (first: {scored.empty_masks[0]}); they count "
            "as defect-free pixels in the pixel metrics (metrics.json: "
            "defect_images_with_empty_mask)")


def below_chance_warning(name: str, row: dict[str, Any]) -> str | None:
    """The warning for a set whose image AUROC is below chance (0.5), if it is: the
    model ranks its defect images as more normal than its good ones, which a working
    detector does not (swapped labels, or a model trained far too little)."""
    value = row.get("image_auroc")
    if value is None or not np.isfinite(value) or value >= 0.5:
        return None
    return (f"{name}: image AUROC {value:.3f} is below chance (0.5): the model ranks the "
            "defect images as more normal than the good ones; check the test set's good "
            "and defect folders, and the training (steps, examples)")


def set_curves(testset: TestSet, scored: ScoredSet) -> Curves:
    empty = (np.zeros(0), np.zeros(0))
    with_masks = scored.maps is not None
    return Curves(
        name=testset.name,
        image_roc=roc_points(scored.scores, scored.labels),
        pixel_roc=roc_points(scored.maps, scored.masks) if with_masks else empty,
        pro=pro_points(scored.maps, scored.masks, FPR_LIMIT) if with_masks else empty,
    )


def evaluate(
    testsets: Sequence[TestSet],
    model: str | Path,
    out: str | Path,
    *,
    protocol: str = "nsa",
    device: str = "auto",
    batch_size: int = 16,
    max_pictures: int = 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the run ``model`` on ``testsets``; write the tables and pictures to ``out``.

    Returns the content of metrics.json (with NaN where the file has null).
    ``max_pictures`` caps the overlay pictures per test set (0: none).
    """
    check_protocol(protocol)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    names = [t.name for t in testsets]
    if len(set(names)) != len(names):
        raise UserError(f"test sets must have distinct names, got {names}")
    out = Path(out)
    check_out(out)
    for testset in testsets:
        check_files(testset)
    run = load_run(model, device)
    net, config, geometry, channels, torch_device = (
        run.net, run.config, run.geometry, run.channels, run.device)
    limits = evaluation_thresholds(model)
    replace_output(out, "evaluate")  # an earlier output's files go, metrics.json first

    rows, curves, warnings, report = {}, [], [], []
    for testset in testsets:  # the first image of each set stands for its bit depth
        mismatch = depth_mismatch(testset.images[0].path, run.white_level)
        if mismatch:
            warn(mismatch, warnings)
    counts = Counter(image.path for testset in testsets for image in testset.images)
    shared: dict[Path, np.ndarray | None] = {
        path: None for path, count in counts.items() if count > 1}
    bar = progress_bar("images")
    bar.disable = not progress
    with bar:
        task = bar.add_task("evaluating", total=sum(len(t.images) for t in testsets))
        for testset in testsets:
            bar.update(task, description=f"evaluating {testset.name}")
            scored = score_testset(
                net, testset, geometry=geometry, channels=channels, protocol=protocol,
                device=torch_device, batch_size=batch_size, max_pictures=max_pictures,
                white_level=run.white_level, model_name=model,
                advance=lambda n: bar.advance(task, n), shared=shared,
            )
            empty = empty_mask_warning(testset, scored)
            if empty:
                warn(empty, warnings)
            rows[testset.name] = metrics_row(testset, scored)
            below = below_chance_warning(testset.name, rows[testset.name])
            if below:
                warn(below, warnings)
            rows[testset.name]["decisions"] = set_decisions(testset, scored, limits, protocol)
            report += report_rows(testset, scored, limits, protocol)
            write_set_pictures(out, testset, scored)
            curves.append(set_curves(testset, scored))
            del scored

    result = {
        "protocol": protocol,
        "protocol_description": PROTOCOL_DESCRIPTIONS[protocol],
        "model_run": str(Path(model).resolve()),
        "model": {
            "preset": (config.get("settings") or {}).get("preset"),
            "kind": (config.get("settings") or {}).get("kind"),
            "channels": channels,
            "final_layer": net.final_layer,
            "white_level": run.white_level,
            "geometry": geometry.record(),
        },
        "fpr_limit": FPR_LIMIT,
        "warnings": warnings,
        "thresholds": thresholds_record(limits, protocol),
        "categories": rows,
        "mean": mean_row(list(rows.values())),
        "settings": {"device": str(torch_device), "batch_size": batch_size,
                     "max_pictures": max_pictures},
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_curves(out / "curves.png", curves, FPR_LIMIT)
    write_decision_report(out, result, report, limits)
    # metrics.json last: the mark of a finished evaluation
    write_tables(result, out, extra_markdown=decisions_markdown(result))
    return result
