"""What the model sees at test time (docs/evaluation.md) and how images are scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nsa.evaluate.inference import Geometry, anomaly_maps, image_score, resize_map, resize_mask
from nsa.generate.presets import resolve_settings
from nsa.train.model import NSAModel

from nsa.errors import UserError


def config_for(preset: str, **overrides) -> dict:
    return {"settings": resolve_settings(preset, overrides or None), "channels": 3}


def test_objects_are_seen_through_the_centre_224_crop_of_256() -> None:
    assert Geometry.from_config(config_for("bottle")) == Geometry(side=256, crop=224)
    assert Geometry.from_config(config_for("chestxray")) == Geometry(side=256, crop=224)


def test_textures_and_elpv_cells_are_seen_whole_at_256() -> None:
    assert Geometry.from_config(config_for("carpet")) == Geometry(side=256, crop=None)
    assert Geometry.from_config(config_for("elpv")) == Geometry(side=256, crop=None)


def test_a_size_the_model_cannot_take_is_refused() -> None:
    config = {"settings": {"kind": "texture", "size": 100, "augment": {"crop": None}}}
    with pytest.raises(UserError, match="multiple of 32"):
        Geometry.from_config(config)


def test_object_maps_are_zero_outside_the_centre_crop() -> None:
    torch.manual_seed(0)
    model = NSAModel(3).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    maps = anomaly_maps(model, images, Geometry(side=64, crop=32), "cpu")
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    inside = np.zeros((64, 64), bool)
    inside[16:48, 16:48] = True
    assert np.all(maps[:, ~inside] == 0)
    assert np.all((maps[:, inside] > 0) & (maps[:, inside] < 1))


def test_whole_image_maps_match_the_model_on_the_whole_image() -> None:
    torch.manual_seed(0)
    model = NSAModel(1).eval()
    images = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 1), dtype=np.uint8)
    maps = anomaly_maps(model, images, Geometry(side=32, crop=None), "cpu")
    with torch.no_grad():
        direct = torch.sigmoid(model(torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0))
    np.testing.assert_allclose(maps[0], direct[0, 0].numpy(), rtol=1e-6)


def test_image_score_is_the_mean_for_nsa_and_the_max_for_mvtec() -> None:
    anomaly_map = np.array([[0.0, 0.2], [0.2, 0.6]], np.float32)
    assert image_score(anomaly_map, "nsa") == pytest.approx(0.25)
    assert image_score(anomaly_map, "mvtec") == pytest.approx(0.6)
    with pytest.raises(UserError, match="--protocol"):
        image_score(anomaly_map, "best")


def test_resized_masks_keep_pixels_at_least_half_defective() -> None:
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = True  # a full 2x2 block: one pixel at 4x4
    mask[4, 4] = True  # a quarter of a block: dropped
    small = resize_mask(mask, 4)
    assert small.sum() == 1 and small[0, 0]


def test_maps_are_resized_to_the_native_size_for_the_mvtec_protocol() -> None:
    assert resize_map(np.ones((4, 4), np.float32), (6, 10)).shape == (6, 10)
