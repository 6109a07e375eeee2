"""generate_store: Ray tasks writing whole shards, reproducibly, resumably, with provenance."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import zarr
from nsa.generate import shards
from nsa.generate.generation import generate_store, shard_arrays, shard_data, write_shard
from nsa.generate.images import load_images
from nsa.generate.presets import resolve_settings
from nsa.generate.sources import folder_source, mvtec_source
from nsa.generate.synthesis import SKIP_REASONS, make_example, prepare_sources

from nsa.errors import UserError

N, CHUNK, SIZE = 20, 8, 64  # three chunks, the last one short


@pytest.fixture(scope="module")
def source(mvtec_root):
    return mvtec_source(mvtec_root, "bottle")


def _generate(source, out, **kwargs):
    options = {"n": N, "chunk_size": CHUNK, "size": SIZE, "progress": False, **kwargs}
    return generate_store(source, out, **options)


def _arrays(path) -> dict[str, np.ndarray]:
    group = shards.open_store(path).group
    return {name: group[name][:] for name in (*shards.EXAMPLE_ARRAYS, "checksums")}


@pytest.fixture(scope="module")
def reference(source, local_ray, tmp_path_factory):
    """A store made with 2 workers, seed 0 (compared against by several tests)."""
    return _generate(source, tmp_path_factory.mktemp("ref") / "ref.zarr", workers=2)


def test_one_and_two_workers_write_byte_identical_arrays(source, reference, tmp_path):
    one = _generate(source, tmp_path / "one.zarr", workers=1)
    expected = _arrays(reference)
    for name, array in _arrays(one).items():
        assert np.array_equal(array, expected[name]), name


def test_stored_examples_are_make_example_of_their_index(source, reference):
    settings = resolve_settings("bottle", {"size": SIZE})
    sources = prepare_sources(load_images(source.files, SIZE), settings)
    group = shards.open_store(reference).group
    for index in (0, 13, N - 1):
        example = make_example(sources, settings, 0, index)
        assert np.array_equal(group["images"][index], example.image)
        assert np.array_equal(group["masks"][index], shards.label_to_mask(example.label))
        assert group["labels"][index] == example.image_label
        assert group["dest_index"][index] == example.dest_index
        assert SKIP_REASONS[group["reason"][index]] == example.reason


def test_shard_arrays_used_again_hold_what_new_ones_would(source):
    settings = resolve_settings("bottle", {"size": SIZE})
    sources = prepare_sources(load_images(source.files, SIZE), settings)
    used = shard_arrays(12, sources.shape)
    for array in (used.images, used.masks, used.boxes, used.reason):
        array.fill(93)  # what another shard left there
    for rows in (range(0, 12), range(12, 17)):  # a whole shard, then a short last one
        again = shard_data(sources, settings, 0, rows, used)
        anew = shard_data(sources, settings, 0, rows)
        for name in shards.EXAMPLE_ARRAYS:
            assert np.array_equal(getattr(again, name), getattr(anew, name)), name
    with pytest.raises(ValueError, match="cannot hold"):
        shard_data(sources, settings, 0, range(13), used)


def test_another_seed_gives_other_examples(source, reference, local_ray, tmp_path):
    other = _generate(source, tmp_path / "seed1.zarr", seed=1)
    assert not np.array_equal(_arrays(other)["images"], _arrays(reference)["images"])


def test_store_records_provenance_and_is_complete(source, reference):
    attrs = shards.open_store(reference).attrs
    assert attrs["complete"] is True
    assert (attrs["preset"], attrs["seed"], attrs["n"]) == ("bottle", 0, N)
    assert attrs["settings"] == resolve_settings("bottle", {"size": SIZE})
    files = attrs["source"]["files"]
    assert [f["path"] for f in files] == [str(p) for p in source.files]
    assert files[2]["sha256"] == hashlib.sha256(source.files[2].read_bytes()).hexdigest()
    assert attrs["versions"]["zarr"] == "3.1.6"
    assert attrs["reasons"] == list(SKIP_REASONS)
    assert attrs["created"]


def test_stored_boxes_are_valid_patch_boxes_padded_with_minus_one(reference):
    arrays = _arrays(reference)
    blended = arrays["reason"] == 0
    assert blended.any()
    for boxes, is_blended in zip(arrays["boxes"], blended, strict=True):
        used = boxes[:, 0] >= 0
        assert used.any() or not is_blended
        assert (boxes[~used] == -1).all()
        y0, x0, y1, x1 = boxes[used].T
        assert ((y0 >= 0) & (y0 < y1) & (y1 <= SIZE) & (x0 >= 0) & (x0 < x1) & (x1 <= SIZE)).all()


def test_resume_rewrites_only_unfinished_chunks_to_the_same_bytes(source, reference, tmp_path,
                                                                  local_ray):
    out = _generate(source, tmp_path / "r.zarr", workers=2)
    store = shards.open_store(out, mode="r+")
    store.group.attrs["complete"] = False
    store.group["checksums"][1] = np.zeros(32, np.uint8)  # chunk 1 "never finished"
    store.group["images"][CHUNK:2 * CHUNK] = 0  # and half written
    _generate(source, out, resume=True)
    for name, array in _arrays(out).items():
        assert np.array_equal(array, _arrays(reference)[name]), name


def test_resume_refuses_a_store_made_with_another_seed(source, reference, tmp_path):
    with pytest.raises(UserError, match=r"cannot resume.*seed"):
        _generate(source, reference, seed=5, resume=True)


def test_resume_refuses_a_store_made_with_other_settings(source, reference):
    with pytest.raises(UserError, match=r"cannot resume.*settings"):
        _generate(source, reference, resume=True, overrides={"num_patches": 1})


def test_resume_refuses_a_store_made_from_other_images(mvtec_root, local_ray, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(mvtec_root / "bottle" / "train" / "good", images)
    out = _generate(folder_source(images), tmp_path / "f.zarr", preset="bottle", n=CHUNK)
    (images / "005.png").unlink()
    with pytest.raises(UserError, match=r"cannot resume.*source images"):
        _generate(folder_source(images), out, preset="bottle", n=CHUNK, resume=True)


def test_existing_store_is_kept_without_resume_or_overwrite(source, reference):
    before = _arrays(reference)["checksums"]
    with pytest.raises(UserError, match=r"already exists; it is a complete store") as info:
        _generate(source, reference, seed=9)
    assert "--overwrite" in str(info.value) and "--resume" not in str(info.value)
    assert np.array_equal(_arrays(reference)["checksums"], before)


def test_existing_folder_that_is_not_a_store_asks_for_another_out(source, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"x")
    with pytest.raises(UserError, match=r"already exists; it is not an NSA store: choose "
                       r"another --out"):
        _generate(source, tmp_path / "photos")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["a.png"]


def test_overwrite_refuses_a_directory_that_is_not_a_store(source, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="replaces only NSA stores"):
        _generate(source, tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_a_store_of_the_old_format_is_refused_by_resume_and_replaced_by_overwrite(
        source, reference, local_ray, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(reference, old)
    zarr.open_group(str(old), mode="r+").attrs["format_version"] = 1
    with pytest.raises(shards.StoreVersionError, match=r"format version 1.*regenerate"):
        _generate(source, old, resume=True)
    _generate(source, old, overwrite=True)
    for name, array in _arrays(old).items():
        assert np.array_equal(array, _arrays(reference)[name]), name


def test_zero_examples_is_refused_before_anything_is_written(source, tmp_path):
    with pytest.raises(UserError, match="--n must be at least 1"):
        _generate(source, tmp_path / "z.zarr", n=0)
    assert not (tmp_path / "z.zarr").exists()


def test_write_shard_in_process_matches_the_ray_task_output(source, reference, tmp_path):
    settings = resolve_settings("bottle", {"size": SIZE})
    sources = prepare_sources(load_images(source.files, SIZE), settings)
    ref = shards.open_store(reference)
    out = tmp_path / "p.zarr"
    shards.create_store(out, n=N, height=SIZE, width=SIZE, channels=3, chunk_size=CHUNK,
                        attrs={})
    assert write_shard(out, sources, settings, 0, 2) == N - 2 * CHUNK
    written = shards.open_store(out, allow_incomplete=True).read_chunk(2)
    assert np.array_equal(written.checksum(), ref.read_chunk(2).checksum())


def test_shards_of_several_chunks_hold_the_same_examples_and_resume_whole(
        source, reference, local_ray, tmp_path):
    # 64 chunks of 1: the default layout puts 2 chunks in each of 32 shards
    out = _generate(source, tmp_path / "s.zarr", n=64, chunk_size=1, workers=2)
    store = shards.open_store(out)
    assert (store.shard_chunks, store.n_shards) == (2, 32)
    arrays, expected = _arrays(out), _arrays(reference)
    for name in shards.EXAMPLE_ARRAYS:  # same examples as in chunks of 8, shards of 1
        assert np.array_equal(arrays[name][:N], expected[name]), name
    assert all(np.array_equal(arrays["checksums"][i], store.read_chunk(i).checksum())
               for i in range(64))
    writable = shards.open_store(out, mode="r+")
    writable.group.attrs["complete"] = False
    writable.array("checksums")[5] = np.zeros(32, np.uint8)  # shard 2 unfinished
    writable.array("images")[4] = 0  # its other chunk, checksummed, damaged all the same
    _generate(source, out, n=64, chunk_size=1, resume=True)
    for name, array in _arrays(out).items():
        assert np.array_equal(array, arrays[name]), name
