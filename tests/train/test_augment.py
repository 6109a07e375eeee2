"""Augmentation: one transform for image and label, sizes and ranges from the preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nsa.train.augment import AugmentSpec, apply_augment

from nsa.errors import UserError

OBJECT = {"rotate": 5, "center_crop": 230, "crop": 224, "vflip": False, "hflip": False}
TEXTURE = {"rotate": 0, "center_crop": None, "crop": 256, "vflip": True, "hflip": False}


def test_objects_crop_224_and_textures_crop_256():
    assert AugmentSpec.from_settings({"augment": OBJECT}, 256, 256).output_size == (224, 224)
    assert AugmentSpec.from_settings({"augment": TEXTURE}, 264, 264).output_size == (256, 256)
    assert AugmentSpec.from_settings({}, 128, 128).output_size == (128, 128)


def test_random_crop_stays_inside_the_centre_crop():
    spec = AugmentSpec.from_settings({"augment": OBJECT}, 256, 256)
    params = spec.draw(np.random.default_rng(0), 2000)
    assert params[:, 1].min() == 13 and params[:, 1].max() == 13 + 6
    assert params[:, 2].min() == 13 and params[:, 2].max() == 13 + 6
    assert np.abs(params[:, 0]).max() <= 5 and np.abs(params[:, 0]).max() > 4


def test_flips_are_drawn_only_when_the_preset_asks():
    spec = AugmentSpec.from_settings({"augment": TEXTURE}, 264, 264)
    params = spec.draw(np.random.default_rng(0), 400)
    assert 0.3 < params[:, 3].mean() < 0.7
    assert not params[:, 4].any() and not params[:, 0].any()


def test_same_generator_seed_draws_the_same_parameters():
    spec = AugmentSpec.from_settings({"augment": OBJECT}, 256, 256)
    a = spec.draw(np.random.default_rng(7), 16)
    b = spec.draw(np.random.default_rng(7), 16)
    np.testing.assert_array_equal(a, b)


def test_image_and_label_get_the_same_transform():
    spec = AugmentSpec(height=64, width=64, rotate=5, center_crop=48, crop=32, vflip=True,
                       hflip=True)
    image = torch.randint(0, 256, (6, 1, 64, 64), dtype=torch.uint8)
    stacked = torch.cat([image, image], dim=1)  # label map identical to the image
    out = apply_augment(stacked, spec.draw(np.random.default_rng(1), 6), spec.output_size)
    assert out.shape == (6, 2, 32, 32)
    assert torch.equal(out[:, 0], out[:, 1])


def test_crop_is_a_plain_pixel_window_without_rotation():
    spec = AugmentSpec(height=64, width=64, crop=32)
    stacked = torch.randint(0, 256, (1, 2, 64, 64), dtype=torch.uint8)
    params = np.array([[0.0, 5, 9, 0, 0]])
    out = apply_augment(stacked, params, spec.output_size)
    assert torch.equal(out[0], stacked[0, :, 5:37, 9:41])


def test_crop_larger_than_the_image_is_refused():
    with pytest.raises(UserError, match="center_crop 230"):
        AugmentSpec.from_settings({"augment": OBJECT}, 128, 128)


def test_cpu_rotate_and_crop_matches_torchvision_rotation_then_crop():
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    stacked = torch.zeros(1, 4, 64, 64, dtype=torch.uint8)
    stacked[:, :, 20:44, 10:30] = 200
    params = np.array([[4.0, 6, 10, 0, 0]])
    ours = apply_augment(stacked, params, (48, 48))[0].float()
    rotated = TF.rotate(stacked[0], 4.0, interpolation=InterpolationMode.BILINEAR)
    reference = rotated[:, 6:54, 10:58].float()
    assert (ours - reference).abs().mean() < 0.2
    assert (ours - reference).abs().max() <= 4
