"""Tiny real shard stores for the trainer's tests, written with the store module itself.

Each example is a smooth random background with one brighter or darker rectangle whose
label map is 1 inside it: learnable in a few steps, so "the loss falls" is testable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nsa.generate import shards
from nsa.generate.presets import resolve_settings


def store_settings(augment: dict | None = None) -> dict:
    """The ELPV preset's settings as a store records them, with its augmentation replaced
    by ``augment`` (no augmentation by default, so tests can recognise examples)."""
    settings = resolve_settings("elpv")
    plain = {"rotate": 0, "center_crop": None, "crop": None, "vflip": False, "hflip": False}
    settings["augment"] = {**plain, **(augment or {})}
    return settings


def write_store(
    path: Path,
    *,
    n: int = 64,
    size: int = 32,
    channels: int = 1,
    chunk_size: int = 8,
    seed: int = 0,
    augment: dict | None = None,
    complete: bool = True,
) -> Path:
    """Write a complete (or, with ``complete=False``, unfinished) store of ``n`` examples,
    whose settings ask for the ``augment`` keywords (none by default)."""
    settings = store_settings(augment)
    rng = np.random.default_rng(seed)
    group_attrs = {"preset": settings["preset"], "settings": settings, "seed": seed,
                   "source": {"kind": "test", "description": "synthetic", "files": []},
                   "reasons": [""]}
    shards.create_store(path, n=n, height=size, width=size, channels=channels,
                        chunk_size=chunk_size, attrs=group_attrs)
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    for index in range(store.n_chunks):
        sl = store.chunk_slice(index)
        m = sl.stop - sl.start
        base = rng.uniform(60, 120, (m, 1, 1, channels))
        images = base + rng.normal(0, 8, (m, size, size, channels))
        labels = np.zeros((m, size, size), np.float32)
        boxes = np.full((m, shards.MAX_PATCHES, 4), -1, np.int16)
        for i in range(m):
            h, w = rng.integers(size // 6, size // 2, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            images[i, y:y + h, x:x + w] += rng.choice([-50, 70])
            labels[i, y:y + h, x:x + w] = 1.0
            boxes[i, 0] = (y, x, y + h, x + w)
        data = shards.ChunkData(
            images=np.clip(images, 0, 255).astype(np.uint8),
            masks=np.stack([shards.label_to_mask(label) for label in labels]),
            labels=np.ones(m, np.uint8),
            dest_index=np.zeros(m, np.int32), source_index=np.ones(m, np.int32),
            boxes=boxes, reason=np.zeros(m, np.uint8),
        )
        store.write_chunk(index, data)
    if complete:
        store.mark_complete()
    return path


@pytest.fixture(scope="session")
def make_store():
    """``write_store`` (tests import no conftest under importlib mode)."""
    return write_store


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    """64 grayscale 32x32 examples in chunks of 8, no augmentation."""
    return write_store(tmp_path / "tiny.zarr")
