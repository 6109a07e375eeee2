"""Light online augmentation, applied identically to an image and its label map.

Follows the preset's ``augment`` settings (docs/method.md §Presets): a random rotation of up to
``rotate`` degrees, a centre crop of ``center_crop``, a random crop of ``crop`` inside it,
and random vertical / horizontal flips. Random parameters are drawn on the CPU from a
numpy Generator the caller passes in (one row per example), and applied by
:func:`apply_augment` with ``torchvision.transforms.v2.functional`` on tensors on any
device. So the same seed gives the same parameters whether the work is then done in a
DataLoader worker (CPU) or on the GPU, and image and label map share one transform
because they are stacked into one tensor.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from nsa.generate.presets import Augment, parse_augment
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from nsa.errors import UserError

#: Columns of a parameter row: angle (degrees), crop top, crop left, vflip, hflip.
PARAM_COLUMNS = ("angle", "top", "left", "vflip", "hflip")


class AugmentSpec(Augment):
    """The augmentation of one store (its ``settings["augment"]``, the one typed
    :class:`~nsa.generate.presets.Augment`) resolved against its image size."""

    height: int
    width: int

    @classmethod
    def from_settings(cls, settings: dict[str, Any], height: int, width: int) -> AugmentSpec:
        """Read ``settings["augment"]`` (missing keys mean "off") and check the sizes fit.

        Raises :class:`~nsa.generate.presets.SettingsError` naming a malformed key and
        :class:`UserError` when a crop does not fit ``height`` x ``width``.
        """
        augment = parse_augment(settings.get("augment"))
        spec = cls(height=height, width=width, **augment.model_dump())
        side = min(height, width)
        if spec.center_crop is not None and not 0 < spec.center_crop <= side:
            raise UserError(f"augment center_crop {spec.center_crop} does not fit {height}x{width}")
        if spec.crop is not None and not 0 < spec.crop <= (spec.center_crop or side):
            raise UserError(
                f"augment crop {spec.crop} does not fit inside "
                f"{spec.center_crop or f'{height}x{width}'}"
            )
        return spec

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the augmented example: what the model sees."""
        side = self.crop or self.center_crop
        return (side, side) if side else (self.height, self.width)

    def _window(self) -> tuple[int, int, int, int]:
        """Top, left, height, width of the centre-crop window the random crop moves in."""
        if self.center_crop is None:
            return 0, 0, self.height, self.width
        cc = self.center_crop
        return round((self.height - cc) / 2), round((self.width - cc) / 2), cc, cc

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw parameters for ``n`` examples: float64 rows in ``PARAM_COLUMNS`` order."""
        top0, left0, wh, ww = self._window()
        out_h, out_w = self.output_size
        params = np.zeros((n, len(PARAM_COLUMNS)), dtype=np.float64)
        if self.rotate:
            params[:, 0] = rng.uniform(-self.rotate, self.rotate, n)
        params[:, 1] = top0 + rng.integers(0, wh - out_h + 1, n)
        params[:, 2] = left0 + rng.integers(0, ww - out_w + 1, n)
        if self.vflip:
            params[:, 3] = rng.random(n) < 0.5
        if self.hflip:
            params[:, 4] = rng.random(n) < 0.5
        return params

    def eval_params(self, n: int) -> np.ndarray:
        """Parameters of the deterministic view (centred crop, no rotation or flip)."""
        top0, left0, wh, ww = self._window()
        out_h, out_w = self.output_size
        params = np.zeros((n, len(PARAM_COLUMNS)), dtype=np.float64)
        params[:, 1] = top0 + (wh - out_h) // 2
        params[:, 2] = left0 + (ww - out_w) // 2
        return params


def apply_augment(
    stacked: torch.Tensor, params: torch.Tensor | np.ndarray, out_size: tuple[int, int]
) -> torch.Tensor:
    """Augment a batch of image+label stacks with one parameter row per example.

    ``stacked`` is (N, C+1, H, W) (image channels then the label map), uint8 or float,
    on any device; returns (N, C+1, out_h, out_w) of the same dtype and device. Rotation
    is bilinear about the image centre with zero fill, as torchvision's RandomRotation.
    On the CPU, rotation and crop are one OpenCV warp straight into the crop window (7x
    faster than rotating the whole tensor, which made RGB loading the slow part of a
    DataLoader worker); on other devices torchvision rotates on the device.
    """
    params = np.asarray(params.cpu() if isinstance(params, torch.Tensor) else params)
    out_h, out_w = out_size
    results = []
    for example, (angle, top, left, vflip, hflip) in zip(stacked, params, strict=True):
        if angle and example.device.type == "cpu":
            example = _rotate_crop_cpu(example, float(angle), int(top), int(left), out_size)
        else:
            if angle:
                example = TF.rotate(example, float(angle),
                                    interpolation=InterpolationMode.BILINEAR)
            example = example[:, int(top): int(top) + out_h, int(left): int(left) + out_w]
        if vflip:
            example = TF.vertical_flip(example)
        if hflip:
            example = TF.horizontal_flip(example)
        results.append(example)
    return torch.stack(results)


def _rotate_crop_cpu(example: torch.Tensor, angle: float, top: int, left: int,
                     out_size: tuple[int, int]) -> torch.Tensor:
    """Rotate (C, H, W) by ``angle`` degrees counter-clockwise about the image centre and
    cut the (top, left, out_h, out_w) window, in one bilinear warp with zero fill."""
    channels, height, width = example.shape
    out_h, out_w = out_size
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    matrix[:, 2] -= (left, top)
    hwc = np.ascontiguousarray(example.permute(1, 2, 0).numpy())
    warped = cv2.warpAffine(hwc, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return torch.from_numpy(warped.reshape(out_h, out_w, channels)).permute(2, 0, 1)
