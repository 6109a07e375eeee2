"""Tiny real inputs for nsa-eval's tests: a trained run and labelled image folders.

The run is trained for a few steps by the real trainer on a real shard store (written with
the store module), once per session: the tests check what nsa-eval does with a model, not
how good the model is. Test images are PNGs written here: a grey textured background,
with a bright square in defective images, whose mask is written beside them.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from nsa.generate import shards
from nsa.train.trainer import TrainConfig, train

SIDE = 64  # the run's image side; the model sees the centre 32 px crop (kind "object")


def run_settings() -> dict:
    """Preset-shaped settings as a store records them: a tiny object preset."""
    return {"preset": "tiny-object", "kind": "object", "unaligned": False, "size": SIDE,
            "augment": {"rotate": 0, "center_crop": None, "crop": 32, "vflip": False,
                        "hflip": False},
            "epochs": 1}


def write_training_store(path: Path, n: int = 16, chunk_size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    settings = run_settings()
    shards.create_store(
        path, n=n, height=SIDE, width=SIDE, channels=3, chunk_size=chunk_size,
        attrs={"preset": settings["preset"], "settings": settings, "seed": 0,
               "source": {"kind": "test", "description": "synthetic", "files": []},
               "reasons": [""]},
    )
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    for index in range(store.n_chunks):
        rows = store.chunk_slice(index)
        m = rows.stop - rows.start
        images = rng.integers(60, 120, (m, SIDE, SIDE, 3)).astype(np.uint8)
        labels = np.zeros((m, SIDE, SIDE), np.float32)
        boxes = np.full((m, shards.MAX_PATCHES, 4), -1, np.int16)
        for i in range(m):
            y, x = rng.integers(16, 40, 2)
            images[i, y : y + 8, x : x + 8] = 230
            labels[i, y : y + 8, x : x + 8] = 1.0
            boxes[i, 0] = (y, x, y + 8, x + 8)
        store.write_chunk(index, shards.ChunkData(
            images=images, masks=np.stack([shards.label_to_mask(lab) for lab in labels]),
            labels=np.ones(m, np.uint8), dest_index=np.zeros(m, np.int32),
            source_index=np.ones(m, np.int32), boxes=boxes, reason=np.zeros(m, np.uint8),
        ))
    store.mark_complete()
    return path


def _train_run(base: Path, final_layer: str = "resize-conv") -> Path:
    """A run directory of nsa-train after two optimiser steps on 32 px crops."""
    store = write_training_store(base / "train.zarr")
    return train(TrainConfig(
        shards=[str(store)], out=str(base / "run"), steps=2, batch_size=8, device="cpu",
        threads=1, loader_workers=0, checkpoint_every=100, log_every=1, predictions=1,
        progress=False, final_layer=final_layer,
    ))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of nsa-train after two optimiser steps on 32 px crops."""
    return _train_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def transposed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run with ``--final-layer transposed`` (the release's final layer)."""
    return _train_run(tmp_path_factory.mktemp("transposed-run"), "transposed")


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def _sample_image(seed: int, side: int = 80, defect: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(RGB-ish uint8 image, uint8 0/255 mask) with a bright square when ``defect``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (side, side, 3)).astype(np.uint8)
    mask = np.zeros((side, side), np.uint8)
    if defect:
        y, x = rng.integers(side // 4, side // 2, 2)
        image[y : y + side // 6, x : x + side // 6] = 230
        mask[y : y + side // 6, x : x + side // 6] = 255
    return image, mask


def _make_mvtec(
    root: Path, category: str = "widget", n_good: int = 3,
    defects: dict[str, int] | None = None, side: int = 80,
) -> Path:
    """An MVTec-AD-layout category: test/good, test/<defect>/, ground_truth/<defect>/."""
    defects = {"scratch": 2, "dent": 2} if defects is None else defects
    base = root / category
    seed = zlib.crc32(category.encode()) % 10_000 * 1_000  # categories differ
    for i in range(n_good):
        _write_png(base / "test" / "good" / f"{i:03d}.png", _sample_image(seed + i, side)[0])
    for k, (defect, count) in enumerate(defects.items()):
        for i in range(count):
            image, mask = _sample_image(seed + 100 * (k + 1) + i, side, defect=True)
            _write_png(base / "test" / defect / f"{i:03d}.png", image)
            _write_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture
def write_png():
    """Factory: write_png(path, pixels) writes a PNG (creating folders) and returns path."""
    return _write_png


@pytest.fixture
def sample_image():
    """Factory: sample_image(seed, side=80, defect=False) -> (image, 0/255 mask)."""
    return _sample_image


@pytest.fixture(scope="session")
def make_mvtec():
    """Factory: make_mvtec(root, category="widget", n_good=3, defects=..., side=80)."""
    return _make_mvtec
