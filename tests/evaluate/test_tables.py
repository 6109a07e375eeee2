"""Result tables: the paper figures as data, the mean row, and the three files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from nsa.evaluate.tables import markdown, mean_row, paper_figures, paper_results, write_tables

MVTEC = ["bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush",
         "transistor", "zipper", "carpet", "grid", "leather", "tile", "wood"]


def row(name: str, value: float, dataset: str = "mvtec", **overrides) -> dict:
    figures = {m: value for m in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")}
    key = [dataset, name] if dataset else None
    base = {"description": name, "n_good": 2, "n_defect": 3, **figures, "paper_key": key,
            "paper": paper_figures(tuple(key)) if key else None}
    return {**base, **overrides}


def result(rows: dict) -> dict:
    return {"protocol": "nsa", "protocol_description": "test", "model_run": "/runs/x",
            "categories": rows, "mean": mean_row(list(rows.values()))}


def test_paper_figures_are_fractions_of_the_published_percentages_with_their_source() -> None:
    source, table = paper_results()
    assert "docs/evaluation.md" in source
    assert paper_figures(("mvtec", "transistor")) == pytest.approx(
        {"image_auroc": 0.951, "pixel_auroc": 0.880, "aupro": 0.753}
    )
    assert table[("chestxray", "female")]["image_auroc"] == pytest.approx(0.94)
    assert table[("chestxray", "female")]["aupro"] is None


def test_paper_figures_are_none_for_rows_the_paper_lacks() -> None:
    assert paper_figures(("mvtec", "banana")) is None
    assert paper_figures(None) is None


def test_mean_row_is_null_where_any_row_is_undefined() -> None:
    mean = mean_row([row("bottle", 0.8), row("cable", 0.6, aupro=None)])
    assert mean["image_auroc"] == pytest.approx(0.7)
    assert mean["aupro"] is None
    assert (mean["n_good"], mean["n_defect"]) == (4, 6)


def test_mean_row_uses_the_papers_mean_for_all_fifteen_categories() -> None:
    mean = mean_row([row(c, 0.9) for c in MVTEC])
    assert mean["paper"] == pytest.approx({"image_auroc": 0.972, "pixel_auroc": 0.963,
                                           "aupro": 0.910})


def test_mean_row_averages_the_paper_figures_of_a_subset() -> None:
    mean = mean_row([row("bottle", 0.9), row("tile", 0.9)])
    assert mean["paper"]["image_auroc"] == pytest.approx((0.977 + 1.0) / 2)


def test_write_tables_writes_json_with_null_csv_and_markdown(tmp_path: Path) -> None:
    rows = {"bottle": row("bottle", 0.75, pixel_ap=float("nan")), "tile": row("tile", 0.5)}
    write_tables(result(rows), tmp_path)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["categories"]["bottle"]["pixel_ap"] is None
    assert data["mean"]["image_auroc"] == pytest.approx(0.625)
    with open(tmp_path / "metrics.csv") as handle:
        records = list(csv.DictReader(handle))
    assert [r["category"] for r in records] == ["bottle", "tile", "mean"]
    assert float(records[0]["paper_image_auroc"]) == pytest.approx(0.977)
    assert records[0]["pixel_ap"] == ""
    text = (tmp_path / "metrics.md").read_text()
    assert "| bottle | 2 | 3 | 75.0 | 75.0 | 75.0 | n/a | 75.0 | 97.7 | 98.3 | 92.9 |" in text
    assert "**mean**" in text


def test_markdown_leaves_out_paper_columns_when_the_paper_has_no_row() -> None:
    text = markdown(result({"parts": row("parts", 0.5, dataset=None)}))
    assert "paper" not in text.split("|", 1)[1]
    assert "| parts | 2 | 3 | 50.0 |" in text
