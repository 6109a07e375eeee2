"""Image files, decoding and resizing: RGB order, grey as one channel, every format OpenCV
decodes in any letter case, EXIF orientation, bit depth by the data's white level, masks by
non-zero, named errors for bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from nsa.generate.images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    find_mask,
    image_files,
    load_images,
    read_image,
    read_images,
    read_mask,
    resize_square,
)
from PIL import Image

from nsa.errors import UserError


def _write(path, bgr_or_grey) -> None:
    assert cv2.imwrite(str(path), bgr_or_grey)


def test_colour_images_come_back_in_rgb_order(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    _write(tmp_path / "red.png", bgr)
    image = read_image(tmp_path / "red.png")
    assert image.shape == (8, 8, 3)
    assert image[0, 0].tolist() == [200, 0, 0]


def test_grey_images_have_one_channel_and_convert_to_three_on_request(tmp_path):
    _write(tmp_path / "grey.png", np.full((8, 6), 77, np.uint8))
    assert read_image(tmp_path / "grey.png").shape == (8, 6, 1)
    rgb = read_image(tmp_path / "grey.png", channels=3)
    assert rgb.shape == (8, 6, 3) and (rgb == 77).all()


def test_sixteen_bit_images_without_a_white_level_use_the_full_16_bit_range(tmp_path):
    _write(tmp_path / "deep.png", np.full((4, 4), 0xAB12, np.uint16))
    assert (read_image(tmp_path / "deep.png") == round(0xAB12 * 255 / 65535)).all()
    assert (read_image(tmp_path / "deep.png", white_level=0xAB12) == 255).all()


def test_twelve_bit_data_in_16_bit_pngs_is_scaled_by_the_sets_maximum(tmp_path):
    """8 images holding 0..4095 in 16-bit PNGs: scaled by 65535 they had 16 grey levels
    (the issue's store had 6 after resizing); by the set's maximum they use the full range."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(8):
        data = rng.integers(0, 4096, (40, 40)).astype(np.uint16)
        data[0, 0] = 4095 if i == 3 else data[0, 0]
        files.append(tmp_path / f"{i}.png")
        _write(files[-1], data)
    loaded = read_images(files, 40)
    assert loaded.white_level == 4095
    stacked = np.stack(loaded.images)
    assert stacked.max() == 255 and len(np.unique(stacked)) == 256
    assert (loaded.images[2] == read_image(files[2], white_level=4095)).all()
    # the same data, 8-bit: no white level recorded, images unchanged
    _write(tmp_path / "eight.png", np.full((40, 40), 77, np.uint8))
    eight = read_images([tmp_path / "eight.png"], 40)
    assert eight.white_level is None and (eight.images[0] == 77).all()


def test_every_listed_suffix_decodes_in_any_letter_case(tmp_path):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    grey = colour[..., 0]
    for suffix in IMAGE_SUFFIXES:
        pixels = grey if suffix in (".pbm", ".pgm") else colour
        if suffix in (".pfm", ".hdr", ".pic"):
            pixels = colour.astype(np.float32) / 255
        ok, data = cv2.imencode(suffix, pixels)
        assert ok, suffix
        path = tmp_path / f"x{suffix.upper()}"
        path.write_bytes(data.tobytes())
        image = read_image(path)
        assert image.shape[:2] == (64, 64) and image.dtype == np.uint8, suffix
    listed = image_files(tmp_path)
    assert len(listed) == len(IMAGE_SUFFIXES)


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
    """A phone JPEG stored 96 wide and 64 high with Orientation 6 (rotate 90° clockwise)
    is shown 64 wide and 96 high; so it is read."""
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:, :10] = 255  # a bright band on the stored image's left edge
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (96, 64, 3)
    assert shown[:10].mean() > 200 and shown[20:].mean() < 30  # the band is now on top
    assert read_mask(tmp_path / "phone.jpg").shape == (96, 64)


#: What a viewer shows for each EXIF Orientation, from the EXIF specification.
SHOWN = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
         5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
         7: lambda a: np.rot90(a, -1)[::-1], 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_read_as_shown(tmp_path, suffix, orientation):
    stored = np.random.default_rng(orientation).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    options = {"lossless": True} if suffix == ".webp" else {}
    image.save(tmp_path / f"x{suffix}", exif=exif.tobytes(), **options)
    assert np.array_equal(read_image(tmp_path / f"x{suffix}"), SHOWN[orientation](stored))


@pytest.mark.parametrize("values", [(0, 255), (0, 1), (0, 3), (0, 1000)])
def test_a_mask_pixel_is_a_defect_iff_it_is_non_zero(tmp_path, values):
    low, high = values
    truth = np.zeros((16, 16), bool)
    truth[4:9, 3:12] = True
    dtype = np.uint16 if high > 255 else np.uint8
    _write(tmp_path / "m.png", np.where(truth, high, low).astype(dtype))
    assert (read_mask(tmp_path / "m.png") == truth).all()


def test_a_palette_mask_counts_by_index_not_colour(tmp_path):
    indices = np.zeros((8, 8), np.uint8)
    indices[2:5, 2:5] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([9, 9, 9] + [0, 0, 0] * 255)  # index 0 grey, class 1 drawn black
    image.save(tmp_path / "p.png")
    assert (read_mask(tmp_path / "p.png") == (indices == 1)).all()


def test_mask_names_are_matched_in_any_case_and_format(tmp_path):
    image = tmp_path / "img" / "007.JPG"
    for name in ("007_mask.PNG", "other_mask.png"):
        (tmp_path / "gt" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "gt" / name).write_bytes(b"x")
    assert find_mask(image, [tmp_path / "gt"]) == tmp_path / "gt" / "007_mask.PNG"
    (tmp_path / "gt" / "007_mask.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="several masks"):
        find_mask(image, [tmp_path / "gt"])
    assert find_mask(image, [tmp_path / "nowhere"]) is None


def test_an_empty_file_is_named_in_the_error(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"zero\.png: empty file \(0 bytes\)"):
        read_image(tmp_path / "zero.png")
    with pytest.raises(ImageReadError, match=r"zero\.png: empty file"):
        read_mask(tmp_path / "zero.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_named_in_the_error(tmp_path, suffix):
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    data = cv2.imencode(suffix, pixels)[1]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data.tobytes()[: len(data) - 40])
    with pytest.raises(ImageReadError, match=f"cut{suffix}.*truncated"):
        read_image(path)


def test_corrupt_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "junk.png"
    path.write_bytes(b"definitely not an image" * 10)
    with pytest.raises(ImageReadError, match=r"junk\.png.*not a readable image"):
        read_image(path)


def test_resize_square_gives_the_requested_side_and_keeps_channels():
    image = np.zeros((30, 40, 1), np.uint8)
    assert resize_square(image, 16).shape == (16, 16, 1)
    assert resize_square(np.zeros((10, 10, 3), np.uint8), 24).shape == (24, 24, 3)


def test_load_images_makes_every_image_colour_when_any_is(tmp_path):
    _write(tmp_path / "a.png", np.full((20, 20), 10, np.uint8))
    _write(tmp_path / "b.png", np.full((30, 30, 3), 20, np.uint8))
    images = load_images([tmp_path / "a.png", tmp_path / "b.png"], 16)
    assert [im.shape for im in images] == [(16, 16, 3), (16, 16, 3)]
    assert all(im.dtype == np.uint8 for im in images)
