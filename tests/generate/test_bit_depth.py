"""Deep images into stores: 12-bit data in 16-bit PNGs is scaled by the range it uses, the
scale is recorded, and a store with almost no anomalies says so (issue 11, kind 3)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from nsa.generate import shards
from nsa.generate.anomaly_rate import check_anomaly_rate
from nsa.generate.generation import generate_store
from nsa.generate.images import decode_image, read_images, resize_square, to_uint8
from nsa.generate.presets import resolve_settings
from nsa.generate.sources import folder_source
from nsa.generate.synthesis import make_example, prepare_sources

SIZE = 64


def _textures(folder: Path, wide: bool, n: int = 8) -> list[Path]:
    """``n`` striped grey textures, as 8-bit PNGs or as the same values in 12 bits
    (0..4095, with 4095 used once) in 16-bit PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    files = []
    for i in range(n):
        image = np.clip(128 + 60 * np.sin(xx / (3 + i) + yy / 5) + rng.normal(0, 15, yy.shape),
                        0, 255).astype(np.uint8)
        image[0, 0] = 255
        pixels = np.rint(image * (4095 / 255)).astype(np.uint16) if wide else image
        files.append(folder / f"{i}.png")
        assert cv2.imwrite(str(files[-1]), pixels)
    return files


def _anomalous_fraction(images: list[np.ndarray], n: int = 64) -> float:
    settings = resolve_settings("elpv", {"size": SIZE})
    sources = prepare_sources(images, settings)
    return float(np.mean([make_example(sources, settings, 0, i).image_label for i in range(n)]))


def test_12_bit_data_in_16_bit_pngs_gives_the_examples_its_8_bit_copy_gives(tmp_path):
    eight = read_images(_textures(tmp_path / "8", wide=False), SIZE)
    deep_files = _textures(tmp_path / "16", wide=True)
    deep = read_images(deep_files, SIZE)
    assert deep.white_level == 4095 and eight.white_level is None
    for a, b in zip(deep.images, eight.images, strict=True):
        assert np.array_equal(a, b)  # v -> rint(v * 4095/255) -> back to v exactly
    fraction = _anomalous_fraction(deep.images)
    assert fraction == _anomalous_fraction(eight.images) and fraction > 0.5
    # what the old scaling by 65535 did: 16 grey levels, hardly any anomaly
    old = [resize_square(to_uint8(decode_image(f)), SIZE) for f in deep_files]
    assert len(np.unique(np.stack(old))) <= 16 and _anomalous_fraction(old) < 0.1


def test_nsa_gen_records_the_white_level_and_warns_about_a_store_without_anomalies(
    tmp_path, local_ray, capsys
):
    _textures(tmp_path / "16", wide=True)
    store = generate_store(folder_source(tmp_path / "16"), tmp_path / "deep.zarr", n=16,
                           preset="elpv", size=SIZE, chunk_size=8, progress=False)
    opened = shards.open_store(store)
    assert opened.attrs["settings"]["white_level"] == 4095
    assert opened.group["images"][:].max() == 255
    assert opened.group["labels"][:].mean() > 0.5 and "warnings" not in opened.attrs
    assert "warning" not in capsys.readouterr().err

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        assert cv2.imwrite(str(flat / f"{i}.png"), np.full((SIZE, SIZE), 90, np.uint8))
    store = generate_store(folder_source(flat), tmp_path / "flat.zarr", n=8, preset="elpv",
                           size=SIZE, chunk_size=8, progress=False)
    opened = shards.open_store(store)
    assert "white_level" not in opened.attrs["settings"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("warning: ") and "0 of 8 examples" in err[0]
    assert all(line.startswith("  ") for line in err[1:]) and len(err) == 4
    assert "8 stayed normal, most often for the reason 'no-change'" in err[1]
    assert err[2].startswith("  likely cause: ") and "contrast" in err[2]
    assert opened.attrs["warnings"] == [
        "; ".join([err[0].removeprefix(f"warning: {store}: "),
                   *(line[2:] for line in err[1:])])]
    info = dict(line.split(":", 1) for line in shards.format_summary(opened.summary())
                .splitlines())
    assert info["warnings"].strip() == opened.attrs["warnings"][0]


def test_the_anomaly_rate_check_is_quiet_at_half_and_above(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    shards.create_store(path, n=4, height=8, width=8, channels=1, chunk_size=4,
                        attrs={"reasons": ["", "no-object", "no-placement",
                                           "region-too-small", "no-change"]})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    store.group["labels"][:] = [1, 1, 0, 0]
    assert check_anomaly_rate(store) is None
    store.group["labels"][:] = [1, 0, 0, 0]
    store.group["reason"][:] = [0, 2, 2, 1]
    message = check_anomaly_rate(store)
    assert "1 of 4 examples (25.0%)" in message and "'no-placement' (2 examples)" in message
    assert capsys.readouterr().err.count("warning: ") == 1
    assert shards.open_store(path, allow_incomplete=True).attrs["warnings"] == [message]


@pytest.mark.parametrize("dtype, value, white, expected", [
    (np.uint16, 4095, 4095, 255), (np.uint16, 5000, 4095, 255), (np.int32, -7, 100, 0),
    (np.uint16, 65535, None, 255), (np.float32, 0.5, None, 128),
])
def test_to_uint8_scales_by_the_white_level_and_clips(dtype, value, white, expected):
    assert to_uint8(np.full((2, 2, 1), value, dtype), white).max() == expected
