"""Decisions in ``nsa-eval`` evaluations: rates at the calibrated threshold, report.html.

Hooks called by :func:`nsa.evaluate.run.evaluate`. The threshold is the one stored by
``nsa-eval calibrate`` (never chosen on the test defects); without a calibration the
evaluation reports the threshold-free metrics only and says so. Decisions need the
``nsa`` protocol, whose image score (mean of the map at the run's side) is the one
calibrated; under ``mvtec`` they are not reported. Good test images that were calibration
images (same SHA-256) are left out of the decision counts (see
:func:`nsa.evaluate.decisions.decision_metrics`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from nsa.evaluate.backends import read_calibration
from nsa.evaluate.calibration import Thresholds, calibration_hashes, file_sha256, thresholds
from nsa.evaluate.decisions import Decision, decision_metrics
from nsa.evaluate.report import REPORT_FILE, ReportRow, write_report
from nsa.train.checkpoint import MODEL_FILE

DECISION_METRICS = {
    "false_alarm_rate": "false-alarm rate", "miss_rate": "miss rate", "f1": "F1",
}


def evaluation_thresholds(model: str | Path) -> Thresholds:
    """The run's calibrated thresholds (``source`` 'none' without a calibration)."""
    run_dir = Path(model)
    return thresholds(read_calibration(run_dir, file_sha256(run_dir / MODEL_FILE)))


def set_decisions(testset: Any, scored: Any, limits: Thresholds, protocol: str
                  ) -> dict[str, Any] | None:
    """Decision metrics of one set at the calibrated threshold, or None without one."""
    if not limits.decides or protocol != "nsa":
        return None
    return decision_metrics(scored.scores, scored.labels, limits.image,
                            calibration_flags(testset, limits))


def calibration_flags(testset: Any, limits: Thresholds) -> np.ndarray:
    """Bool (N,): which good test images were calibration images (same SHA-256)."""
    used = calibration_hashes(limits.calibration)
    return np.array([
        image.label == 0 and bool(used) and file_sha256(image.path) in used
        for image in testset.images
    ], dtype=bool)


def report_rows(testset: Any, scored: Any, limits: Thresholds, protocol: str
                ) -> list[ReportRow]:
    """One report row per test image of the set."""
    rows = []
    decides = limits.decides and protocol == "nsa"
    used = calibration_flags(testset, limits)
    for index, image in enumerate(testset.images):
        score = float(scored.scores[index])
        decision = (Decision(limits.normalized(score), bool(score > limits.image), None, None)
                    if decides else Decision(None, None, None, None))
        rows.append(ReportRow(f"{testset.name}/{image.defect}/{image.path.name}",
                              image.defect, int(image.label), score, decision,
                              scored.thumbnails[index], calibration=bool(used[index])))
    return rows


def decisions_markdown(result: dict[str, Any]) -> str:
    """A markdown paragraph and table of the decisions, or a line saying there are none."""
    thresholds_record = result.get("thresholds") or {}
    sets = {name: row.get("decisions") for name, row in result["categories"].items()}
    if not any(sets.values()):
        reason = thresholds_record.get("note") or "no calibration"
        return f"\nDecisions: none ({reason}).\n"
    lines = [
        "",
        f"Decisions at the calibrated image threshold {thresholds_record['image']:.6f} "
        f"(target false-alarm rate {thresholds_record['max_fpr']:g}, from "
        f"{thresholds_record['n_images']} good images; calibration images left out):",
        "",
        "| category | false-alarm rate | miss rate | F1 | TP | FP | FN | TN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in sets.items():
        if not row:
            continue
        rates = [_percent(row[m]) for m in DECISION_METRICS]
        counts = [str(row[k]) for k in ("true_positives", "false_positives",
                                        "false_negatives", "true_negatives")]
        lines.append("| " + " | ".join([name, *rates, *counts]) + " |")
    return "\n".join(lines) + "\n"


def thresholds_record(limits: Thresholds, protocol: str) -> dict[str, Any]:
    """What metrics.json says about the thresholds used for decisions."""
    record: dict[str, Any] = {"source": limits.source, "image": limits.image,
                              "pixel": limits.pixel}
    if limits.calibration:
        record.update(max_fpr=limits.calibration["max_fpr"],
                      n_images=limits.calibration["n_images"],
                      guarantee=limits.calibration["guarantee"],
                      created=limits.calibration["created"])
    if not limits.decides:
        record["note"] = "the run has no calibration: run nsa-eval calibrate"
    elif protocol != "nsa":
        record["note"] = "the calibration is for the nsa protocol's score; use --protocol nsa"
    return record


def write_decision_report(out: Path, result: dict[str, Any], rows: list[ReportRow],
                          limits: Thresholds) -> Path:
    """Write report.html (metrics, decisions, curves, every image); return its path."""
    metrics = []
    for name, row in result["categories"].items():
        for key in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"):
            metrics.append((f"{name}: {key.replace('_', ' ')}", _percent(row[key])))
    decisions = []
    for name, row in result["categories"].items():
        d = row.get("decisions")
        if d:
            decisions.append((f"{name}: at the threshold",
                              f"false-alarm rate {_percent(d['false_alarm_rate'])}%, miss rate "
                              f"{_percent(d['miss_rate'])}%, F1 {_percent(d['f1'])}%; "
                              f"TP {d['true_positives']} FP {d['false_positives']} "
                              f"FN {d['false_negatives']} TN {d['true_negatives']} "
                              f"({d['n_left_out_as_calibration_images']} calibration images "
                              "left out)"))
    provenance = {k: result[k] for k in ("model_run", "protocol", "protocol_description",
                                         "model", "settings", "versions", "created")}
    return write_report(
        out / REPORT_FILE, title="nsa-eval: " + ", ".join(result["categories"]),
        subtitle=f"Model run {result['model_run']}, protocol {result['protocol']}. "
        "Metrics in percent.",
        rows=rows, limits=limits, decisions=decisions, metrics=metrics,
        curves=out / "curves.png", provenance=provenance,
    )


def _percent(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}"
