"""Decisions in predict and evaluate, and the exported model (ONNX, TorchScript)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from nsa.evaluate.calibrate import calibrate
from nsa.evaluate.cli import app
from nsa.evaluate.predict import predict
from nsa.evaluate.run import evaluate
from nsa.evaluate.testsets import folder_testset
from nsa.train.cli import app as train_app
from nsa.train.export import TORCHSCRIPT_EXTRA, export_model
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def calibrated(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the session's run calibrated at 5 % on 20 good images, and image folders:
    ``good`` (the calibration images), ``new`` (3 good + 2 defective, odd sizes)."""
    base = tmp_path_factory.mktemp("calibrated")
    run = Path(shutil.copytree(trained_run, base / "run"))
    for i in range(20):
        _png(base / "good" / f"g{i:02d}.png", _image(700 + i))
    for i in range(3):
        _png(base / "new" / f"ok{i}.png", _image(800 + i)[:, :40])
    for i in range(2):
        _png(base / "new" / f"bad{i}.png", _image(900 + i, defect=True))
    sharpen(run)
    calibrate(run, base / "good", max_fpr=0.05, batch_size=8, progress=False)
    return {"run": run, "base": base}


def sharpen(run: Path) -> None:
    """Scale the final layer of the run's model by 50: after two training steps its maps
    barely depend on the image, and comparisons of maps would prove little."""
    state = torch.load(run / "model.pt", weights_only=True)
    final = [k for k in state["model"] if k.startswith("decoder.") and k.endswith("weight")][-1]
    state["model"][final] = state["model"][final] * 50
    torch.save(state, run / "model.pt")


def _image(seed: int, defect: bool = False) -> np.ndarray:
    """A 50 px grey-textured RGB image, with a bright square when ``defect``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (50, 50, 3)).astype(np.uint8)
    if defect:
        image[15:25, 20:30] = 230
    return image


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def test_predict_decides_per_image_and_writes_masks_at_native_size(calibrated: dict,
                                                                  capsys) -> None:
    run, base = calibrated["run"], calibrated["base"]
    threshold = json.loads((run / "calibration.json").read_text())["image_threshold"]
    rows = _rows(predict(run, base / "new", base / "out", progress=False))
    err = capsys.readouterr().err
    assert "calibrated: image threshold" in err and "calibration images" not in err
    assert json.loads((base / "out" / "predict.json").read_text())["n_calibration_images"] == 0
    predict(run, base / "good", base / "again", progress=False)
    assert "20 of these 20 images were calibration images" in capsys.readouterr().err
    for name, row in rows.items():
        score = float(np.load(base / "out" / "maps" / f"{Path(name).stem}.npy")
                      .mean(dtype=np.float64))
        assert row["anomalous"] == ("true" if score > threshold else "false")
        assert float(row["normalized_score"]) == pytest.approx(score / (score + threshold),
                                                               abs=2e-6)
        if row["anomalous"] == "false":  # a part that passes gets no outline
            assert row["defect_area_px"] == "0"
            assert not (base / "out" / "maps" / f"{Path(name).stem}_mask.png").exists()
    # every image anomalous: each gets its mask at its own size, area = mask pixels
    flagged = _rows(predict(run, base / "new", base / "all", threshold=0.0, progress=False))
    for name, row in flagged.items():
        mask = cv2.imread(str(base / "all" / "maps" / f"{Path(name).stem}_mask.png"),
                          cv2.IMREAD_UNCHANGED)
        assert mask.shape == ((50, 40) if name.startswith("ok") else (50, 50))
        assert set(np.unique(mask)) <= {0, 255}
        assert int(row["defect_area_px"]) == int((mask == 255).sum())
    assert (base / "out" / "report.html").stat().st_size > 1000


def test_threshold_option_overrides_and_is_checked(calibrated: dict, tmp_path: Path) -> None:
    run, base = calibrated["run"], calibrated["base"]
    rows = _rows(predict(run, base / "new", tmp_path / "o", threshold=0.0, progress=False))
    assert {row["anomalous"] for row in rows.values()} == {"true"}
    for bad in ("1.5", "-0.1"):
        result = runner.invoke(app, ["predict", "--model", str(run), "--images",
                                     str(base / "new"), "--out", str(tmp_path / "x"),
                                     "--threshold", bad, "--no-progress"])
        assert result.exit_code == 2
        assert result.output.strip() == f"error: --threshold must be in [0, 1] (scores and " \
                                        f"maps lie there), got {float(bad)}"


def test_predict_without_calibration_says_so_once_and_leaves_decisions_empty(
    trained_run: Path, calibrated: dict, tmp_path: Path, capsys
) -> None:
    rows = _rows(predict(trained_run, calibrated["base"] / "new", tmp_path / "o",
                         progress=False))
    assert capsys.readouterr().err.count("has no calibration") == 1
    assert {(r["anomalous"], r["normalized_score"], r["defect_area_px"])
            for r in rows.values()} == {("", "", "")}
    assert not list((tmp_path / "o" / "maps").glob("*_mask.png"))


def test_evaluation_reports_decisions_leaving_calibration_images_out(calibrated: dict,
                                                                     tmp_path: Path) -> None:
    run, base = calibrated["run"], calibrated["base"]
    # the good folder holds the 20 calibration images and 3 new ones
    good = Path(shutil.copytree(base / "good", tmp_path / "good"))
    for name in ("ok0.png", "ok1.png", "ok2.png"):
        shutil.copy(base / "new" / name, good / name)
    defects = tmp_path / "defects" / "square"
    defects.mkdir(parents=True)
    for name in ("bad0.png", "bad1.png"):
        shutil.copy(base / "new" / name, defects / name)
    testset = folder_testset(good, [defects], name="parts")
    result = evaluate([testset], run, tmp_path / "eval", max_pictures=0, progress=False)
    decisions = result["categories"]["parts"]["decisions"]
    threshold = result["thresholds"]["image"]
    predict(run, base / "new", tmp_path / "p", progress=False)

    def score(stem: str) -> float:
        return float(np.load(tmp_path / "p" / "maps" / f"{stem}.npy").mean(dtype=np.float64))

    flagged_good = sum(score(f"ok{i}") > threshold for i in range(3))
    caught = sum(score(f"bad{i}") > threshold for i in range(2))
    assert decisions["n_left_out_as_calibration_images"] == 20
    assert decisions["false_positives"] == flagged_good
    assert decisions["true_negatives"] == 3 - flagged_good
    assert decisions["true_positives"] == caught
    assert decisions["false_alarm_rate"] == pytest.approx(flagged_good / 3)
    assert decisions["miss_rate"] == pytest.approx((2 - caught) / 2)
    assert "Decisions at the calibrated image threshold" in (tmp_path / "eval" /
                                                            "metrics.md").read_text()
    report = (tmp_path / "eval" / "report.html").read_text()
    assert report.count('data-outcome="calibration image"') == 20
    assert report.count('data-outcome="false alarm"') == flagged_good


def test_onnx_export_gives_the_torch_maps_and_carries_the_calibration(
    calibrated: dict, tmp_path: Path
) -> None:
    run, base = calibrated["run"], calibrated["base"]
    result = runner.invoke(train_app, ["export", str(run), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    exported = run / "model.onnx"
    meta = json.loads({p.key: p.value for p in onnx.load(str(exported)).metadata_props}
                      ["nsa_pipeline"])
    assert meta["calibration"] == json.loads((run / "calibration.json").read_text())
    # the ONNX file alone, away from its run directory
    alone = Path(shutil.copy(exported, tmp_path / "alone.onnx"))
    by_torch = _rows(predict(run, base / "new", tmp_path / "t", progress=False))
    by_onnx = _rows(predict(alone, base / "new", tmp_path / "x", batch_size=3,
                            progress=False))
    for name in by_torch:
        stem = Path(name).stem
        torch_map = np.load(tmp_path / "t" / "maps" / f"{stem}.npy")
        onnx_map = np.load(tmp_path / "x" / "maps" / f"{stem}.npy")
        assert np.abs(torch_map - onnx_map).max() <= 1e-4
        assert torch_map.std() > 0.05  # maps that depend on the image
        assert by_onnx[name]["anomalous"] == by_torch[name]["anomalous"]
    record = json.loads((tmp_path / "x" / "predict.json").read_text())
    assert record["model"]["kind"] == "onnx" and record["thresholds"]["source"] == "calibration"


def test_onnx_says_when_its_run_was_calibrated_again(calibrated: dict, tmp_path: Path,
                                                     capsys) -> None:
    run = Path(shutil.copytree(calibrated["run"], tmp_path / "run"))
    assert runner.invoke(train_app, ["export", str(run), "--format", "onnx"]).exit_code == 0
    predict(run / "model.onnx", calibrated["base"] / "new", tmp_path / "a", progress=False)
    assert "calibrated on" not in capsys.readouterr().err
    calibration = json.loads((run / "calibration.json").read_text())
    calibration["created"] = "2099-01-01T00:00:00+00:00"  # as `nsa-eval calibrate` again
    (run / "calibration.json").write_text(json.dumps(calibration))
    predict(run / "model.onnx", calibrated["base"] / "new", tmp_path / "b", progress=False)
    said = [line for line in capsys.readouterr().err.splitlines() if "calibrated on" in line]
    assert len(said) == 1 and "2099-01-01" in said[0] and "export it again" in said[0]
    record = json.loads((tmp_path / "b" / "predict.json").read_text())
    assert record["warnings"] == [said[0].removeprefix("warning: ")]


def test_torchscript_export_loads_alone_and_matches(calibrated: dict) -> None:
    run = calibrated["run"]
    path = export_model(run, "torchscript")
    extra = {TORCHSCRIPT_EXTRA: ""}
    loaded = torch.jit.load(io.BytesIO(path.read_bytes()), _extra_files=extra)
    meta = json.loads(extra[TORCHSCRIPT_EXTRA])
    side = meta["input"]["shape"][-1]
    batch = torch.rand((3, meta["channels"], side, side), generator=torch.Generator()
                       .manual_seed(1))
    from nsa.train.checkpoint import load_model

    net, _ = load_model(run)
    with torch.no_grad():
        assert torch.abs(loaded(batch) - torch.sigmoid(net(batch))).max() <= 1e-4


def test_bad_export_and_foreign_onnx_are_one_line_exit_2(calibrated: dict,
                                                         tmp_path: Path) -> None:
    run, base = calibrated["run"], calibrated["base"]
    result = runner.invoke(train_app, ["export", str(run), "--format", "tflite"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --format: 'tflite' is not supported "
                                     "(choose onnx, torchscript)")
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    foreign = onnx.helper.make_model(graph, producer_name="othertool")
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "foreign.onnx"),
                                 "--images", str(base / "new"), "--out", str(tmp_path / "o"),
                                 "--no-progress"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {tmp_path / 'foreign.onnx'}: an ONNX file from othertool")


def test_nsa_train_keeps_its_single_command_form(tmp_path: Path) -> None:
    """`nsa-train --shards X` still trains (reaches the store check), `export` is routed."""
    result = runner.invoke(train_app, ["--shards", str(tmp_path / "none.zarr"),
                                       "--out", str(tmp_path / "r"), "--steps", "1"])
    assert result.exit_code == 2 and "no such store" in result.output
    result = runner.invoke(train_app, ["export", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a training run" in result.output
