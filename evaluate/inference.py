"""Run a trained model on images the way the NSA paper does, and score the maps.

What the model sees follows the run's preset (``settings`` in its config.json), as
``docs/evaluation.md`` states: every image is resized to a square ``side``; objects and
chest X-rays (kinds ``object``, ``xray``) see the centre ``crop`` the trainer's random
crops were taken around and their map is zero-padded back to ``side``; textures and ELPV
cells see the whole image (textures at ``side`` = their training crop, 256 for MVTec).

Two protocols (``docs/evaluation.md``): ``nsa`` scores an image by the mean of its
``side``-sized map (the paper's figures); ``mvtec`` resizes the map bilinearly to the
ground truth's native resolution and scores an image by the map's maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from nsa.generate.presets import MODEL_STRIDE, evaluation_view, parse_augment
from nsa.train.checkpoint import load_model
from nsa.train.devices import resolve_device

from nsa.errors import UserError

PROTOCOLS = ("nsa", "mvtec")


@dataclass(frozen=True)
class Geometry:
    """How test images are presented: resized to ``side`` squared, centre ``crop`` or all."""

    side: int
    crop: int | None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Geometry:
        """The geometry of a training run's preset, checked against the model's stride."""
        settings = config.get("settings") or {}
        size = settings.get("size") or config.get("height")
        if size is None:
            raise UserError("the run's config.json records no image size (settings.size)")
        side, crop = evaluation_view(settings.get("kind"), int(size),
                               parse_augment(settings.get("augment")))
        seen = crop or side
        if seen % MODEL_STRIDE:
            raise UserError(
                f"the run's images are {seen} px, not a multiple of {MODEL_STRIDE}: "
                "the model cannot take them"
            )
        return cls(side=side, crop=crop)

    def record(self) -> dict[str, Any]:
        return {"side": self.side, "crop": self.crop}


def resize_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """Bool (H, W) ground truth at (side, side): a pixel is defective when at least half
    of the area it covers is."""
    area = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    return area >= 0.5


def resize_map(anomaly_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Float map resized bilinearly to ``shape`` (H, W), as the MVTec protocol asks."""
    if anomaly_map.shape == tuple(shape):
        return anomaly_map
    return cv2.resize(anomaly_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


@torch.no_grad()
def anomaly_maps(
    model: torch.nn.Module, images: np.ndarray, geometry: Geometry, device: str | torch.device
) -> np.ndarray:
    """Anomaly maps in [0, 1], float32 (N, side, side), for (N, side, side, C) uint8 images.

    Objects' maps are computed on the centre crop and are zero outside it.
    """
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    side, crop = geometry.side, geometry.crop
    top = (side - crop) // 2 if crop else 0
    if crop:
        batch = batch[:, :, top : top + crop, top : top + crop]
    maps = torch.sigmoid(model(batch))[:, 0].float().cpu().numpy()
    if not crop:
        return maps
    padded = np.zeros((len(images), side, side), dtype=np.float32)
    padded[:, top : top + crop, top : top + crop] = maps
    return padded


def check_finite_maps(maps: np.ndarray, model: str | Path, files: Sequence[Path]) -> None:
    """Refuse maps holding NaN or infinity (a diverged model): a UserError naming the run
    and the first image, instead of metrics computed from meaningless scores.

    ``maps`` (N, H, W) float; ``files`` the N images they are of.
    """
    finite = np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    if not finite.all():
        first = files[int(np.flatnonzero(~finite)[0])]
        raise UserError(
            f"{model}: the model's anomaly map of {first} holds NaN or infinite values "
            "(did training diverge?); nothing scored"
        )


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol: unknown {protocol!r} (choose {', '.join(PROTOCOLS)})")
    return protocol


def image_score(anomaly_map: np.ndarray, protocol: str) -> float:
    """The image's anomaly score: mean of the map (``nsa``) or its maximum (``mvtec``)."""
    if check_protocol(protocol) == "nsa":
        return float(anomaly_map.mean(dtype=np.float64))
    return float(anomaly_map.max())


@dataclass(frozen=True)
class LoadedRun:
    """A trained run ready for inference: the model on its device, how it sees images.

    ``white_level``: the pixel value its training images wider than 8 bits were scaled by
    (``settings.white_level`` of its stores; None when they were 8-bit), to be applied to
    test images alike (:func:`nsa.generate.images.read_image`).
    """

    net: torch.nn.Module
    config: dict[str, Any]
    geometry: Geometry
    channels: int
    device: torch.device
    white_level: int | None = None


def load_run(model: Any, device: str) -> LoadedRun:
    """Load the run directory ``model`` onto ``device`` (auto, cpu, cuda or cuda:N) for inference.

    Raises UserError naming the run when it is unusable, including a model whose weights
    hold NaN or infinity (training diverged): its maps would be meaningless.
    """
    torch_device = resolve_device(device)
    net, config = load_model(model, torch_device)
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(
                f"{model}: the model's weights hold NaN or infinite values ({name}); "
                "training diverged, so its anomaly maps would be meaningless"
            )
    white = (config.get("settings") or {}).get("white_level")
    return LoadedRun(net, config, Geometry.from_config(config), int(config["channels"]),
                     torch_device, int(white) if white is not None else None)
