"""predict(): maps and scores for unlabelled images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from nsa.evaluate.predict import predict

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
