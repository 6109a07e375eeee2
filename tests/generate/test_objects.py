"""Object masks from (background brightness, threshold), cleaned by a 7x7 median."""

import numpy as np
from nsa.generate.objects import object_mask


def test_pixels_far_from_the_background_are_object():
    image = np.full((32, 32, 1), 200, np.uint8)
    image[8:24, 8:24] = 40
    mask = object_mask(image, (200, 60))
    assert mask.dtype == np.uint8 and mask.shape == (32, 32)
    assert mask[11:21, 11:21].all()  # the median filter only rounds the corners
    outside = np.ones((32, 32), bool)
    outside[8:24, 8:24] = False
    assert not mask[outside].any()


def test_threshold_applies_to_the_mean_over_channels():
    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0] = 90  # mean 30: exactly the threshold away from 0, so not object
    assert object_mask(image, (0, 30)).sum() == 0
    image[..., 1] = 3  # mean 31 > 30
    assert object_mask(image, (0, 30)).all()


def test_isolated_pixels_are_removed_by_the_median_filter():
    image = np.full((32, 32, 1), 20, np.uint8)
    image[5, 5] = image[20, 11] = 255
    assert object_mask(image, (20, 20)).sum() == 0
