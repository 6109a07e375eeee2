"""``report.html``: one self-contained page to browse a prediction's or evaluation's images.

Rendered with Jinja2 from ``templates/report.html.j2``: CSS and JavaScript inline, every
picture a base64 data URI (small JPEG thumbnails of the overlay, the curves PNG), so the
file opens from disk in any browser, without a server or network. The image table sorts
by any column (click its title) and filters by defect type and decision; it opens with
the worst errors first: false alarms by descending score, then misses by ascending
score, then the rest by descending score (unlabelled images: descending score).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import jinja2
import numpy as np
from nsa.evaluate.calibration import Thresholds
from nsa.evaluate.decisions import Decision, outcome
from nsa.evaluate.pictures import overlay_panel
from nsa.train.checkpoint import write_atomic

from nsa.errors import writing

REPORT_FILE = "report.html"
THUMB_HEIGHT = 96
JPEG_QUALITY = 80


@dataclass(frozen=True)
class ReportRow:
    """One image of the table. ``label`` None for unlabelled images; ``thumb`` a data URI;
    ``calibration``: a calibration image (its outcome is not counted, it is listed last)."""

    file: str
    defect: str
    label: int | None
    score: float
    decision: Decision
    thumb: str | None
    calibration: bool = False


def thumbnail(image: np.ndarray, side_map: np.ndarray, mask: np.ndarray | None = None) -> str:
    """A JPEG data URI of the overlay (image | heat map), :data:`THUMB_HEIGHT` px high.

    ``image`` (side, side, C) uint8, ``side_map`` float (side, side), ``mask`` bool (any
    size: a ground truth, or a predicted defect mask at the image's resolution) or None;
    its outline is drawn in green.
    """
    if mask is not None and mask.shape != side_map.shape:
        mask = cv2.resize(mask.astype(np.uint8), side_map.shape[::-1],
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    panel = overlay_panel(image, side_map, mask, "", min_side=1)
    scale = THUMB_HEIGHT / panel.shape[0]
    width = max(1, round(panel.shape[1] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(panel, (width, THUMB_HEIGHT), interpolation=interpolation)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("could not encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def png_data_uri(path: Path) -> str | None:
    """The PNG file as a data URI, or None when it does not exist."""
    if not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def worst_first(rows: list[ReportRow]) -> list[ReportRow]:
    """False alarms (score descending), misses (ascending), the rest (descending), then
    calibration images."""

    def key(row: ReportRow) -> tuple[int, float]:
        if row.calibration:
            return 3, -row.score
        kind = outcome(row.label, row.decision.anomalous)
        if kind == "false alarm":
            return 0, -row.score
        if kind == "miss":
            return 1, row.score
        return 2, -row.score

    return sorted(rows, key=key)


def threshold_facts(limits: Thresholds) -> list[tuple[str, str]]:
    """The 'Decisions' table lines for the thresholds in force."""
    if not limits.decides:
        return [("thresholds", "none: the model has no calibration and no --threshold was "
                 "given, so there are no decisions (run nsa-eval calibrate)")]
    facts = [("thresholds from", limits.source),
             ("image threshold (score_mean)", f"{limits.image:.6f}"),
             ("pixel threshold (map value)",
              "none (no masks)" if limits.pixel is None else f"{limits.pixel:.4f}")]
    calibration = limits.calibration
    if calibration:
        g = calibration["guarantee"]
        facts += [
            ("calibration", f"{calibration['n_images']} good images "
             f"({calibration.get('good', '')}), target false-alarm rate "
             f"{calibration['max_fpr']:g}"),
            ("guarantee", "false-alarm rate on new good images <= "
             f"{g['marginal_fpr_bound']:.2%}; "
             f"with {g['confidence']:.0%} confidence this calibration's rate is <= "
             f"{g['fpr_upper_bound']:.2%} (split conformal)"),
        ]
    return facts


def write_report(
    path: Path,
    *,
    title: str,
    subtitle: str,
    rows: list[ReportRow],
    limits: Thresholds,
    decisions: list[tuple[str, str]] = (),
    metrics: list[tuple[str, str]] = (),
    curves: Path | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Render ``report.html`` at ``path`` (written atomically) and return the path."""
    ordered = worst_first(rows)
    labelled = any(r.label is not None for r in rows)
    table_rows = []
    for row in ordered:
        d = row.decision
        decision = "" if d.anomalous is None else "anomalous" if d.anomalous else "normal"
        table_rows.append({
            "file": row.file, "defect": row.defect, "score": row.score, "thumb": row.thumb,
            "normalized": "" if d.normalized is None else f"{d.normalized:.4f}",
            "normalized_value": "" if d.normalized is None else f"{d.normalized:.6f}",
            "decision": decision,
            "outcome": "calibration image" if row.calibration else outcome(row.label, d.anomalous),
            "area": "" if d.defect_area_px is None else str(d.defect_area_px),
            "area_value": "" if d.defect_area_px is None else str(d.defect_area_px),
        })
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("nsa.evaluate", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )
    html = environment.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, rows=table_rows,
        decisions=[*threshold_facts(limits), *decisions], metrics=list(metrics),
        curves=png_data_uri(curves) if curves else None,
        defects=sorted({r["defect"] for r in table_rows if r["defect"]}),
        decisions_seen=sorted({r["decision"] for r in table_rows if r["decision"]}),
        order_note=("Worst first: false alarms (highest score first), then misses (lowest "
                    "score first), then the rest by score." if labelled else
                    "Highest score first."),
        outline_note="the ground truth" if labelled else "the predicted defect",
        provenance=[(k, v if isinstance(v, str) else json.dumps(v))
                    for k, v in (provenance or {}).items()],
    )
    with writing(path):
        write_atomic(Path(path), lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return Path(path)
