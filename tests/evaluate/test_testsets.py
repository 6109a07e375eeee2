"""Finding labelled test images, and refusing layouts that cannot be scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nsa.evaluate.testsets import (
    TestImage,
    chestxray_testset,
    elpv_testset,
    folder_testset,
    mvtec_testset,
    read_test_image,
)
from nsa.generate.sources import elpv_split

from nsa.errors import UserError


def test_mvtec_testset_labels_good_and_defect_images_with_their_masks(
    tmp_path: Path, make_mvtec
) -> None:
    testset = mvtec_testset(make_mvtec(tmp_path), "widget")
    assert (testset.n_good, testset.n_defect) == (3, 4)
    assert {image.defect for image in testset.images} == {"good", "dent", "scratch"}
    dent = next(image for image in testset.images if image.defect == "dent")
    assert dent.mask == tmp_path / "widget" / "ground_truth" / "dent" / "000_mask.png"
    assert testset.paper_key == ("mvtec", "widget") and testset.has_masks


def test_mvtec_testset_names_a_defect_image_without_its_mask(tmp_path: Path, make_mvtec) -> None:
    make_mvtec(tmp_path)
    (tmp_path / "widget" / "ground_truth" / "dent" / "001_mask.png").unlink()
    with pytest.raises(UserError, match=r"dent/001\.png: defect image without a mask; looked "
                       r"for 001_mask\.<image suffix> or 001\.<image suffix> .* in .*/dent"):
        mvtec_testset(tmp_path, "widget")


@pytest.mark.parametrize("image_suffix, mask_suffix", [
    (".PNG", ".PNG"), (".jpg", "jpg"), (".png", ".jpg"), (".JPEG", ".Tif"), (".bmp", ".webp"),
])
def test_mvtec_images_and_masks_in_any_format_and_case_are_found(
    tmp_path: Path, sample_image, write_png, image_suffix: str, mask_suffix: str
) -> None:
    """The issue's case: `_mask.PNG` and `_mask.jpg` were "defect image without a mask"."""
    mask_suffix = "." + mask_suffix.lstrip(".")
    base = tmp_path / "widget"
    write_png(base / "test" / "good" / f"000{image_suffix}", sample_image(0)[0])
    image, mask = sample_image(1, defect=True)
    write_png(base / "test" / "crack" / f"000{image_suffix}", image)
    write_png(base / "ground_truth" / "crack" / f"000_mask{mask_suffix}", mask)
    testset = mvtec_testset(tmp_path, "widget")
    assert (testset.n_good, testset.n_defect) == (1, 1)
    assert testset.images[1].mask == base / "ground_truth" / "crack" / f"000_mask{mask_suffix}"
    _, truth = read_test_image(testset.images[1], channels=3, has_masks=True)
    assert (truth == (mask > 0)).all()  # JPEG's ringing (values 1..5 here) is not a defect


def test_mvtec_testset_explains_the_expected_layout(tmp_path: Path) -> None:
    (tmp_path / "widget" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="expected the MVTec AD layout"):
        mvtec_testset(tmp_path, "widget")


def test_a_category_without_defective_images_is_refused(tmp_path: Path, make_mvtec) -> None:
    make_mvtec(tmp_path, defects={})
    with pytest.raises(UserError, match="no defective test images"):
        mvtec_testset(tmp_path, "widget")


def test_an_empty_image_folder_is_refused(tmp_path: Path, make_mvtec) -> None:
    make_mvtec(tmp_path)
    (tmp_path / "widget" / "test" / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no images"):
        mvtec_testset(tmp_path, "widget")


def test_a_mask_of_another_size_than_its_image_is_refused(
    tmp_path: Path, sample_image, write_png
) -> None:
    image = write_png(tmp_path / "a.png", sample_image(0, side=40)[0])
    mask = write_png(tmp_path / "a_mask.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(UserError, match=r"a_mask\.png: mask is 40x30 but its image .* is 40x40"):
        read_test_image(TestImage(image, 1, "x", mask), channels=3, has_masks=True)


def test_good_images_of_a_set_with_masks_read_as_all_defect_free(
    tmp_path: Path, sample_image, write_png
) -> None:
    image = write_png(tmp_path / "a.png", sample_image(0, side=40)[0])
    pixels, mask = read_test_image(TestImage(image, 0), channels=1, has_masks=True)
    assert pixels.shape == (40, 40, 1)
    assert mask.shape == (40, 40) and not mask.any()


def test_folder_testset_takes_several_defect_folders_and_optional_masks(
    tmp_path: Path, sample_image, write_png
) -> None:
    for i in range(2):
        write_png(tmp_path / "ok" / f"g{i}.png", sample_image(i)[0])
        for defect in ("cracks", "stains"):
            image, mask = sample_image(10 + i, defect=True)
            write_png(tmp_path / defect / f"{defect}{i}.png", image)
            write_png(tmp_path / "masks" / defect / f"{defect}{i}_mask.png", mask)
    defects = [tmp_path / "cracks", tmp_path / "stains"]
    without = folder_testset(tmp_path / "ok", defects, name="parts")
    assert (without.name, without.n_good, without.n_defect) == ("parts", 2, 4)
    assert not without.has_masks and all(image.mask is None for image in without.images)
    with_masks = folder_testset(tmp_path / "ok", defects, tmp_path / "masks")
    assert with_masks.has_masks
    assert all(image.mask is not None for image in with_masks.images if image.label)


def test_folder_testset_names_a_defect_image_without_a_mask(
    tmp_path: Path, sample_image, write_png
) -> None:
    write_png(tmp_path / "ok" / "g.png", sample_image(0)[0])
    write_png(tmp_path / "bad" / "b.png", sample_image(1, defect=True)[0])
    (tmp_path / "masks").mkdir()
    with pytest.raises(UserError, match=r"b\.png: defect image without a mask; looked for "
                       r"b_mask\.<image suffix> or b\.<image suffix>"):
        folder_testset(tmp_path / "ok", [tmp_path / "bad"], tmp_path / "masks")


def test_chestxray_testset_names_the_papers_subset_from_the_list(
    tmp_path: Path, sample_image, write_png
) -> None:
    for name in ("n1.png", "n2.png", "a1.png"):
        write_png(tmp_path / "images" / name, sample_image(0)[0])
    normal = tmp_path / "norm_FemaleAdultPA_test_curated_list.txt"
    anomalous = tmp_path / "anomaly_FemaleAdultPA_test_curated_list.txt"
    normal.write_text("n1.png\nn2.png\n")
    anomalous.write_text("a1.png\n")
    testset = chestxray_testset(tmp_path / "images", normal, anomalous)
    assert (testset.name, testset.paper_key) == ("chestxray-female", ("chestxray", "female"))
    assert (testset.n_good, testset.n_defect, testset.has_masks) == (2, 1, False)


def test_elpv_testset_is_the_shared_split_held_out_against_defective() -> None:
    testset = elpv_testset("mono")
    split = elpv_split("mono")
    assert [i.path for i in testset.images if i.label == 0] == split.test_good
    assert [i.path for i in testset.images if i.label == 1] == split.test_defect
    assert not set(split.train) & {i.path for i in testset.images}
