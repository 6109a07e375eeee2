"""The NSA model: shapes, channels, and a decoder without checkerboard or edge artefacts."""

from __future__ import annotations

import pytest
import torch
from nsa.train.model import FinalUpsample, NSAModel
from torch import nn


@pytest.mark.parametrize("channels", [1, 3])
def test_logits_have_the_input_resolution(channels):
    model = NSAModel(channels).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, 64, 32)).shape == (2, 1, 64, 32)


def test_encoder_starts_from_untrained_resnet18_with_the_store_channels():
    model = NSAModel(1)
    assert model.encoder[0].in_channels == 1
    assert model.encoder[0].kernel_size == (7, 7) and model.encoder[0].stride == (2, 2)
    assert [len(stage) for stage in model.encoder[4:]] == [2, 2, 2, 2]


def test_sides_that_are_not_multiples_of_32_are_refused():
    with pytest.raises(ValueError, match="multiples of 32"):
        NSAModel(1)(torch.rand(1, 1, 40, 32))


def _taps(layer: nn.ConvTranspose2d, side: int = 8) -> torch.Tensor:
    """How many kernel taps reach each output pixel: all-ones weights on all-ones input."""
    probe = nn.ConvTranspose2d(1, 1, layer.kernel_size, layer.stride, layer.padding,
                               layer.output_padding, bias=False)
    nn.init.ones_(probe.weight)
    with torch.no_grad():
        return probe(torch.ones(1, 1, side, side))[0, 0]


def test_decoder_transposed_convs_give_equal_taps_inside_and_mirrored_borders():
    layers = [m for m in NSAModel(1).decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(layers) == 3
    for layer in layers:
        taps = _taps(layer)
        assert taps.shape == (16, 16)
        assert torch.all(taps[1:-1, 1:-1] == taps[1:-1, 1:-1].max())
        assert torch.equal(taps, taps.flip(0, 1))


def test_final_layer_maps_a_constant_to_a_constant_away_from_the_border():
    final = FinalUpsample(4)
    with torch.no_grad():
        out = final(torch.ones(1, 4, 8, 8))[0, 0]
    inner = out[4:-4, 4:-4]
    assert out.shape == (16, 16)
    assert torch.allclose(inner, inner[0, 0].expand_as(inner), atol=1e-6)
