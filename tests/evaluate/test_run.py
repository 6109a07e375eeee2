"""evaluate(): a tiny trained run on labelled test sets, under both protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nsa.evaluate.inference import Geometry
from nsa.evaluate.run import evaluate, score_testset
from nsa.evaluate.testsets import elpv_testset, folder_testset, mvtec_testset
from nsa.train.checkpoint import load_model

METRIC_KEYS = {"image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"}


def scored(trained_run: Path, testset, protocol: str):
    model, config = load_model(trained_run)
    return score_testset(
        model, testset, geometry=Geometry.from_config(config), channels=3, protocol=protocol,
        device="cpu", batch_size=3, max_pictures=2,
    )


def test_evaluate_writes_every_output_with_the_metrics_per_category(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    make_mvtec(tmp_path / "data", "gizmo")
    testsets = [mvtec_testset(root, "widget"), mvtec_testset(root, "gizmo")]
    result = evaluate(testsets, trained_run, tmp_path / "out", max_pictures=4, progress=False)
    out = tmp_path / "out"
    for name in ("metrics.json", "metrics.csv", "metrics.md", "curves.png"):
        assert (out / name).is_file()
    data = json.loads((out / "metrics.json").read_text())
    assert data["protocol"] == "nsa"
    assert data["model_run"] == str(trained_run.resolve())
    assert "torch" in data["versions"]
    widget = data["categories"]["widget"]
    assert set(widget) >= METRIC_KEYS
    assert all(0.0 <= widget[key] <= 1.0 for key in METRIC_KEYS)
    assert (widget["n_good"], widget["n_defect"]) == (3, 4)
    assert "widget" in widget["description"]
    assert data["mean"]["image_auroc"] == pytest.approx(
        (widget["image_auroc"] + data["categories"]["gizmo"]["image_auroc"]) / 2
    )
    assert result["categories"]["widget"]["aupro"] == pytest.approx(widget["aupro"])
    pictures = sorted((out / "maps" / "widget").rglob("*.png"))
    assert len(pictures) == 4
    assert {p.parent.name for p in pictures} == {"good", "dent", "scratch"}


def test_the_same_run_on_the_same_images_gives_the_same_tables(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    for out in ("a", "b"):
        evaluate([mvtec_testset(root, "widget")], trained_run, tmp_path / out,
                 max_pictures=0, progress=False)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv"
                                                              ).read_bytes()


def test_nsa_protocol_scores_the_run_sized_map_by_its_mean(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    result = scored(trained_run, mvtec_testset(make_mvtec(tmp_path, side=80), "widget"), "nsa")
    assert result.maps.shape == (7, 64, 64) and result.masks.shape == (7, 64, 64)
    np.testing.assert_allclose(result.scores, result.maps.mean(axis=(1, 2)), rtol=1e-6)
    assert np.all(result.maps[:, :16] == 0)  # outside the centre 32 px crop


def test_mvtec_protocol_scores_the_map_at_native_size_by_its_max(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    result = scored(trained_run, mvtec_testset(make_mvtec(tmp_path, side=80), "widget"), "mvtec")
    assert [m.shape for m in result.maps] == [(80, 80)] * 7
    assert [m.shape for m in result.masks] == [(80, 80)] * 7
    np.testing.assert_allclose(result.scores, [m.max() for m in result.maps], rtol=1e-6)


def test_a_set_without_masks_has_null_pixel_metrics(
    trained_run: Path, sample_image, write_png, tmp_path: Path
) -> None:
    for i in range(2):
        write_png(tmp_path / "good" / f"{i}.png", sample_image(i)[0])
        write_png(tmp_path / "bad" / f"{i}.png", sample_image(10 + i, defect=True)[0])
    testset = folder_testset(tmp_path / "good", [tmp_path / "bad"], name="parts")
    evaluate([testset], trained_run, tmp_path / "out", protocol="mvtec", progress=False)
    row = json.loads((tmp_path / "out" / "metrics.json").read_text())["categories"]["parts"]
    assert row["pixel_auroc"] is None and row["pixel_ap"] is None and row["aupro"] is None
    assert row["image_auroc"] is not None


def test_elpv_cells_are_evaluated_image_level_on_the_held_out_split(
    trained_run: Path, tmp_path: Path
) -> None:
    result = evaluate([elpv_testset("mono")], trained_run, tmp_path / "out", max_pictures=2,
                      batch_size=64, progress=False)
    row = result["categories"]["elpv-mono"]
    assert (row["n_good"], row["n_defect"]) == (147, 369)
    assert 0.0 <= row["image_auroc"] <= 1.0 and np.isnan(row["aupro"])
    assert len(list((tmp_path / "out" / "maps").rglob("*.png"))) == 2


def test_the_shared_mvtec_fixture_is_evaluated_with_the_papers_bottle_row(
    trained_run: Path, mvtec_root: Path, tmp_path: Path
) -> None:
    result = evaluate([mvtec_testset(mvtec_root, "bottle")], trained_run, tmp_path / "out",
                      protocol="mvtec", max_pictures=1, progress=False)
    row = result["categories"]["bottle"]
    assert (row["n_good"], row["n_defect"]) == (3, 3)
    assert 0.0 <= row["aupro"] <= 1.0
    assert row["paper"]["aupro"] == pytest.approx(0.929)
    assert "| bottle | 3 | 3 |" in (tmp_path / "out" / "metrics.md").read_text()
