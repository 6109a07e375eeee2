"""Overlay pictures and curves.png."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from nsa.evaluate.pictures import Curves, overlay_panel, picture_indices, write_curves


def test_overlay_panel_puts_the_image_beside_its_heat_map() -> None:
    image = np.full((32, 40, 3), 100, np.uint8)
    anomaly_map = np.zeros((32, 40), np.float32)
    anomaly_map[:, 20:] = 1.0
    panel = overlay_panel(image, anomaly_map, None, min_side=0)
    assert panel.shape == (32, 80, 3)
    assert np.array_equal(panel[:, :40], np.full((32, 40, 3), 100, np.uint8))
    right = panel[:, 40:].astype(int)
    assert right[16, 30, 2] > right[16, 10, 2]  # hot (red in BGR) where the map is high


def test_overlay_panel_draws_the_ground_truth_contour_in_green_on_both_halves() -> None:
    image = np.zeros((32, 32, 1), np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    panel = overlay_panel(image, np.zeros((32, 32), np.float32), mask, min_side=0)
    for half in (panel[:, :32], panel[:, 32:]):
        assert tuple(half[8, 12]) == (0, 255, 0)
        assert tuple(half[12, 12]) != (0, 255, 0)  # inside: only the outline


def test_overlay_panel_enlarges_small_images_by_a_whole_factor() -> None:
    image = np.zeros((40, 50, 1), np.uint8)
    panel = overlay_panel(image, np.zeros((40, 50), np.float32), None, min_side=256)
    assert panel.shape == (280, 700, 3)


def test_picture_indices_spread_over_the_whole_set_up_to_the_cap() -> None:
    assert picture_indices(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert picture_indices(3, 10).tolist() == [0, 1, 2]
    assert picture_indices(10, 0).size == 0


def test_write_curves_writes_a_png_even_without_masks(tmp_path: Path) -> None:
    empty = (np.zeros(0), np.zeros(0))
    line = (np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0]))
    curves = [Curves("a", line, line, line), Curves("b", line, empty, empty)]
    path = write_curves(tmp_path / "curves.png", curves)
    assert cv2.imread(str(path)).shape == (500, 1500, 3)
