"""predict(): maps and scores for unlabelled images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from nsa.evaluate.predict import predict
from nsa.evaluate.run import evaluate
from nsa.evaluate.testsets import mvtec_testset

from nsa.errors import UserError


def test_predict_writes_a_raw_map_a_picture_and_scores_per_image(
    trained_run: Path, sample_image, write_png, tmp_path: Path
) -> None:
    for i in range(3):
        write_png(tmp_path / "new" / f"img{i}.png", sample_image(i, side=50)[0])
    scores = predict(trained_run, tmp_path / "new", tmp_path / "out", batch_size=2,
                     progress=False)
    with open(scores) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == ["img0.png", "img1.png", "img2.png"]
    raw = np.load(tmp_path / "out" / "maps" / "img1.npy")
    assert raw.shape == (64, 64) and raw.dtype == np.float32
    assert float(rows[1]["score_mean"]) == pytest.approx(raw.mean(), abs=1e-6)
    assert float(rows[1]["score_max"]) == pytest.approx(raw.max(), abs=1e-6)
    assert (tmp_path / "out" / "maps" / "img1.png").is_file()
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert record["n_images"] == 3 and "numpy" in record["versions"]


def test_predict_refuses_an_empty_folder(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no images"):
        predict(trained_run, tmp_path / "empty", tmp_path / "out", progress=False)


def _depth_warnings(stderr: str) -> list[str]:
    """stderr's warning lines, less the one about the run having no calibration."""
    return [line for line in stderr.strip().splitlines()
            if line.startswith("warning: ") and "has no calibration" not in line]


def test_predict_and_evaluate_scale_deep_images_by_the_runs_white_level(
    trained_run: Path, make_mvtec, tmp_path: Path, capsys
) -> None:
    """A run trained on 12-bit data records white_level 4095; its 16-bit test images then
    give exactly the maps their 8-bit copies give (scaled by 65535 they were near black)."""
    deep_run = tmp_path / "deep-run"
    shutil.copytree(trained_run, deep_run)
    config = json.loads((deep_run / "config.json").read_text())
    config["settings"]["white_level"] = 4095
    (deep_run / "config.json").write_text(json.dumps(config))
    eight = make_mvtec(tmp_path / "eight")
    deep = tmp_path / "deep"
    shutil.copytree(eight, deep)
    for path in (deep / "widget" / "test").rglob("*.png"):
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert cv2.imwrite(str(path), np.rint(pixels * (4095 / 255)).astype(np.uint16))

    good = Path("widget") / "test" / "good"
    predict(trained_run, eight / good, tmp_path / "p8", progress=False)
    predict(deep_run, deep / good, tmp_path / "p16", progress=False)
    for name in ("000.npy", "001.npy"):
        assert np.array_equal(np.load(tmp_path / "p8" / "maps" / name),
                              np.load(tmp_path / "p16" / "maps" / name))
    record = json.loads((tmp_path / "p16" / "predict.json").read_text())
    assert record["white_level"] == 4095 and record["warnings"] == []
    assert _depth_warnings(capsys.readouterr().err) == []
    # the 8-bit run on the deep images: scaled by 65535, and said so
    predict(trained_run, deep / good, tmp_path / "p16-8", progress=False)
    err = _depth_warnings(capsys.readouterr().err)
    assert len(err) == 1 and "uint16 pixels (largest" in err[0] and "8-bit" in err[0]
    record = json.loads((tmp_path / "p16-8" / "predict.json").read_text())
    assert record["warnings"] == [err[0].removeprefix("warning: ")]

    rows = [evaluate([mvtec_testset(root, "widget")], run, tmp_path / out, max_pictures=0,
                     progress=False)["categories"]["widget"]
            for root, run, out in ((eight, trained_run, "e8"), (deep, deep_run, "e16"))]
    for key in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"):
        assert rows[0][key] == rows[1][key], key
