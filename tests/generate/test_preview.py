"""The preview grid: destination | result | label map, one row per example."""

import cv2
import numpy as np
import pytest
from nsa.generate.presets import resolve_settings
from nsa.generate.preview import write_preview
from nsa.generate.synthesis import prepare_sources

from nsa.errors import UserError


@pytest.fixture
def sources():
    rng = np.random.default_rng(0)
    images = [cv2.GaussianBlur(rng.integers(0, 256, (48, 48)).astype(np.uint8), (5, 5), 0)
              [..., None] for _ in range(3)]
    return prepare_sources(images, resolve_settings("elpv"))


def test_preview_is_a_png_with_three_columns_and_a_row_per_example(sources, tmp_path):
    path = write_preview(sources, resolve_settings("elpv"), 0, 4, tmp_path / "p" / "x.png")
    grid = cv2.imread(str(path))
    assert grid is not None
    assert grid.shape[1] == 3 * 48 + 2 * 4
    assert grid.shape[0] > 4 * 48


def test_preview_into_an_unwritable_place_is_a_user_error(sources, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        write_preview(sources, resolve_settings("elpv"), 0, 1, blocker / "x.png")


def test_preview_of_blank_images_renders_rows_without_anomaly(tmp_path):
    blank = [np.full((40, 40, 3), 220, np.uint8) for _ in range(2)]
    settings = resolve_settings("bottle")
    path = write_preview(prepare_sources(blank, settings), settings, 0, 2, tmp_path / "b.png")
    grid = cv2.imread(str(path))
    label_tile = grid[22:62, 2 * 44:]
    assert label_tile.max() > 200  # the reason is written in white on a black label
