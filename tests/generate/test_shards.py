"""The shard store format: chunk and shard round trips, completeness, checksums, verify,
summary, format version, and what opening, info and verify read."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import xxhash
import zarr
from nsa.generate import shards
from nsa.generate.presets import resolve_settings
from nsa.train.data import open_training_stores
from zarr.storage import LocalStore

from nsa.errors import CheckFailed

N, CHUNK, SIDE = 10, 4, 8


def _chunk(store: shards.Store, index: int, fill: int) -> shards.ChunkData:
    size = store.chunk_slice(index).stop - store.chunk_slice(index).start
    boxes = np.full((size, shards.MAX_PATCHES, 4), -1, np.int16)
    boxes[:, 0] = (1, 2, 5, 6)
    return shards.ChunkData(
        images=np.full((size, SIDE, SIDE, 1), fill, np.uint8),
        masks=np.full((size, SIDE, SIDE, 1), 255, np.uint8),
        labels=np.ones(size, np.uint8),
        dest_index=np.arange(size, dtype=np.int32),
        source_index=np.arange(size, dtype=np.int32)[::-1].copy(),
        boxes=boxes,
        reason=np.zeros(size, np.uint8),
    )


def _store(tmp_path, written=(0, 1, 2)) -> shards.Store:
    path = tmp_path / "s.zarr"
    shards.create_store(path, n=N, height=SIDE, width=SIDE, channels=1, chunk_size=CHUNK,
                        attrs={"preset": "elpv", "seed": 3, "reasons": ["", "no-change"],
                               "source": {"kind": "folder", "description": "d", "files": []}})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    for index in written:
        store.write_chunk(index, _chunk(store, index, fill=10 + index))
    return store


def test_label_to_mask_round_trip_is_within_half_a_grey_level():
    label = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    back = shards.mask_to_label(shards.label_to_mask(label))[..., 0]
    assert np.abs(back - label).max() <= 0.5 / 255 + 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_to_mask_rounds_255_times_the_clipped_label_halves_to_even(dtype):
    """The stored mask is round(255 * clip(label, 0, 1)), halves to even, for every value:
    around each k + 1/2 (a few ulps either side), random values, and outside [0, 1]."""
    halves = (np.arange(255, dtype=dtype) + dtype(0.5)) / dtype(255)
    near, below, above = [halves], halves, halves
    for _ in range(3):
        below, above = np.nextafter(below, dtype(0)), np.nextafter(above, dtype(1))
        near += [below, above]
    values = np.concatenate([*near, np.random.default_rng(0).random(4096).astype(dtype),
                             np.array([-1e30, -0.5, -0.0, 0, 1, 1.5, 1e30, np.inf, -np.inf],
                                      dtype)])
    label = np.resize(values, (64, len(values) // 64 + 1)).astype(dtype)
    expected = np.rint(np.clip(label.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    exact = np.rint(np.clip(label, 0, 1) * dtype(255)).astype(np.uint8)  # in the dtype
    mask = shards.label_to_mask(label)
    assert mask.shape == (*label.shape, 1) and mask.dtype == np.uint8
    assert np.array_equal(mask[..., 0], exact)
    assert np.abs(mask[..., 0].astype(int) - expected).max() <= 1


def test_label_to_mask_in_a_window_zeroes_the_rest_of_a_used_row():
    label = np.zeros((12, 16), np.float32)
    label[3:7, 5:11] = np.random.default_rng(1).random((4, 6))
    row = np.full((12, 16, 1), 99, np.uint8)  # a shard row that held another example
    assert shards.label_to_mask(label, row, (2, 4, 8, 12)) is row
    assert np.array_equal(row, shards.label_to_mask(label))
    assert not shards.label_to_mask(label * 0, row, (0, 0, 0, 0)).any()  # all-zero label
    label[0, 0] = 1.0  # outside the window: the caller vouched it is 0, so it is not read
    assert shards.label_to_mask(label, row, (2, 4, 8, 12))[0, 0, 0] == 0


def test_written_chunk_reads_back_identically_including_the_short_last_chunk(tmp_path):
    store = _store(tmp_path)
    last = store.read_chunk(2)
    assert last.images.shape == (2, SIDE, SIDE, 1)
    assert np.array_equal(last.images, _chunk(store, 2, fill=12).images)
    assert store.written_chunks().tolist() == [True, True, True]


def test_label_maps_are_compressed_without_the_bit_shuffle_images_with_it(tmp_path):
    group = _store(tmp_path).group
    shuffles = {name: group[name].compressors[0].shuffle.value for name in ("images", "masks")}
    assert shuffles == {"images": "bitshuffle", "masks": "noshuffle"}


def test_incomplete_store_is_refused_unless_asked_for(tmp_path):
    _store(tmp_path)
    with pytest.raises(shards.StoreError, match="incomplete"):
        shards.open_store(tmp_path / "s.zarr")
    assert not shards.open_store(tmp_path / "s.zarr", allow_incomplete=True).complete


def test_verify_calls_an_interrupted_store_incomplete_not_damaged(tmp_path):
    _store(tmp_path, written=(0, 2))
    with pytest.raises(CheckFailed, match=r"incomplete, not damaged: 2 of 3 chunks written "
                                          r"and intact; .* --resume"):
        shards.verify_store(tmp_path / "s.zarr")


def test_verify_names_a_bad_chunk_of_an_interrupted_store(tmp_path):
    _store(tmp_path, written=(0, 2))
    chunk_file = tmp_path / "s.zarr" / "images" / "c" / "2" / "0" / "0" / "0"
    data = bytearray(chunk_file.read_bytes())
    data[-20:] = bytes(20)
    chunk_file.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match=r"1 of 3 chunks bad: chunk 2 "):
        shards.verify_store(tmp_path / "s.zarr")


def _rewrite_decodably(store: shards.Store, index: int) -> None:
    """Change one pixel of chunk ``index`` through zarr, leaving its checksum row: the
    chunk decodes, only its SHA-256 can tell."""
    group = zarr.open_group(str(store.path), mode="r+")
    images = group["images"][store.chunk_slice(index)]
    images[0, 3, 3, 0] += 1
    group["images"][store.chunk_slice(index)] = images
    assert np.array_equal(group["images"][store.chunk_slice(index)], images)


def test_verify_names_a_chunk_whose_decodable_bytes_differ_from_its_checksum(tmp_path):
    store = _store(tmp_path)
    store.mark_complete()
    _rewrite_decodably(store, 1)
    with pytest.raises(CheckFailed, match=r": 1 of 3 chunks bad: chunk 1 does not match its "
                                          r"checksum$"):
        shards.verify_store(tmp_path / "s.zarr")


def test_verify_passes_a_sound_store_and_counts_its_chunks(tmp_path):
    store = _store(tmp_path)
    store.mark_complete()
    assert shards.verify_store(tmp_path / "s.zarr") == 3


def test_summary_counts_written_examples_and_anomalies(tmp_path):
    store = _store(tmp_path, written=(0,))
    summary = store.summary()
    assert (summary["examples_written"], summary["anomalous"]) == (CHUNK, CHUNK)
    assert (summary["chunks_written"], summary["chunks"]) == (1, 3)
    assert "no (1 of 3 chunks written)" in shards.format_summary(summary)


def test_create_store_leaves_no_building_folder_and_refuses_an_existing_path(tmp_path):
    path = tmp_path / "s.zarr"
    shards.create_store(path, n=4, height=8, width=8, channels=1, chunk_size=2, attrs={})
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    assert not shards.open_store(path, allow_incomplete=True).complete
    with pytest.raises(shards.StoreError, match="already exists"):
        shards.create_store(path, n=4, height=8, width=8, channels=1, chunk_size=2, attrs={})


def test_create_store_clears_what_a_killed_creation_left(tmp_path):
    stale = tmp_path / ".s.zarr.creating-999999"
    (stale / "images").mkdir(parents=True)
    shards.create_store(tmp_path / "s.zarr", n=4, height=8, width=8, channels=1,
                        chunk_size=2, attrs={})
    assert not stale.exists()


def _edit_attrs(store: shards.Store, **changes) -> None:
    group = zarr.open_group(str(store.path), mode="r+", zarr_format=3)
    group.attrs.update(changes)


DAMAGES = {
    "checksums removed": (lambda s: shutil.rmtree(s.path / "checksums"),
                          "array 'checksums' is missing"),
    "n edited": (lambda s: _edit_attrs(s, n=12), "array 'images' has shape (10, 8, 8, 1)"),
    "n not a number": (lambda s: _edit_attrs(s, n="10"), "attribute 'n' is '10'"),
    "chunk_size edited": (lambda s: _edit_attrs(s, chunk_size=5),
                          "array 'images' has chunks (4, 8, 8, 1)"),
    "channels edited": (lambda s: _edit_attrs(s, channels=3),
                        "array 'images' has shape (10, 8, 8, 1)"),
    "settings edited": (lambda s: _edit_attrs(s, settings={"augment": 5}),
                        "attribute 'settings': setting 'augment' = 5"),
    "full settings edited": (
        lambda s: _edit_attrs(s, settings={**resolve_settings("elpv"), "num_patches": 9}),
        "setting 'num_patches' = 9"),
    "chunk_size zero": (lambda s: _edit_attrs(s, chunk_size=0),
                        "attribute 'chunk_size' is 0, not a positive integer"),
    "complete with chunks missing": (lambda s: _edit_attrs(s, complete=True),
                                     "marked complete but 1 of 3 chunks have no checksum"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_reader_names_the_damage_of_a_hand_edited_store_in_one_line(tmp_path, damage):
    store = _store(tmp_path, written=(0, 2))
    edit, expected = DAMAGES[damage]
    edit(store)
    for read in (lambda: shards.open_store(store.path, allow_incomplete=True),
                 lambda: shards.open_store(store.path)):
        with pytest.raises(shards.StoreDamaged) as raised:
            read()
        message = str(raised.value)
        assert message.startswith(f"{store.path}: damaged store: ") and expected in message
        assert "\n" not in message
    with pytest.raises(CheckFailed, match="damaged store"):  # verify: exit 1
        shards.verify_store(store.path)


def test_a_store_with_all_its_checksums_may_be_marked_complete(tmp_path):
    store = _store(tmp_path)
    store.mark_complete()
    assert store.complete and store.attrs["complete"] is True
    assert shards.open_store(store.path).complete


# Format version 2: shards of several chunks


def _sharded(tmp_path, n=10, chunk=2, shard_chunks=2, complete=True,
             side=SIDE) -> shards.Store:
    """A store of ``n`` examples in chunks of ``chunk``, ``shard_chunks`` chunks a shard,
    every shard written whole; example ``i`` has grey level ``i``."""
    path = tmp_path / "sharded.zarr"
    shards.create_store(path, n=n, height=side, width=side, channels=1, chunk_size=chunk,
                        shard_chunks=shard_chunks,
                        attrs={"preset": "elpv", "seed": 3, "reasons": ["", "no-change"],
                               "source": {"kind": "folder", "description": "d", "files": []}})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    for shard in range(store.n_shards):
        rows = store.shard_slice(shard)
        m = rows.stop - rows.start
        store.write_shard(shard, shards.ChunkData(
            images=np.arange(rows.start, rows.stop, dtype=np.uint8)[:, None, None, None]
            * np.ones((1, side, side, 1), np.uint8),
            masks=np.zeros((m, side, side, 1), np.uint8), labels=np.ones(m, np.uint8),
            dest_index=np.zeros(m, np.int32), source_index=np.zeros(m, np.int32),
            boxes=np.full((m, shards.MAX_PATCHES, 4), -1, np.int16),
            reason=np.zeros(m, np.uint8)))
    if complete:
        store.mark_complete()
    return store


def test_write_shard_stores_per_chunk_checksums_and_one_file_per_shard_and_array(tmp_path):
    store = _sharded(tmp_path)  # 5 chunks of 2 in shards of 2, 2 and 1 chunks
    assert (store.n_chunks, store.n_shards) == (5, 3)
    assert store.read_chunk(3).images[:, 0, 0, 0].tolist() == [6, 7]
    assert store.read_chunk(4).images[:, 0, 0, 0].tolist() == [8, 9]
    for index in range(5):
        assert np.array_equal(store.checksums()[index], store.read_chunk(index).checksum())
    files = sorted(str(f.relative_to(store.path)) for f in store.path.rglob("*") if f.is_file())
    data_files = [f for f in files if not f.endswith("zarr.json")]
    assert len(files) - len(data_files) == 9  # the group's and 8 arrays' metadata
    assert sorted(data_files) == sorted(
        f"{name}/c/{s}" + "/0" * (len(shards.array_specs(10, SIDE, SIDE, 1, 2, 2)[name].shape) - 1)
        for name in (*shards.EXAMPLE_ARRAYS, "checksums") for s in range(3))
    assert shards.verify_store(store.path) == 5


def test_write_shard_refuses_data_of_another_size(tmp_path):
    store = _sharded(tmp_path, complete=False)
    data = store.read_shard(0)
    with pytest.raises(ValueError, match="shard 2 holds 2 examples, not 4"):
        store.write_shard(2, data)


def test_written_shards_need_every_chunk_checksummed(tmp_path):
    store = _sharded(tmp_path, complete=False)
    store.array("checksums")[3] = np.zeros(32, np.uint8)
    assert store.written_shards().tolist() == [True, False, True]


def test_verify_names_the_corrupted_chunk_inside_a_shard_not_its_neighbour(tmp_path):
    store = _sharded(tmp_path)
    shard_file = store.path / "images" / "c" / "1" / "0" / "0" / "0"  # chunks 2 and 3
    data = bytearray(shard_file.read_bytes())
    # the shard index ends the file: (offset, length) uint64 per chunk, then a CRC32C
    offset, length = np.frombuffer(bytes(data[-36:-4]), "<u8").reshape(2, 2)[1]
    data[offset + length // 2: offset + length] = bytes(length - length // 2)  # chunk 3
    shard_file.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match=r"1 of 5 chunks bad: chunk 3 (is unreadable|does "
                                          r"not match)") as raised:
        shards.verify_store(store.path)
    assert "chunk 2" not in str(raised.value)


def test_a_store_of_another_format_version_is_refused_in_one_line(tmp_path):
    store = _store(tmp_path)
    for older in (1, 2):  # 2: SHA-256 chunk checksums, 32 bytes a row
        _edit_attrs(store, format_version=older)
        for read in (lambda: shards.open_store(store.path, allow_incomplete=True),
                     lambda: shards.verify_store(store.path)):
            with pytest.raises(shards.StoreVersionError) as raised:
                read()
            assert str(raised.value) == (
                f"{store.path}: store format version {older}, this nsa-pipeline reads "
                "version 3 only; regenerate the store with the nsa-gen command that made it "
                "and --overwrite (the same seed gives the same examples)")
    for odd in (None, "3", True):
        _edit_attrs(store, format_version=odd)
        with pytest.raises(shards.StoreDamaged) as raised:
            shards.open_store(store.path, allow_incomplete=True)
        assert str(raised.value) == (f"{store.path}: damaged store: attribute "
                                     f"'format_version' is {odd!r}, not a version number")
    _edit_attrs(store, format_version=4)
    with pytest.raises(shards.StoreVersionError, match=r"version 4, .* the nsa-pipeline that "
                                                        r"made it"):
        shards.open_store(store.path, allow_incomplete=True)


def test_chunk_checksums_are_xxh3_128_of_every_array_in_order(tmp_path):
    """Format version 3 as docs/store-format.md states it, computed here with xxhash's
    one-shot function over the arrays' bytes joined: any Zarr client can check a chunk."""
    store = _store(tmp_path)
    chunk = store.read_chunk(1)
    joined = b"".join(np.ascontiguousarray(getattr(chunk, name)).tobytes()
                      for name in shards.EXAMPLE_ARRAYS)
    expected = np.frombuffer(xxhash.xxh3_128_digest(joined), np.uint8)
    group = zarr.open_group(str(store.path), mode="r")
    assert group["checksums"].shape == (3, 16)
    assert np.array_equal(group["checksums"][1], expected)
    assert np.array_equal(chunk.checksum(), expected)


def test_default_shards_hold_up_to_16_chunks_and_keep_32_shards_and_128_mib():
    assert shards.default_shard_chunks(256, 64, 256, 256, 1) == 1  # small: every worker
    assert shards.default_shard_chunks(16_000, 64, 128, 128, 1) == 7  # 36 shards
    assert shards.default_shard_chunks(200_000, 64, 128, 128, 1) == 16
    assert shards.default_shard_chunks(200_000, 64, 256, 256, 3) == 8  # 16 MiB a chunk


def _count_reads(monkeypatch) -> Counter:
    """Count zarr's reads of each key of local stores (the real reads still happen)."""
    reads: Counter = Counter()
    real_get = LocalStore.get

    async def get(self, key, prototype=None, byte_range=None):
        reads[key] += 1
        return await real_get(self, key, prototype, byte_range)

    monkeypatch.setattr(LocalStore, "get", get)
    return reads


def _data_reads(reads: Counter, *names: str) -> dict[str, int]:
    return {key: count for key, count in reads.items()
            if key.split("/")[0] in names and not key.endswith("zarr.json")}


def test_verify_reads_every_shard_file_once(tmp_path, monkeypatch):
    store = _sharded(tmp_path, n=12, chunk=2, shard_chunks=3)  # 6 chunks, 2 whole shards
    reads = _count_reads(monkeypatch)
    assert shards.verify_store(store.path) == 6
    expected = {f"{name}/c/{s}" + "/0" * (len(spec.shape) - 1): 1
                for name, spec in shards.array_specs(12, SIDE, SIDE, 1, 2, 3).items()
                for s in range(2)}
    assert _data_reads(reads, *shards.EXAMPLE_ARRAYS, "checksums") == expected


def test_opening_for_training_and_info_read_no_images_and_the_checksums_once(
        tmp_path, monkeypatch):
    store = _sharded(tmp_path, n=12, chunk=2, shard_chunks=3, side=32)
    _edit_attrs(store, settings=resolve_settings("elpv"))
    reads = _count_reads(monkeypatch)
    open_training_stores([store.path])
    assert _data_reads(reads, *shards.EXAMPLE_ARRAYS, "checksums") == {
        "checksums/c/0/0": 1, "checksums/c/1/0": 1}
    reads.clear()
    shards.open_store(store.path).summary()
    assert _data_reads(reads, "images", "masks", "boxes", "dest_index", "source_index") == {}
    assert set(_data_reads(reads, "checksums").values()) == {1}
def test_reading_a_chunk_checks_its_checksum_unless_told_not_to(tmp_path):
    store = _store(tmp_path)
    _rewrite_decodably(store, 1)
    with pytest.raises(shards.StoreError, match=r"chunk 1 does not match its checksum"):
        store.read_chunk(1)
    assert store.read_chunk(1, verify=False).images[0, 3, 3, 0] == 12


def test_verify_counts_the_chunks_an_interrupted_store_has_written(tmp_path):
    _store(tmp_path, written=(1,))
    with pytest.raises(CheckFailed, match=r"incomplete, not damaged: 1 of 3 chunks written"):
        shards.verify_store(tmp_path / "s.zarr")


def test_a_store_knows_its_shape_and_refuses_chunk_indices_outside_it(tmp_path):
    store = _store(tmp_path)
    assert (store.height, store.width, store.channels) == (SIDE, SIDE, 1)
    for index in (-1, 3):
        with pytest.raises(IndexError, match=rf"chunk {index} out of range 0\.\.2"):
            store.chunk_slice(index)


def test_labels_outside_zero_to_one_are_clipped_and_masks_read_back_as_float32():
    mask = shards.label_to_mask(np.array([[-0.5, 0.0, 1.0, 1.5]], np.float32))
    assert mask.dtype == np.uint8 and mask[..., 0].tolist() == [[0, 0, 255, 255]]
    assert shards.mask_to_label(mask).dtype == np.float32


def test_summary_reports_provenance_and_why_examples_stayed_normal(tmp_path):
    store = _store(tmp_path, written=(0,))
    chunk = _chunk(store, 1, fill=11)
    chunk.labels[:] = (1, 0, 0, 1)
    chunk.reason[:] = (0, 1, 1, 0)
    store.write_chunk(1, chunk)
    summary = store.summary()
    assert (summary["examples_written"], summary["anomalous"]) == (2 * CHUNK, CHUNK + 2)
    assert summary["skipped"] == {"no-change": 2}
    assert (summary["preset"], summary["seed"]) == ("elpv", 3)
    assert summary["source"] == "folder: d (0 images)"
    assert summary["shape"] == [SIDE, SIDE, 1] and summary["path"] == str(store.path)
    assert summary["bytes"] > 0
    _edit_attrs(store, created="2026-01-01", versions={"zarr": "3"}, warnings=["w"])
    summary = shards.open_store(store.path, allow_incomplete=True).summary()
    assert (summary["created"], summary["versions"], summary["warnings"]) == (
        "2026-01-01", {"zarr": "3"}, ["w"])


SUMMARY = {"path": "/x/s.zarr", "format_version": 2, "complete": False, "n": 10,
           "shape": [8, 8, 1], "chunks_written": 2, "chunks": 3, "chunk_size": 4,
           "shards": 2, "shard_chunks": 2, "preset": "elpv", "seed": 3,
           "source": "folder: d (5 images)", "anomalous": 6, "examples_written": 8,
           "skipped": {"no-change": 2, "no-object": 1}, "bytes": 1234567,
           "created": "2026-01-01", "versions": {"zarr": "3.1.6", "numpy": "2.2"},
           "warnings": ["w1", "w2"]}


def test_info_text_of_a_partly_written_store():
    assert shards.format_summary(SUMMARY) == "\n".join([
        "store:              /x/s.zarr",
        "format:             nsa-shards version 2",
        "complete:           no (2 of 3 chunks written)",
        "examples:           10 of 8x8x1 uint8, 3 chunks of 4 in 2 shards of 2",
        "preset:             elpv",
        "seed:               3",
        "source:             folder: d (5 images)",
        "anomalous:          6 of 8 written (75.0%)",
        "no anomaly because: no-change 2, no-object 1",
        "on disk:            1.2 MB (154.3 kB per example)",
        "created:            2026-01-01",
        "versions:           zarr 3.1.6, numpy 2.2",
        "warnings:           w1; w2",
    ])


def test_info_text_of_an_empty_complete_store_divides_by_nothing():
    summary = {**SUMMARY, "complete": True, "chunks": 1, "shards": 1, "examples_written": 0,
               "anomalous": 0, "skipped": {}, "warnings": []}
    lines = shards.format_summary(summary).splitlines()
    assert lines[2] == "complete:           yes"
    assert lines[3] == "examples:           10 of 8x8x1 uint8, 1 chunk of 4 in 1 shard of 2"
    assert lines[7:10] == ["anomalous:          0 of 0 written",
                          "no anomaly because: -", "on disk:            1.2 MB"]
    assert lines[-1] == "warnings:           -"


def test_create_store_takes_one_or_three_channels_only(tmp_path):
    group = shards.create_store(tmp_path / "rgb.zarr", n=4, height=8, width=8, channels=3,
                                chunk_size=2, attrs={})
    assert (group.attrs["channels"], group.attrs["complete"]) == (3, False)
    assert shards.open_store(tmp_path / "rgb.zarr", allow_incomplete=True).channels == 3
    with pytest.raises(shards.StoreError, match="channels must be 1 or 3, not 4"):
        shards.create_store(tmp_path / "x.zarr", n=4, height=8, width=8, channels=4,
                            chunk_size=2, attrs={})


@pytest.mark.parametrize("n,rest", [(10, ""), (11, "; and 1 more")])
def test_verify_names_ten_bad_chunks_and_counts_the_rest(tmp_path, n, rest):
    path = tmp_path / "many.zarr"
    shards.create_store(path, n=n, height=SIDE, width=SIDE, channels=1, chunk_size=1,
                        attrs={})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    for index in range(n):
        store.write_chunk(index, _chunk(store, index, fill=index))
    store.mark_complete()
    zarr.open_group(str(path), mode="r+")["checksums"][:] = 7  # written, but wrong
    with pytest.raises(CheckFailed) as raised:
        shards.verify_store(path)
    message = str(raised.value)
    assert f": {n} of {n} chunks bad: chunk 0 does not match its checksum; chunk 1 " in message
    assert message.endswith("; chunk 9 does not match its checksum" + rest)


def test_a_store_without_a_complete_attribute_is_incomplete(tmp_path):
    store = _store(tmp_path, written=(0,))
    group = zarr.open_group(str(store.path), mode="r+", zarr_format=3)
    del group.attrs["complete"]
    with pytest.raises(shards.StoreError, match="incomplete"):
        shards.open_store(store.path)
    assert not shards.open_store(store.path, allow_incomplete=True).complete
