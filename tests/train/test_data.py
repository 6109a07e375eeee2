"""Streaming stores: whole-chunk reading, seeded shuffling, exact skipping, refusals."""

from __future__ import annotations

import pytest
import torch
from nsa.generate.shards import StoreError, open_store
from nsa.train.augment import apply_augment
from nsa.train.data import (
    ShardStream,
    make_loader,
    open_training_stores,
    plan_epoch,
    shared_memory_fits,
)


def _ids(batches) -> list[list[bytes]]:
    return [[ex.numpy().tobytes() for ex in b["stacked"][:, 0]] for b in batches]


def _stream(paths, **kw) -> ShardStream:
    options = {"seed": 0, "batch_size": 8, "shuffle_chunks": 2, "loader_workers": 0}
    options.update(kw)
    return ShardStream(open_training_stores(paths), **options)


def _epoch(dataset: ShardStream, epoch: int, skip: int = 0) -> list[list[bytes]]:
    dataset.set_epoch(epoch, skip)
    return _ids(make_loader(dataset))


def test_an_epoch_yields_full_batches_of_distinct_examples(tiny_store):
    batches = _epoch(_stream([tiny_store]), 0)
    assert len(batches) == 8 and all(len(b) == 8 for b in batches)
    assert len({x for b in batches for x in b}) == 64


def test_order_is_fixed_by_seed_and_changes_between_epochs(tiny_store):
    dataset = _stream([tiny_store])
    first = _epoch(dataset, 0)
    assert _epoch(_stream([tiny_store]), 0) == first
    assert _epoch(dataset, 1) != first
    assert _epoch(_stream([tiny_store], seed=1), 0) != first


def test_examples_are_shuffled_across_chunks(tiny_store):
    batch = _epoch(_stream([tiny_store]), 0)[0]
    chunk_of = {}
    data = open_store(tiny_store)
    for c in range(data.n_chunks):
        for image in data.read_chunk(c).images[..., 0]:
            chunk_of[image.tobytes()] = c
    assert len({chunk_of[x] for x in batch}) > 1


def test_skipping_gives_the_tail_of_the_epoch_with_worker_processes(tiny_store):
    dataset = _stream([tiny_store], loader_workers=2, batch_size=4)
    full = _epoch(dataset, 3)
    assert len(full) == 16
    assert _epoch(dataset, 3, skip=5) == full[5:]


def test_ranks_read_disjoint_examples(tiny_store):
    stores = [tiny_store]
    rank0 = _epoch(_stream(stores, rank=0, world_size=2, batch_size=4), 0)
    rank1 = _epoch(_stream(stores, rank=1, world_size=2, batch_size=4), 0)
    assert len(rank0) == len(rank1) == 8
    assert not {x for b in rank0 for x in b} & {x for b in rank1 for x in b}


def test_several_stores_are_mixed(tmp_path, make_store):
    a = make_store(tmp_path / "a.zarr", n=32, seed=1)
    b = make_store(tmp_path / "b.zarr", n=32, seed=2)
    plan = plan_epoch(open_training_stores([a, b]), 0, 0, 1, 8)
    assert {s for s, _ in plan.streams[0][:4]} == {0, 1}


def test_augmentation_can_be_left_for_the_device(tmp_path, make_store):
    store = make_store(tmp_path / "s.zarr", size=64,
                       augment={"rotate": 5, "center_crop": 48, "crop": 32})
    on_loader = _stream([store])
    on_loader.set_epoch(0)
    augmented = next(iter(make_loader(on_loader)))["stacked"]
    raw = _stream([store], augment_in_loader=False)
    raw.set_epoch(0)
    batch = next(iter(make_loader(raw)))
    assert augmented.shape == (8, 2, 32, 32) and batch["stacked"].shape == (8, 2, 64, 64)
    assert torch.equal(apply_augment(batch["stacked"], batch["params"], (32, 32)), augmented)


def test_incomplete_store_is_refused(tmp_path, make_store):
    store = make_store(tmp_path / "part.zarr", complete=False)
    with pytest.raises(StoreError, match="incomplete"):
        open_training_stores([store])


@pytest.mark.parametrize("other", [{"size": 64}, {"channels": 3}])
def test_stores_of_different_resolution_or_channels_are_refused(tmp_path, make_store, other):
    a = make_store(tmp_path / "a.zarr", n=8)
    b = make_store(tmp_path / "b.zarr", n=8, **other)
    with pytest.raises(StoreError, match="must match in resolution and channels"):
        open_training_stores([a, b])


def test_a_store_given_twice_is_refused(tiny_store):
    with pytest.raises(StoreError, match="given twice"):
        open_training_stores([tiny_store, tiny_store])


@pytest.mark.parametrize("processes", [0, 1])
def test_a_corrupted_chunk_yields_an_error_naming_it(tiny_store, processes):
    """The error itself, as one item (from a loader process too), for the trainer to
    raise with its exit code."""
    chunk_file = tiny_store / "images" / "c" / "5" / "0" / "0" / "0"
    chunk_file.write_bytes(b"\0" * 40)
    batches = list(make_loader(_stream([tiny_store], shuffle_chunks=1,
                                       loader_workers=1, processes=processes)))
    assert "error" in batches[-1] and "chunk 5" in str(batches[-1]["error"])
    assert isinstance(batches[-1]["error"], StoreError)
    assert all("stacked" in b for b in batches[:-1])


def test_plans_deal_every_chunk_once():
    class Info:
        chunk_lengths = (8, 8, 8, 3)

    plan = plan_epoch([Info(), Info()], seed=0, epoch=0, n_streams=3, batch_size=4)
    dealt = sorted(c for stream in plan.streams for c in stream)
    assert dealt == [(s, c) for s in range(2) for c in range(4)]
    assert plan.batches_per_stream == min(
        sum(Info.chunk_lengths[c] for _, c in stream) for stream in plan.streams) // 4


@pytest.mark.parametrize("processes", [0, 2])
def test_batches_do_not_depend_on_how_the_streams_are_read(tiny_store, processes):
    """Two streams read by two processes, in this process, or sent through a pipe:
    the same batches in the same order, also when skipping (a resume)."""
    reference = _stream([tiny_store], loader_workers=2, batch_size=4)
    assert reference.loader_processes == 2
    full = _epoch(reference, 1)
    assert len(full) == 16
    other = _stream([tiny_store], loader_workers=2, batch_size=4, processes=processes)
    other.through_pipe = True
    assert _epoch(other, 1) == full
    assert _epoch(other, 1, skip=5) == full[5:]


def _children() -> set[int]:
    """The pids of this process's live children (from /proc)."""
    import os
    from pathlib import Path

    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def test_one_loader_serves_every_epoch_with_the_same_processes(tiny_store):
    """The loader processes outlive an epoch, and each iteration serves the epoch (and
    skip) set since, exactly as a new loader would."""
    fresh = {(epoch, skip): _epoch(_stream([tiny_store], loader_workers=2, batch_size=4),
                                   epoch, skip) for epoch, skip in ((0, 3), (1, 0), (2, 0))}
    assert fresh[1, 0] != fresh[2, 0]
    before = _children()
    dataset = _stream([tiny_store], loader_workers=2, batch_size=4)
    loader = make_loader(dataset)
    workers = None
    for (epoch, skip), expected in fresh.items():
        dataset.set_epoch(epoch, skip)
        assert _ids(loader) == expected
        if workers is None:
            workers = _children() - before
            assert len(workers) == 2
        assert _children() - before == workers
    loader.close()
    assert not _children() & workers  # ended with it
    with pytest.raises(RuntimeError, match="closed"):
        iter(loader)


def test_shared_memory_check_counts_the_batches_the_processes_hold(tiny_store, tmp_path):
    dataset = _stream([tiny_store], loader_workers=2, batch_size=8)
    assert dataset.batch_bytes() == 8 * 2 * 32 * 32
    assert shared_memory_fits(dataset, where=tmp_path)  # the test disk has room
    assert not shared_memory_fits(dataset, factor=10**9, where=tmp_path)
    assert shared_memory_fits(_stream([tiny_store]), factor=10**9, where=tmp_path)  # no process


def test_the_fingerprint_changes_with_the_examples_only(tmp_path, make_store):
    a = make_store(tmp_path / "a.zarr", n=16)
    same = make_store(tmp_path / "same.zarr", n=16)
    other = make_store(tmp_path / "other.zarr", n=16, seed=1)
    prints = [info.fingerprint for info in open_training_stores([a, same, other])]
    assert prints[0] == prints[1] != prints[2] and len(prints[0]) == 64


def test_chunks_are_read_ahead_in_order_and_at_most_prefetch_chunks_ahead(tiny_store,
                                                                          monkeypatch):
    import threading
    import time

    from nsa.generate.shards import Store
    from nsa.train import data

    started: list[int] = []
    real = Store.read_chunk

    def counted(self, index, verify=True):
        started.append(index)
        return real(self, index, verify)

    monkeypatch.setattr(Store, "read_chunk", counted)
    dataset = _stream([tiny_store])
    order = [(0, c) for c in (5, 1, 7, 2, 0, 6, 3, 4)]
    reader = dataset._read_ahead(order)
    first = next(reader)
    deadline = time.monotonic() + 5
    while len(started) < data.PREFETCH_CHUNKS + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert sorted(started) == sorted(c for _, c in order[:data.PREFETCH_CHUNKS + 1])
    assert threading.active_count() > 1  # the reads ran beside this thread
    rest = [first, *reader]
    store = open_store(tiny_store)
    assert all((got.images == store.read_chunk(c).images).all()
               for got, (_, c) in zip(rest, order, strict=True))
