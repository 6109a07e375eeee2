"""The layouts users bring (VisA, MVTec AD 2, MVTec LOCO, BTAD, MPDD, folders), each on a tiny
tree written here, through nsa-gen (preview: the training images, no Ray) and nsa-eval (on
the session's tiny trained run), with their one-line errors; and the registry they come
from (pipeline configs, help, --root from NSA_DATA_ROOT)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from nsa.datasets import DATASETS
from nsa.evaluate.cli import app as eval_app
from nsa.evaluate.testsets import read_test_image
from nsa.generate.cli import app as gen_app
from nsa.pipelines.config import ConfigError, check_inputs, load_config
from typer.testing import CliRunner

VISA_CSV = "object,split,label,image,mask\n"


def _image(seed: int, side: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 120, (side, side, 3)).astype(np.uint8)


def _mask(value: int = 255, side: int = 48) -> np.ndarray:
    mask = np.zeros((side, side), np.uint8)
    mask[10:20, 12:24] = value
    return mask


def _write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def make_visa(root: Path) -> Path:
    """candle: 3 normal train images, 2 normal and 2 anomalous test images (JPG), masks of
    class id 3 (PNG)."""
    rows = []
    base = "candle/Data"
    for i in range(5):
        _write(root / base / "Images" / "Normal" / f"{i:04d}.JPG", _image(i))
        rows.append(f"candle,{'train' if i < 3 else 'test'},normal,"
                    f"{base}/Images/Normal/{i:04d}.JPG,\n")
    for i in range(2):
        _write(root / base / "Images" / "Anomaly" / f"{i:03d}.JPG", _image(10 + i))
        _write(root / base / "Masks" / "Anomaly" / f"{i:03d}.png", _mask(3))
        rows.append(f"candle,test,anomaly,{base}/Images/Anomaly/{i:03d}.JPG,"
                    f"{base}/Masks/Anomaly/{i:03d}.png\n")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text(VISA_CSV + "".join(rows))
    return root


def make_ad2(root: Path) -> Path:
    base = root / "can"
    for i in range(3):
        _write(base / "train" / "good" / f"{i:03d}_regular.png", _image(i))
        _write(base / "validation" / "good" / f"{i:03d}_regular.png", _image(20 + i))
    for i in range(2):
        _write(base / "test_public" / "good" / f"{i:03d}_regular.png", _image(30 + i))
        _write(base / "test_public" / "bad" / f"{i:03d}_regular.png", _image(40 + i))
        _write(base / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png",
               _mask())
    return root


def make_loco(root: Path) -> Path:
    """pushpins: 2 good test images, 2 logical and 1 structural anomaly; the first logical
    one's ground truth is split over two files."""
    base = root / "pushpins"
    for i in range(3):
        _write(base / "train" / "good" / f"{i:03d}.png", _image(i))
    for i in range(2):
        _write(base / "test" / "good" / f"{i:03d}.png", _image(30 + i))
    counts = {"logical_anomalies": 2, "structural_anomalies": 1}
    for k, (folder, count) in enumerate(counts.items()):
        for i in range(count):
            _write(base / "test" / folder / f"{i:03d}.png", _image(40 + 10 * k + i))
            _write(base / "ground_truth" / folder / f"{i:03d}" / "000.png", _mask())
    second = np.zeros((48, 48), np.uint8)
    second[30:40, 30:40] = 255
    _write(base / "ground_truth" / "logical_anomalies" / "000" / "001.png", second)
    return root


def make_btad(root: Path) -> Path:
    """01 as BTAD releases it: train/ok, test/ok, test/ko (BMP images), masks named like the
    images in ground_truth/ko (one BMP, one PNG)."""
    base = root / "01"
    for i in range(3):
        _write(base / "train" / "ok" / f"{i:04d}.bmp", _image(i))
    for i in range(2):
        _write(base / "test" / "ok" / f"{i:04d}.bmp", _image(30 + i))
        _write(base / "test" / "ko" / f"{i:04d}.bmp", _image(40 + i))
        _write(base / "ground_truth" / "ko" / f"{i:04d}.{('bmp', 'png')[i]}", _mask())
    return root


def make_mpdd(root: Path) -> Path:
    base = root / "tubes"
    for i in range(3):
        _write(base / "train" / "good" / f"{i:03d}.png", _image(i))
    for i in range(2):
        _write(base / "test" / "good" / f"{i:03d}.png", _image(30 + i))
        _write(base / "test" / "anomalous" / f"{i:03d}.png", _image(40 + i))
        _write(base / "ground_truth" / "anomalous" / f"{i:03d}_mask.png", _mask())
    return root


#: layout -> (tree maker, category, training images, nsa-eval rows "| name | good | defect |")
LAYOUTS = {
    "visa": (make_visa, "candle", 3, ["| candle | 2 | 2 |"]),
    "mvtec-ad2": (make_ad2, "can", 3, ["| can | 2 | 2 |"]),
    "mvtec-loco": (make_loco, "pushpins", 3, [
        "| pushpins | 2 | 3 |", "| pushpins-logical | 2 | 2 |",
        "| pushpins-structural | 2 | 1 |"]),
    "btad": (make_btad, "01", 3, ["| 01 | 2 | 2 |"]),
    "mpdd": (make_mpdd, "tubes", 3, ["| tubes | 2 | 2 |"]),
}


def gen(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(gen_app, [str(a) for a in args], env=env)


def evaluate(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(eval_app, [str(a) for a in args], env=env)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_trains_on_its_good_images_and_is_evaluated_on_its_test_split(
    layout: str, trained_run: Path, tmp_path: Path
) -> None:
    make, category, n_train, rows = LAYOUTS[layout]
    root = make(tmp_path / "data")
    source = DATASETS[layout].source(root=root, category=category)
    assert len(source.files) == n_train and source.kind == layout
    assert all("train" in str(p) or "Normal" in str(p) for p in source.files)
    assert source.default_preset is not None  # works without --preset, like mvtec
    preview = gen("preview", layout, "--root", root, "--category", category,
                  "--out", tmp_path / "p.png", "--n", 2, "--size", 64)
    assert preview.exit_code == 0, preview.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    result = evaluate(layout, "--root", root, "--category", category, "--model", trained_run,
                      "--out", tmp_path / "out", "--max-pictures", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    for row in rows:
        assert row in result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(metrics["categories"]) == len(rows)


def test_visa_trains_only_on_the_csv_train_rows_and_its_class_id_masks_count(
    tmp_path: Path,
) -> None:
    root = make_visa(tmp_path)
    source = DATASETS["visa"].source(root=root, category="candle")
    assert [p.name for p in source.files] == ["0000.JPG", "0001.JPG", "0002.JPG"]
    (testset,) = DATASETS["visa"].testsets(root=root, category=["candle"])
    anomaly = next(image for image in testset.images if image.label == 1)
    _, truth = read_test_image(anomaly, channels=3, has_masks=True)
    assert truth.sum() == 10 * 12  # class id 3 counts as defect


def test_loco_unions_the_mask_files_of_an_image_and_shares_the_good_images(
    tmp_path: Path,
) -> None:
    root = make_loco(tmp_path)
    overall, logical, structural = DATASETS["mvtec-loco"].testsets(
        root=root, category=["pushpins"])
    split = next(image for image in logical.images if image.extra_masks)
    _, truth = read_test_image(split, channels=3, has_masks=True)
    assert truth.sum() == 10 * 12 + 10 * 10
    goods = [[image.path for image in s.images if image.label == 0]
             for s in (overall, logical, structural)]
    assert goods[0] == goods[1] == goods[2] and len(goods[0]) == 2
    assert {image.defect for image in structural.images if image.label} == {
        "structural_anomalies"}


def test_loco_scores_its_shared_good_images_once_with_the_metrics_of_separate_sets(
        trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nsa.evaluate import run as eval_run

    sets = DATASETS["mvtec-loco"].testsets(root=make_loco(tmp_path / "data"),
                                            category=["pushpins"])
    seen: list[int] = []
    real = eval_run.anomaly_maps

    def counted(model, images, geometry, device):
        seen.append(len(images))
        return real(model, images, geometry, device)

    monkeypatch.setattr(eval_run, "anomaly_maps", counted)
    together = eval_run.evaluate(sets, trained_run, tmp_path / "together", batch_size=3,
                                 max_pictures=0, progress=False)
    unique = {image.path for testset in sets for image in testset.images}
    assert sum(seen) == len(unique) == 5  # 2 good images, shared by 3 sets, once each
    for testset in sets:  # each set alone: nothing to share, the same numbers (but for
        # the last bits a map's floats take from the other images of its batch)
        alone = eval_run.evaluate([testset], trained_run, tmp_path / testset.name,
                                  batch_size=3, max_pictures=0, progress=False)
        mine, theirs = (result["categories"][testset.name] for result in (together, alone))
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            if isinstance(value, float):
                assert value == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
            else:
                assert value == theirs[key], key


@pytest.mark.parametrize(("layout", "break_tree", "fragments"), [
    ("visa", lambda r: (r / "split_csv" / "1cls.csv").unlink(),
     ["split_csv/1cls.csv: not found", "VisA as released"]),
    ("visa", lambda r: (r / "candle/Data/Masks/Anomaly/001.png").unlink(),
     ["1cls.csv:8: mask", "001.png does not exist"]),
    ("mvtec-ad2", lambda r: (r / "can/test_public/ground_truth/bad/001_regular_mask.png"
                             ).unlink(), ["001_regular.png: defect image without a mask"]),
    ("mvtec-loco", lambda r: [p.unlink() for p in
                              (r / "pushpins/ground_truth/structural_anomalies/000").iterdir()],
     ["000.png: defect image without a mask", "structural_anomalies/000"]),
    ("btad", lambda r: (r / "01/ground_truth/ko/0001.png").unlink(),
     ["ko/0001.bmp: defect image without a mask"]),
])
def test_a_broken_tree_is_one_line_naming_the_file(
    layout, break_tree, fragments, trained_run: Path, tmp_path: Path
) -> None:
    make, category, _, _ = LAYOUTS[layout]
    root = make(tmp_path / "data")
    break_tree(root)
    result = evaluate(layout, "--root", root, "--category", category, "--model", trained_run,
                      "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_missing_category_names_it_and_those_found(layout: str, tmp_path: Path) -> None:
    make, category, _, _ = LAYOUTS[layout]
    root = make(tmp_path / "data")
    result = gen("preview", layout, "--root", root, "--category", "nope",
                 "--out", tmp_path / "p.png")
    assert_one_line_error(result, "'nope'", category)


def test_visa_missing_csv_is_one_line_for_nsa_gen_too(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = gen("visa", "--root", tmp_path / "data", "--category", "candle", "--n", 8,
                 "--out", tmp_path / "s.zarr")
    assert_one_line_error(result, "1cls.csv: not found")
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("command", ["mvtec", "visa", "mvtec-loco", "chestxray", "folder"])
def test_root_comes_from_nsa_data_root_else_one_line(
    command: str, trained_run: Path, tmp_path: Path
) -> None:
    own = {"chestxray": ["--list", tmp_path / "l.txt"], "folder": []}.get(
        command, ["--category", "x"])
    result = gen(command, *own, "--n", 8, env={"NSA_DATA_ROOT": ""})
    assert_one_line_error(result, "--root", "NSA_DATA_ROOT")
    if command in LAYOUTS:
        root = LAYOUTS[command][0](tmp_path / "data")
        result = evaluate(command, "--category", LAYOUTS[command][1], "--model", trained_run,
                          "--out", tmp_path / "out", "--max-pictures", "0", "--no-progress",
                          env={"NSA_DATA_ROOT": str(root)})
        assert result.exit_code == 0, result.output


def test_help_names_the_variable_and_the_default_out() -> None:
    result = gen("mvtec", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "NSA_DATA_ROOT" in text and "shards/NAME-nN-sSEED.zarr" in text


def test_folder_takes_several_good_folders_and_a_mask_pattern(
    trained_run: Path, tmp_path: Path
) -> None:
    for name in ("good1", "good2"):
        _write(tmp_path / name / f"{name}.png", _image(1))
    _write(tmp_path / "dent" / "x.png", _image(2))
    _write(tmp_path / "gt" / "x_gt.png", _mask())
    result = evaluate("folder", "--good", tmp_path / "good1", "--good", tmp_path / "good2",
                      "--defect", tmp_path / "dent", "--masks", tmp_path / "gt",
                      "--mask-pattern", "{stem}_gt.png", "--name", "parts",
                      "--model", trained_run, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "| parts | 2 | 1 |" in result.stdout
    bad = evaluate("folder", "--good", tmp_path / "good1", "--defect", tmp_path / "dent",
                   "--masks", tmp_path / "gt", "--mask-pattern", "gt",
                   "--model", trained_run, "--out", tmp_path / "out2", "--no-progress")
    assert_one_line_error(bad, "--mask-pattern 'gt'", "{stem}")
    preview = gen("preview", "folder", "--root", tmp_path / "good1", "--root",
                  tmp_path / "good2", "--preset", "elpv", "--size", 64, "--n", 1,
                  "--out", tmp_path / "p.png")
    assert preview.exit_code == 0, preview.output


def _config(tmp_path: Path, kind: str, root: Path, categories: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'out = "o"\n[source]\nkind = "{kind}"\nroot = "{root}"\n'
                    f"categories = {categories}\n[generate]\nn = 8\n[train]\nsteps = 1\n")
    return path


def test_a_pipeline_config_takes_every_layout_as_its_kind(tmp_path: Path) -> None:
    root = make_loco(tmp_path / "data")
    config = load_config(_config(tmp_path, "mvtec-loco", root, '["pushpins"]'))
    check_inputs(config)
    assert config.categories == ["pushpins"]
    assert config.settings["pushpins"]["preset"] == "transistor"
    assert [t.name for t in config.source.test_sets("pushpins")] == [
        "pushpins", "pushpins-logical", "pushpins-structural"]
    missing = load_config(_config(tmp_path, "mvtec-loco", root, '["pushpin"]'))
    with pytest.raises(ConfigError, match=r"\[source\] categories: no folder 'pushpin' in .* "
                                          r"\(did you mean 'pushpins'\?\)"):
        check_inputs(missing)
    with pytest.raises(ConfigError, match=r"\[source\] kind: must be one of mvtec, .*visa"):
        load_config(_config(tmp_path, "vissa", root, '["x"]'))
