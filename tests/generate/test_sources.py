"""Sources: which files each kind of dataset yields, and one-line errors for bad roots."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from nsa.generate.cli import app as gen_app
from nsa.generate.sources import (
    ELPV_DEFECT_PROBABILITY,
    SourceError,
    chestxray_source,
    elpv_data_dir,
    elpv_source,
    elpv_split,
    folder_source,
    mvtec_source,
)
from typer.testing import CliRunner

CATEGORY = "bottle"  # the category of the session fixture tree (tests/conftest.py)


def test_mvtec_source_lists_train_good_pngs_sorted_with_the_category_preset(mvtec_root):
    source = mvtec_source(mvtec_root, CATEGORY)
    expected = sorted((mvtec_root / CATEGORY / "train" / "good").glob("*.png"))
    assert source.files == expected
    assert source.default_preset == CATEGORY
    assert source.kind == "mvtec"


def test_mvtec_missing_root_names_the_root(tmp_path):
    with pytest.raises(SourceError, match=str(tmp_path / "nowhere")):
        mvtec_source(tmp_path / "nowhere", CATEGORY)


def test_mvtec_wrong_category_names_it_and_lists_those_found(mvtec_root):
    with pytest.raises(SourceError, match=r"no category 'zipper'.*found: bottle"):
        mvtec_source(mvtec_root, "zipper")


def test_folder_source_finds_images_recursively_and_ignores_other_files(tmp_path):
    for name in ("a.png", "sub/b.JPG", "sub/deeper/c.tif", "notes.txt", "sub/d.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    source = folder_source(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in source.files]
    assert names == ["a.png", "sub/b.JPG", "sub/d.bmp", "sub/deeper/c.tif"]
    assert source.default_preset is None


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(SourceError, match="no images"):
        folder_source(tmp_path)


def test_chestxray_list_finds_images_directly_or_in_subfolders(tmp_path):
    (tmp_path / "images_001" / "images").mkdir(parents=True)
    (tmp_path / "a.png").write_bytes(b"a")
    (tmp_path / "images_001" / "images" / "b.png").write_bytes(b"b")
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nb.png\n\n")
    source = chestxray_source(tmp_path, listing)
    assert source.files == [tmp_path / "a.png", tmp_path / "images_001" / "images" / "b.png"]
    assert source.default_preset == "chestxray"


def test_chestxray_list_naming_missing_images_says_how_many_and_the_first(tmp_path):
    (tmp_path / "a.png").write_bytes(b"a")
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nmissing1.png\nmissing2.png\n")
    with pytest.raises(SourceError, match=r"2 of 3 listed images are missing.*first: missing1"):
        chestxray_source(tmp_path, listing)


def test_source_attrs_record_each_file_with_its_sha256(mvtec_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mvtec_root / CATEGORY / "train" / "good", copy)
    source = folder_source(copy)
    files = source.attrs()["files"]
    assert [Path(f["path"]) for f in files] == source.files
    assert files[0]["sha256"] == hashlib.sha256(source.files[0].read_bytes()).hexdigest()


def _elpv_labels(cell_type: str) -> dict[str, float]:
    rows = (line.split() for line in (elpv_data_dir() / "labels.csv").read_text().splitlines())
    return {Path(path).name: float(p) for path, p, kind in rows if kind == cell_type}


def test_elpv_split_holds_out_every_fourth_functional_cell_by_file_name():
    labels = _elpv_labels("mono")
    good = sorted(name for name, p in labels.items() if p == 0.0)
    split = elpv_split("mono")
    assert [p.name for p in split.test_good] == good[::4]
    assert [p.name for p in split.train] == [n for i, n in enumerate(good) if i % 4]


def test_elpv_defect_test_cells_have_probability_at_least_0_66():
    labels = _elpv_labels("poly")
    split = elpv_split("poly")
    expected = sorted(n for n, p in labels.items() if p >= ELPV_DEFECT_PROBABILITY)
    assert [p.name for p in split.test_defect] == expected
    assert all(p.is_file() for p in split.test_defect)


def test_elpv_source_trains_on_the_train_split_only():
    source = elpv_source("mono")
    split = elpv_split("mono")
    assert source.files == split.train
    assert not set(source.files) & set(split.test_good)
    assert source.default_preset == "elpv"


def test_elpv_unknown_cell_type_is_refused():
    with pytest.raises(SourceError, match="'thin'"):
        elpv_source("thin")


@pytest.mark.parametrize("names", [("a.jpg", "b.JPG", "c.jpeg"), ("a.PNG", "b.png", "c.Tiff")])
def test_mvtec_training_images_in_any_format_and_case_are_taken(tmp_path, names):
    """The issue's case: train/good/*.jpg and *.PNG were "no training images (*.png)"."""
    good = tmp_path / "widget" / "train" / "good"
    good.mkdir(parents=True)
    for name in (*names, "notes.txt"):
        (good / name).write_bytes(b"x")
    assert [p.name for p in mvtec_source(tmp_path, "widget").files] == sorted(names)


def test_mvtec_without_training_images_says_what_it_looked_for(tmp_path):
    (tmp_path / "widget" / "train" / "good").mkdir(parents=True)
    with pytest.raises(SourceError, match=r"no training images: .*good: no images .*jpg"):
        mvtec_source(tmp_path, "widget")


@pytest.mark.parametrize("command", ["folder", "mvtec"])
def test_nsa_gen_names_an_empty_image_file_before_writing_anything(tmp_path, command):
    """A zero-byte PNG among the sources ended in an OpenCV traceback naming no file."""
    good = tmp_path / "widget" / "train" / "good"
    good.mkdir(parents=True)
    assert cv2.imwrite(str(good / "a.png"), np.full((32, 32), 90, np.uint8))
    (good / "b.png").write_bytes(b"")
    where = ["--root", str(good)] if command == "folder" else [
        "--root", str(tmp_path), "--category", "widget"]
    result = CliRunner().invoke(gen_app, [command, *where, "--preset", "elpv", "--n", "4",
                                          "--out", str(tmp_path / "out.zarr"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {good / 'b.png'}: empty file (0 bytes), not an image"]
    assert not (tmp_path / "out.zarr").exists()
