"""The pipeline's combined table: one row per category, or per test set where a job has
several (MVTec LOCO)."""

from __future__ import annotations

import pytest
from nsa.pipelines.runner import JobOutcome
from nsa.pipelines.summary import summarise


def _job(category: str, seed: int, sets: dict[str, float] | None) -> JobOutcome:
    metrics = None if sets is None else {
        "categories": {name: {"image_auroc": value} for name, value in sets.items()}}
    return JobOutcome(f"{category}/seed{seed}", category, seed, metrics=metrics,
                      error="boom" if sets is None else None)


def test_one_set_per_job_gives_category_rows_and_their_mean() -> None:
    rows = summarise([_job("a", 0, {"a": 0.8}), _job("a", 1, {"a": 0.6}),
                      _job("b", 0, {"b-named": 0.5})])
    assert [r["category"] for r in rows] == ["a", "b", "mean"]
    assert rows[0]["image_auroc_mean"] == pytest.approx(0.7) and rows[0]["seeds"] == 2
    assert rows[2]["image_auroc_mean"] == pytest.approx(0.6)


def test_several_sets_per_job_give_a_row_each_and_the_mean_uses_the_first() -> None:
    loco = {"p": 0.9, "p-logical": 0.7, "p-structural": 0.95}
    rows = summarise([_job("p", 0, loco), _job("p", 1, None), _job("q", 0, {"q": 0.5})])
    assert [r["category"] for r in rows] == ["p", "p-logical", "p-structural", "q", "mean"]
    assert rows[1]["image_auroc_mean"] == pytest.approx(0.7)
    assert rows[0]["failed"] == 1 and rows[0]["seeds"] == 1
    assert rows[-1]["image_auroc_mean"] == pytest.approx((0.9 + 0.5) / 2)
