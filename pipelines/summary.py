"""The combined table of a pipeline: one row per category, mean ± std over seeds.

Metrics come from each job's ``eval/metrics.json`` (fractions); the table shows percent,
as the paper does, with the paper's figure beside ours where it has one.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from nsa.evaluate.tables import METRICS, PAPER_METRICS, paper_results

from nsa.errors import writing

SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def summarise(outcomes: list[Any]) -> list[dict[str, Any]]:
    """Rows ``{category, seeds, failed, <metric>_mean, <metric>_std, paper_<metric>}``.

    A category's metrics are the rows of its jobs' metrics.json; a job with several test
    sets (MVTec LOCO: all, logical, structural) gives one row per set, named by the set,
    the first of them standing for the category. Failed jobs are counted but contribute
    no numbers. The last row is the mean over categories of each category mean.
    """
    by_row: dict[str, list[tuple[Any, dict[str, Any] | None]]] = {}
    main: set[str] = set()
    for outcome in outcomes:
        sets = dict(outcome.metrics["categories"]) if outcome.metrics else {}
        names = list(sets) if len(sets) > 1 else [outcome.category]
        main.add(names[0])
        for name, metrics in zip(names, sets.values() if sets else [None], strict=False):
            by_row.setdefault(name, []).append((outcome, metrics))
    rows = []
    for category, entries in by_row.items():
        jobs = [job for job, _ in entries]
        sets = [metrics for _, metrics in entries if metrics is not None]
        row: dict[str, Any] = {
            "category": category,
            "seeds": len(sets),
            "failed": sum(1 for job in jobs if job.error),
        }
        for metric in METRICS:
            values = _finite([s.get(metric) for s in sets])
            row[f"{metric}_mean"] = float(np.mean(values)) if values else None
            row[f"{metric}_std"] = float(np.std(values)) if len(values) > 1 else None
        paper = next((s.get("paper") for s in sets if s.get("paper")), None) or {}
        for metric in PAPER_METRICS:
            row[f"paper_{metric}"] = paper.get(metric)
        rows.append(row)
    categories = [row for row in rows if row["category"] in main]
    if len(categories) > 1:
        rows.append(_mean_row(categories))
    return rows


def _mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    mean: dict[str, Any] = {"category": "mean", "seeds": None,
                            "failed": sum(r["failed"] for r in rows)}
    for metric in METRICS:
        values = _finite([r[f"{metric}_mean"] for r in rows])
        mean[f"{metric}_mean"] = float(np.mean(values)) if len(values) == len(rows) else None
        mean[f"{metric}_std"] = None
    for metric in PAPER_METRICS:
        values = _finite([r[f"paper_{metric}"] for r in rows])
        mean[f"paper_{metric}"] = float(np.mean(values)) if len(values) == len(rows) else None
    return mean


def _cell(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table in Markdown: ours (mean ± std over seeds) and the paper's, in percent."""
    head = ["category", "seeds"]
    for metric, title in METRICS.items():
        head.append(title)
        if metric in PAPER_METRICS:
            head.append(f"paper {title}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        seeds = "" if row["seeds"] is None else str(row["seeds"])
        if row["failed"]:
            seeds += f" ({row['failed']} failed)"
        cells = [row["category"], seeds]
        for metric in METRICS:
            cells.append(_cell(row[f"{metric}_mean"], row[f"{metric}_std"]))
            if metric in PAPER_METRICS:
                cells.append(_cell(row[f"paper_{metric}"]))
        lines.append("| " + " | ".join(cells) + " |")
    source, _ = paper_results()
    return "\n".join(lines) + f"\n\nAll figures in percent. Paper figures: {source}\n"


def write_summary(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.csv`` (fractions) under ``out``.

    Raises :class:`~nsa.errors.UserError`/``OutputError`` naming the file when a write fails.
    """
    md = out / SUMMARY_MD
    with writing(md):
        md.write_text(markdown(rows))
    table = out / SUMMARY_CSV
    with writing(table), open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["category"])
        writer.writeheader()
        writer.writerows(rows)
    return md, table
