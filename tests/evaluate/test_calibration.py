"""Calibrated thresholds: the conformal rank, its guarantee, the refusals, the stored file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nsa.evaluate.calibrate import calibrate
from nsa.evaluate.calibration import (
    calibrate_scores,
    conformal_rank,
    guarantee,
    images_needed,
    normalize,
    pixel_threshold,
)
from nsa.evaluate.cli import app
from typer.testing import CliRunner

from nsa.errors import UserError

runner = CliRunner()


def test_rank_is_the_split_conformal_order_statistic() -> None:
    assert conformal_rank(99, 0.01) == 99  # ceil(100 * 0.99)
    assert conformal_rank(199, 0.01) == 198
    assert conformal_rank(74, 0.02) == 74  # ceil(75 * 0.98) = ceil(73.5)
    assert conformal_rank(20, 0.05) == 20
    assert images_needed(0.01) == 99 and images_needed(0.05) == 19


def test_the_guarantee_holds_on_average_over_calibration_sets() -> None:
    """Draw many calibration sets of n uniform scores; the mean realised false-alarm rate
    (1 - k-th order statistic) must be at most the target, and match (n+1-k)/(n+1)."""
    rng = np.random.default_rng(0)
    n, target = 50, 0.05
    k = conformal_rank(n, target)
    kth = np.sort(rng.random((20_000, n)), axis=1)[:, k - 1]
    realised = 1.0 - kth
    bound = guarantee(n, k, target)
    assert realised.mean() <= target
    assert realised.mean() == pytest.approx(bound["marginal_fpr_bound"], abs=2e-3)
    assert np.quantile(realised, 0.95) == pytest.approx(bound["fpr_upper_bound"], abs=5e-3)


def test_fewer_than_20_images_are_refused_saying_what_they_could_certify() -> None:
    with pytest.raises(UserError) as error:
        conformal_rank(12, 0.05)
    message = str(error.value)
    assert "12 good images; at least 20" in message
    assert "below 7.7%" in message  # 1/13
    assert "under 22%" in message  # 1 - 0.05 ** (1/12)


def test_an_uncertifiable_target_is_refused_with_the_smallest_certifiable_one() -> None:
    with pytest.raises(UserError, match=r"74 good images cannot certify --max-fpr 0.01 "
                                        r"\(that needs 99\).*1.33%"):
        conformal_rank(74, 0.01)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.6, float("nan")])
def test_max_fpr_outside_its_range_is_refused(bad: float) -> None:
    with pytest.raises(UserError, match="--max-fpr must be in"):
        conformal_rank(100, bad)


def test_thresholds_from_scores_and_pixels() -> None:
    maps = np.stack([np.full((4, 4), v, np.float32) for v in np.linspace(0, 1, 25)])
    maps[:, 0, 0] = 1.0  # one hot pixel per image: 1/16 of the pixels
    record = calibrate_scores([Path(__file__)] * 25, maps, 0.05)
    scores = maps.reshape(25, -1).mean(axis=1)
    k = conformal_rank(25, 0.05)
    assert record["image_threshold"] == pytest.approx(np.sort(scores)[k - 1])
    assert record["calibration_fpr"] <= 0.05
    assert pixel_threshold(maps, 0.05) == pytest.approx(1.0)  # 6.25% of pixels are 1.0
    assert pixel_threshold(maps, 0.10) < 1.0
    assert normalize(record["image_threshold"], record["image_threshold"]) == 0.5
    assert normalize(0.0, 0.2) == 0.0 and normalize(0.6, 0.2) == pytest.approx(0.75)


@pytest.fixture
def good_folder(tmp_path: Path, sample_image, write_png) -> Path:
    for i in range(20):
        write_png(tmp_path / "good" / f"g{i:02d}.png", sample_image(500 + i, side=50)[0])
    return tmp_path / "good"


@pytest.fixture
def own_run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's run, so that its calibration stays in this test."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_calibrate_stores_thresholds_images_and_the_model_hash(
    own_run: Path, good_folder: Path
) -> None:
    record = calibrate(own_run, good_folder, max_fpr=0.05, batch_size=8, progress=False)
    stored = json.loads((own_run / "calibration.json").read_text())
    assert stored["image_threshold"] == record["image_threshold"]
    assert stored["n_images"] == 20 and len(stored["images"]) == 20
    assert stored["guarantee"]["k"] == 20  # the largest of 20 scores certifies 1/21
    assert stored["image_threshold"] == max(item["score"] for item in stored["images"])
    assert stored["model_sha256"] and stored["images"][0]["sha256"]


def test_a_calibration_of_another_model_is_refused(own_run: Path, good_folder: Path,
                                                   tmp_path: Path) -> None:
    calibrate(own_run, good_folder, max_fpr=0.05, progress=False)
    stored = json.loads((own_run / "calibration.json").read_text())
    stored["model_sha256"] = "0" * 64
    (own_run / "calibration.json").write_text(json.dumps(stored))
    result = runner.invoke(app, ["predict", "--model", str(own_run), "--images",
                                 str(good_folder), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 2
    assert "another model.pt" in result.output


def test_calibrate_cli_refuses_19_images_in_one_line(own_run: Path, good_folder: Path) -> None:
    (good_folder / "g19.png").unlink()
    result = runner.invoke(app, ["calibrate", "--model", str(own_run), "--good",
                                 str(good_folder), "--max-fpr", "0.05", "--no-progress"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --good: 19 good images")
    assert not (own_run / "calibration.json").exists()


def test_the_pipeline_calibrates_elpv_on_the_even_half_of_the_held_out_cells(
    own_run: Path
) -> None:
    from nsa.evaluate.calibrate import calibrate_held_out_elpv, elpv_calibration_split
    from nsa.generate.sources import elpv_split

    calibration, rest = elpv_calibration_split("mono")
    held_out = [Path(p) for p in elpv_split("mono").test_good]
    assert sorted(calibration + rest) == sorted(held_out) and not set(calibration) & set(rest)
    record = calibrate_held_out_elpv(own_run, "mono", progress=False)
    assert record["n_images"] == len(calibration) == 74
    assert record["max_fpr"] == 0.02  # 74 images cannot certify 1 %: 1/75 = 1.33 %
    assert [item["file"] for item in record["images"]] == [str(p.resolve())
                                                           for p in calibration]
