"""The NSA network: a ResNet-18 encoder trained from scratch and a transposed-conv decoder.

Layout (docs/method.md §Model): torchvision's ResNet-18 up to ``layer4`` (stride 32, 512 channels),
1x1 convolutions 512 -> 256 -> 128 with ReLU, three transposed residual blocks
128 -> 64 -> 32 -> 16 (each x2), a bilinear x2 upsample and a final stride-2 upsampling
7x7 layer to one channel at the input resolution. No skip connections. ``forward``
returns logits; ``sigmoid`` of them is the anomaly map.

Decoder artefacts. The authors' decoder used 3x3 / 7x7 stride-2 transposed convolutions
with ``output_padding``: a kernel that the stride does not divide gives neighbouring output
pixels different numbers of kernel taps (a checkerboard), and the padded last row/column
gets fewer taps than the first (a fixed bright edge pixel, see docs/method.md §Deviations). Here:

- the blocks' transposed convolutions are 4x4 stride 2 padding 1: the output is exactly
  twice the input with no ``output_padding``, every interior pixel gets the same number
  of taps and the borders mirror each other; their shortcut is bilinear upsampling + 1x1
  convolution (a 1x1 stride-2 transposed convolution leaves every other pixel at its
  bias);
- the final stride-2 layer, the one that writes the map, is a *resize-convolution*:
  bilinear x2 then a 7x7 convolution, instead of zero-insertion x2 then 7x7 (which is
  what a transposed convolution is). Even with equal tap counts, a transposed
  convolution's four parity sub-kernels learn different sums; on the tiny test stores
  after 32 steps the period-2 component of the logits was 0.126 (std 1.42) with an
  8x8 transposed final layer and 0.0096 (std 1.78) with this one.

``NSAModel(..., final_layer="transposed")`` (``nsa-train --final-layer transposed``) ends
the decoder with the release's final layer instead: a 7x7 stride-2 transposed
convolution, padding 3, ``output_padding`` 1, no bias (:func:`make_final_layer`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from nsa.generate.presets import MODEL_STRIDE
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet18


class TransposedResidualBlock(nn.Module):
    """Upsample x2: 4x4 stride-2 transposed conv -> BN -> ReLU -> 3x3 conv -> BN, plus
    a bilinear + 1x1 conv shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.up(x)))
        out = self.bn2(self.conv(out))
        return F.relu(out + self.shortcut(x))


class FinalUpsample(nn.Sequential):
    """The last x2 to the input resolution and one output channel: bilinear x2 then a
    7x7 convolution, so the map has no period-2 pattern (see the module docstring)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, 1, kernel_size=7, padding=3),
        )


#: The decoder's last x2 layer (``nsa-train --final-layer``): ``resize-conv`` is
#: :class:`FinalUpsample`; ``transposed`` is the authors' release's transposed convolution.
FinalLayer = Literal["resize-conv", "transposed"]
FINAL_LAYERS: tuple[str, ...] = get_args(FinalLayer)
DEFAULT_FINAL_LAYER: FinalLayer = "resize-conv"


def make_final_layer(final_layer: str, in_channels: int) -> nn.Module:
    """The last x2 layer, (N, ``in_channels``, H, W) -> (N, 1, 2H, 2W) logits.

    ``resize-conv``: :class:`FinalUpsample`. ``transposed``: the release's
    ``ConvTranspose2d(in_channels, 1, kernel_size=7, stride=2, padding=3,
    output_padding=1, bias=False)``. Raises ValueError for another name.
    """
    if final_layer == "resize-conv":
        return FinalUpsample(in_channels)
    if final_layer == "transposed":
        return nn.ConvTranspose2d(in_channels, 1, kernel_size=7, stride=2, padding=3,
                                  output_padding=1, bias=False)
    raise ValueError(f"final_layer must be one of {', '.join(FINAL_LAYERS)}, not {final_layer!r}")


class NSAModel(nn.Module):
    """NSA encoder-decoder for ``in_channels`` (1 or 3) channel images in [0, 1].

    ``forward(x)`` with x of shape (N, C, H, W), H and W multiples of 32, returns
    logits of shape (N, 1, H, W). ``final_layer`` names the decoder's last layer
    (:data:`FINAL_LAYERS`, see :func:`make_final_layer`). Raises ValueError for another
    channel count or final layer.
    """

    def __init__(self, in_channels: int, final_layer: str = DEFAULT_FINAL_LAYER) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, not {in_channels}")
        self.in_channels = in_channels
        self.final_layer = final_layer
        backbone = resnet18(weights=None)
        if in_channels != 3:
            old = backbone.conv1
            backbone.conv1 = nn.Conv2d(
                in_channels, old.out_channels, kernel_size=old.kernel_size,
                stride=old.stride, padding=old.padding, bias=False,
            )
        self.encoder = nn.Sequential(
            backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
            backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4,
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(512, 256, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 128, kernel_size=1), nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            TransposedResidualBlock(128, 64),
            TransposedResidualBlock(64, 32),
            TransposedResidualBlock(32, 16),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            make_final_layer(final_layer, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % MODEL_STRIDE or width % MODEL_STRIDE:
            raise ValueError(
                f"input sides must be multiples of {MODEL_STRIDE}, got {height}x{width}")
        return self.decoder(self.bottleneck(self.encoder(x)))
