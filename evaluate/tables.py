"""The result tables: metrics.json (everything, fractions), metrics.csv and metrics.md.

One row per test set (an MVTec category, say), a mean row, and the paper's published
figures beside ours where the paper has them. The published figures live in
``paper_results.csv`` next to this module (data, with its source in the first line),
stored in percent as published and turned into fractions here.
"""

from __future__ import annotations

import csv
import json
import math
import os
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from nsa.errors import writing

#: Our metrics, in table order, with their column titles.
METRICS = {
    "image_auroc": "image AUROC",
    "image_ap": "image AP",
    "pixel_auroc": "pixel AUROC",
    "pixel_ap": "pixel AP",
    "aupro": "AU-PRO",
}
#: Metrics the paper publishes.
PAPER_METRICS = ("image_auroc", "pixel_auroc", "aupro")
PAPER_FILE = "paper_results.csv"


@cache
def paper_results() -> tuple[str, dict[tuple[str, str], dict[str, float | None]]]:
    """(source line, {(dataset, row): {metric: fraction or None}}) from the packaged CSV."""
    text = files("nsa.evaluate").joinpath(PAPER_FILE).read_text(encoding="utf-8")
    source, _, body = text.partition("\n")
    table = {}
    for record in csv.DictReader(body.splitlines()):
        table[(record["dataset"], record["row"])] = {
            metric: float(record[metric]) / 100 if record[metric] else None
            for metric in PAPER_METRICS
        }
    return source.lstrip("# ").strip(), table


def paper_figures(key: tuple[str, str] | None) -> dict[str, float | None] | None:
    """The paper's figures for one row, or None when the paper has no such row."""
    return paper_results()[1].get(key) if key else None


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every metric over the rows (null when any row lacks it), counts summed.

    The paper column of the mean is the paper's own mean row when the rows are exactly
    its 15 MVTec categories, otherwise the mean of the paper figures shown (null when a
    row has none).
    """
    mean: dict[str, Any] = {
        "n_good": sum(row["n_good"] for row in rows),
        "n_defect": sum(row["n_defect"] for row in rows),
    }
    empty = [row.get("defect_images_with_empty_mask") for row in rows]
    mean["defect_images_with_empty_mask"] = (
        sum(empty) if empty and all(n is not None for n in empty) else None)
    for metric in METRICS:
        values = [row[metric] for row in rows]
        mean[metric] = None if any(v is None for v in values) else sum(values) / len(values)
    published = paper_results()[1]
    mvtec = {key[1] for key in published if key[0] == "mvtec"} - {"mean"}
    keys = [row.get("paper_key") for row in rows]
    if {tuple(k) for k in keys if k} == {("mvtec", c) for c in mvtec} and len(keys) == len(mvtec):
        mean["paper"] = published[("mvtec", "mean")]
    elif all(row.get("paper") for row in rows):
        mean["paper"] = {}
        for metric in PAPER_METRICS:
            values = [row["paper"][metric] for row in rows]
            mean["paper"][metric] = (
                None if any(v is None for v in values) else sum(values) / len(values)
            )
    else:
        mean["paper"] = None
    return mean


def to_json_value(value: Any) -> Any:
    """NaN (an undefined metric) becomes null; numpy scalars become plain numbers."""
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_tables(result: dict[str, Any], out: Path, extra_markdown: str = "") -> list[Path]:
    """Write metrics.csv, metrics.md (``extra_markdown`` appended) and, last and
    atomically, metrics.json into ``out``.

    A failed write (e.g. no space left) raises a one-line error naming the file.
    """
    out = Path(out)
    json_path, csv_path, md_path = out / "metrics.json", out / "metrics.csv", out / "metrics.md"
    rows = _table_rows(result)
    with writing(csv_path), open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["category", "n_good", "n_defect", *METRICS, *(f"paper_{m}" for m in PAPER_METRICS)]
        )
        for name, row in rows:
            paper = row.get("paper") or {}
            writer.writerow(
                [name, row["n_good"], row["n_defect"]]
                + [_csv_number(row[m]) for m in METRICS]
                + [_csv_number(paper.get(m)) for m in PAPER_METRICS]
            )
    with writing(md_path):
        md_path.write_text(markdown(result) + extra_markdown)
    write_text_atomic(json_path, json.dumps(to_json_value(result), indent=2) + "\n")
    return [json_path, csv_path, md_path]


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it to ``path``, so
    that ``path`` is never seen half-written; errors name ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path):
            tmp.write_text(text)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def markdown(result: dict[str, Any]) -> str:
    """The table in percent, paper columns only when the paper has any of the rows."""
    rows = _table_rows(result)
    with_paper = any(row.get("paper") for _, row in rows)
    header = ["category", "good", "defective", *METRICS.values()]
    if with_paper:
        header += [f"paper {METRICS[m]}" for m in PAPER_METRICS]
    lines = [
        "# nsa-eval results",
        "",
        f"Model run `{result['model_run']}`, protocol `{result['protocol']}` "
        f"({result['protocol_description']}). Figures in percent; n/a where undefined.",
    ]
    if with_paper:
        lines.append(f"Paper figures: {paper_results()[0]}")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows:
        cells = [name, str(row["n_good"]), str(row["n_defect"])]
        cells += [_percent(row[m]) for m in METRICS]
        if with_paper:
            paper = row.get("paper") or {}
            cells += [_percent(paper.get(m)) for m in PAPER_METRICS]
        if name == "mean":
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    empty = [(name, row.get("defect_images_with_empty_mask")) for name, row in rows
             if name != "mean" and row.get("defect_images_with_empty_mask")]
    if empty:
        lines += ["", "Defect images whose mask has no defect pixel (their pixels count as "
                  "defect-free): " + ", ".join(f"{name} {n}" for name, n in empty) + "."]
    return "\n".join(lines) + "\n"


def _table_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = list(result["categories"].items())
    if len(rows) > 1:
        rows.append(("mean", result["mean"]))
    return rows


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _percent(value: float | None) -> str:
    return "n/a" if _is_missing(value) else f"{100 * value:.1f}"


def _csv_number(value: float | None) -> str:
    return "" if _is_missing(value) else f"{value:.6f}"
