"""Image decoding and resizing: RGB order, grey as one channel, named errors for bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from nsa.generate.images import ImageReadError, load_images, read_image, resize_square


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


def test_sixteen_bit_images_keep_their_top_eight_bits(tmp_path):
    _write(tmp_path / "deep.png", np.full((4, 4), 0xAB12, np.uint16))
    assert (read_image(tmp_path / "deep.png") == 0xAB).all()


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
