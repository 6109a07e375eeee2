"""Ground truth as the user saved it: a mask pixel is a defect iff it is non-zero, masks
may be drawn on EXIF-rotated photos, and an all-zero defect mask is counted and reported
(issue 11, kinds 2 and 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from nsa.evaluate.run import evaluate
from nsa.evaluate.testsets import TestImage, mvtec_testset, read_test_image
from PIL import Image

PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "aupro")


def _masks(root: Path) -> list[Path]:
    return sorted((root / "widget" / "ground_truth").rglob("*_mask.png"))


def _row(trained_run: Path, root: Path, out: Path) -> dict:
    result = evaluate([mvtec_testset(root, "widget")], trained_run, out, protocol="mvtec",
                      max_pictures=0, progress=False)
    return result["categories"]["widget"]


def _rewrite(mask_path: Path, encoding: str) -> None:
    """Rewrite a 0/255 mask as 0/1, as class ids 1..3, or as 16-bit 0/65535."""
    truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0
    if encoding == "0/1":
        pixels = truth.astype(np.uint8)
    elif encoding == "class ids":
        ids = 1 + (np.arange(truth.shape[1]) % 3)[None, :].repeat(truth.shape[0], 0)
        pixels = np.where(truth, ids, 0).astype(np.uint8)
    else:
        pixels = np.where(truth, 65535, 0).astype(np.uint16)
    assert cv2.imwrite(str(mask_path), pixels)


@pytest.fixture(scope="module")
def reference(trained_run: Path, make_mvtec, tmp_path_factory) -> tuple[Path, dict]:
    """An MVTec-layout set with 0/255 masks and its metrics (the right values)."""
    base = tmp_path_factory.mktemp("reference")
    root = make_mvtec(base / "ref", n_good=3, defects={"scratch": 3, "dent": 3})
    return root, _row(trained_run, root, base / "ref-out")


@pytest.mark.parametrize("encoding, which", [
    ("0/1", "all"), ("0/1", "half"), ("class ids", "all"), ("16-bit", "half"),
])
def test_pixel_metrics_do_not_depend_on_how_the_masks_encode_a_defect(
    trained_run: Path, reference, tmp_path: Path, encoding: str, which: str
) -> None:
    """0/1 masks gave pixel metrics 'n/a', half of them 0/1 gave wrong figures; now every
    encoding gives exactly the figures of the 0/255 masks."""
    root, expected = reference
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    masks = _masks(copy)
    for mask in masks if which == "all" else masks[::2]:
        _rewrite(mask, encoding)
    row = _row(trained_run, copy, tmp_path / "out")
    assert all(0.0 < expected[key] <= 1.0 for key in PIXEL_KEYS)
    for key in PIXEL_KEYS:
        assert row[key] == expected[key], key
    assert row["defect_images_with_empty_mask"] == 0


def test_a_defect_image_with_an_all_zero_mask_is_counted_reported_and_kept(
    trained_run: Path, reference, tmp_path: Path, capsys
) -> None:
    """Its pixels stay in the pixel metrics as defect-free pixels: the figures equal those
    of the same image filed as a good one."""
    root, _ = reference
    empty, as_good = tmp_path / "empty", tmp_path / "as-good"
    shutil.copytree(root, empty)
    shutil.copytree(root, as_good)
    mask = _masks(empty)[0]
    assert cv2.imwrite(str(mask), np.zeros((80, 80), np.uint8))
    image = root / "widget" / "test" / mask.parent.name / mask.name.replace("_mask", "")
    moved = as_good / "widget" / "test" / "good" / f"zz-{image.name}"
    shutil.move(as_good / image.relative_to(root), moved)
    (as_good / _masks(empty)[0].relative_to(empty)).unlink()

    expected = _row(trained_run, as_good, tmp_path / "as-good-out")
    capsys.readouterr()
    row = _row(trained_run, empty, tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert (row["n_defect"], row["defect_images_with_empty_mask"]) == (6, 1)
    for key in PIXEL_KEYS:
        assert row[key] == pytest.approx(expected[key], abs=1e-12), key
    assert len(err) == 1 and err[0].startswith("warning: widget: 1 of 6 defect images")
    assert image.name in err[0]
    assert "mask has no defect pixel" in (tmp_path / "out" / "metrics.md").read_text()


def test_a_mask_drawn_on_an_exif_rotated_photo_matches_it(tmp_path: Path) -> None:
    """A phone JPEG stored 96x64 with Orientation 6 is shown 64x96; its mask, drawn on it
    as shown, was refused as '64x96 but its image is 96x64'."""
    stored = np.full((64, 96, 3), 100, np.uint8)
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "photo.jpg", exif=exif.tobytes())
    drawn = np.zeros((96, 64), np.uint8)
    drawn[10:30, 20:40] = 255
    assert cv2.imwrite(str(tmp_path / "photo_mask.png"), drawn)
    pixels, mask = read_test_image(
        TestImage(tmp_path / "photo.jpg", 1, "x", tmp_path / "photo_mask.png"), 3, True)
    assert pixels.shape == (96, 64, 3)
    assert (mask == (drawn > 0)).all()


def test_an_image_auroc_below_chance_is_a_warning():
    from nsa.evaluate.run import below_chance_warning

    said = below_chance_warning("bottle", {"image_auroc": 0.301})
    assert said is not None
    assert said.startswith("bottle: image AUROC 0.301 is below chance (0.5)")
    for fine in (0.5, 0.93, float("nan"), None):
        assert below_chance_warning("bottle", {"image_auroc": fine}) is None
