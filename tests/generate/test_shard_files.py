"""Whole shard files encoded by nsa.generate.shard_files hold exactly zarr's own bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from nsa.generate import shards
from nsa.generate.shard_files import shard_encoder

N, CHUNK, SHARD_CHUNKS = 40, 8, 2  # shards of 16 examples: 2 whole, 1 of 8 (partial)
ATTRS = {"preset": "elpv", "seed": 3, "reasons": ["", "no-change"],
         "source": {"kind": "folder", "description": "d", "files": []}}


def _data(rows: slice, side: int, channels: int) -> shards.ChunkData:
    """Examples ``rows`` with varied values in every array (seeded by the first row)."""
    rng = np.random.default_rng(rows.start)
    m = rows.stop - rows.start
    ramp = np.linspace(0, 200, side, dtype=np.float32)[None, None, :, None]
    return shards.ChunkData(
        images=(rng.integers(0, 40, (m, side, side, channels)) + ramp).astype(np.uint8),
        masks=np.where(rng.random((m, side, side, 1)) < 0.1, 255, 0).astype(np.uint8),
        labels=rng.integers(0, 2, m).astype(np.uint8),
        dest_index=rng.integers(-1, 400, m).astype(np.int32),
        source_index=rng.integers(-1, 70_000, m).astype(np.int32),
        boxes=rng.integers(-1, 300, (m, shards.MAX_PATCHES, 4)).astype(np.int16),
        reason=rng.integers(0, 3, m).astype(np.uint8))


def _files(store: Path) -> dict[str, bytes]:
    return {str(f.relative_to(store)): f.read_bytes()
            for f in sorted(store.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("channels", [1, 3])
def test_write_shard_writes_the_bytes_zarr_writes(tmp_path, channels):
    side = 12
    paths = {way: tmp_path / f"{way}.zarr" for way in ("ours", "zarr")}
    for path in paths.values():
        shards.create_store(path, n=N, height=side, width=side, channels=channels,
                            chunk_size=CHUNK, shard_chunks=SHARD_CHUNKS, attrs=ATTRS)
    ours = shards.open_store(paths["ours"], allow_incomplete=True, mode="r+")
    theirs = shards.open_store(paths["zarr"], allow_incomplete=True, mode="r+")
    for shard in range(ours.n_shards):
        rows = ours.shard_slice(shard)
        data = _data(rows, side, channels)
        ours.write_shard(shard, data)
        for name in shards.EXAMPLE_ARRAYS:  # zarr's own write of the same rows
            theirs.array(name)[rows] = getattr(data, name)
        theirs.array("checksums")[ours.shard_chunk_range(shard).start:
                                  ours.shard_chunk_range(shard).stop] = \
            ours.checksums()[ours.shard_chunk_range(shard).start:
                             ours.shard_chunk_range(shard).stop]
    mine, zarrs = _files(paths["ours"]), _files(paths["zarr"])
    assert mine.keys() == zarrs.keys()
    assert [name for name in mine if mine[name] != zarrs[name]] == []
    assert shards.verify_store(paths["ours"]) == N // CHUNK
    back = shards.open_store(paths["ours"], allow_incomplete=True).read_shard(1)
    assert np.array_equal(back.images, _data(slice(16, 32), side, channels).images)


def test_every_example_array_of_a_new_store_is_encoded_here_and_the_checksums_by_zarr(
        tmp_path):
    shards.create_store(tmp_path / "s.zarr", n=N, height=8, width=8, channels=1,
                        chunk_size=CHUNK, shard_chunks=SHARD_CHUNKS, attrs=ATTRS)
    store = shards.open_store(tmp_path / "s.zarr", allow_incomplete=True, mode="r+")
    for name in shards.EXAMPLE_ARRAYS:
        encoder = shard_encoder(store.array(name))
        assert encoder is not None, name
        assert encoder.shard_shape[0] == CHUNK * SHARD_CHUNKS
        assert encoder.chunk_rows == CHUNK
    assert shard_encoder(store.array("checksums")) is None  # not sharded


@pytest.mark.parametrize("layout", [
    {"shards": (16,), "chunks": (8,), "compressors": zarr.codecs.ZstdCodec()},
    {"shards": None, "chunks": (8,)},
    {"shards": (16,), "chunks": (8,), "dtype": ">i4"},
])
def test_other_layouts_are_left_to_zarr(tmp_path, layout):
    options = {"shape": (32,), "dtype": "int32", **layout}
    array = zarr.create_array(str(tmp_path / "a.zarr"), **options)
    assert shard_encoder(array) is None


def test_a_shard_of_another_shape_or_dtype_is_refused(tmp_path):
    shards.create_store(tmp_path / "s.zarr", n=N, height=8, width=8, channels=1,
                        chunk_size=CHUNK, shard_chunks=SHARD_CHUNKS, attrs=ATTRS)
    store = shards.open_store(tmp_path / "s.zarr", allow_incomplete=True, mode="r+")
    encoder = shard_encoder(store.array("dest_index"))
    assert encoder is not None
    with pytest.raises(ValueError, match="a shard is"):
        encoder.encode(np.zeros(15, np.int32))
    with pytest.raises(ValueError, match="a shard is"):
        encoder.encode(np.zeros(16, np.int64))


def test_a_shard_file_encoded_into_a_used_buffer_is_the_one_encoded_anew(tmp_path):
    shards.create_store(tmp_path / "s.zarr", n=N, height=12, width=12, channels=1,
                        chunk_size=CHUNK, shard_chunks=SHARD_CHUNKS, attrs=ATTRS)
    encoder = shard_encoder(shards.open_store(tmp_path / "s.zarr", allow_incomplete=True)
                            .array("images"))
    buffer = np.full(encoder.max_bytes, 7, np.uint8)
    noisy, flat = _data(slice(0, 16), 12, 1).images, np.zeros((16, 12, 12, 1), np.uint8)
    assert len(encoder.encode(noisy, buffer)) > len(encoder.encode(flat))
    again = encoder.encode(flat, buffer)  # shorter than what the buffer held before
    assert bytes(again) == bytes(encoder.encode(flat))
    with pytest.raises(ValueError, match="needs"):
        encoder.encode(flat, buffer[:-1])
