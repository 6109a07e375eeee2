"""Streaming training examples out of NSA shard stores, in an order fixed by the seed.

Why it is built this way:

- Whole chunks are the unit of reading (one Zarr chunk per array, checked against its
  SHA-256), so a worker decodes each example once and never seeks.
- The epoch plan is a pure function of ``(seed, epoch)`` and the stores' sizes: the chunks
  of all stores are shuffled together and dealt round-robin to *streams*, one per
  (DDP rank, DataLoader worker); each stream shuffles the examples inside windows of
  ``shuffle_chunks`` consecutive chunks (its shuffle buffer) and cuts batches from the
  result. Every stream yields the same number of batches (the few examples beyond that are
  skipped this epoch, and land elsewhere in the next), so the DataLoader's round-robin
  over its workers gives a fixed global order, and a resumed run can skip the first
  ``k`` batches by arithmetic alone, without reading them.
- Augmentation parameters of batch ``k`` of stream ``j`` come from their own
  ``numpy`` Generator seeded with ``(seed, epoch, j, k)``, so skipping does not shift them.
- Errors met in a worker (a damaged chunk) travel as ``{"error": message}`` items rather
  than exceptions, so the trainer can stop with one line naming the store and chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nsa.generate.shards import Store, StoreError, open_store
from nsa.train.augment import AugmentSpec, apply_augment
from nsa.train.model import STRIDE
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

# Domain tags keep the generators of different purposes apart for the same seed.
_CHUNK_ORDER, _WINDOW_ORDER, _AUGMENT = 0, 1, 2


@dataclass(frozen=True)
class StoreInfo:
    """What the trainer needs to know about one store, and records about it."""

    path: str
    n: int
    chunk_size: int
    height: int
    width: int
    channels: int
    seed: int | None
    preset: str | None
    settings: dict[str, Any] = field(hash=False)
    augment: AugmentSpec = field(hash=False)

    @property
    def chunk_lengths(self) -> list[int]:
        full, rest = divmod(self.n, self.chunk_size)
        return [self.chunk_size] * full + ([rest] if rest else [])

    def record(self) -> dict[str, Any]:
        """The store as written into a run's config.json."""
        return {
            "path": self.path, "seed": self.seed, "preset": self.preset, "n": self.n,
            "chunk_size": self.chunk_size, "height": self.height, "width": self.width,
            "channels": self.channels, "settings": self.settings,
        }


def open_training_stores(paths: Sequence[str | Path]) -> list[StoreInfo]:
    """Open and check the stores to train on together.

    Raises :class:`StoreError` (one line, naming the store) when one is missing,
    incomplete or given twice, when they differ in resolution or channels, when their
    augmentations give different output sizes, or when that size does not suit the model.
    """
    if not paths:
        raise StoreError("no stores given (--shards)")
    infos: list[StoreInfo] = []
    seen: set[Path] = set()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise StoreError(f"{path}: store given twice")
        seen.add(resolved)
        store = open_store(path)
        settings = dict(store.attrs.get("settings") or {})
        infos.append(StoreInfo(
            path=str(resolved), n=store.n, chunk_size=store.chunk_size,
            height=store.height, width=store.width, channels=store.channels,
            seed=store.attrs.get("seed"), preset=store.attrs.get("preset"),
            settings=settings,
            augment=AugmentSpec.from_settings(settings, store.height, store.width),
        ))
    first = infos[0]
    for info in infos[1:]:
        if (info.height, info.width, info.channels) != (first.height, first.width, first.channels):
            raise StoreError(
                f"{info.path} holds {info.height}x{info.width}x{info.channels} examples but "
                f"{first.path} holds {first.height}x{first.width}x{first.channels}: "
                "stores trained together must match in resolution and channels"
            )
        if info.augment.output_size != first.augment.output_size:
            raise StoreError(
                f"{info.path} crops to {info.augment.output_size} but {first.path} to "
                f"{first.augment.output_size}: stores trained together must crop alike"
            )
    out_h, out_w = first.augment.output_size
    if out_h % STRIDE or out_w % STRIDE:
        raise StoreError(
            f"{first.path}: the model needs sides that are multiples of {STRIDE}, "
            f"but these examples are {out_h}x{out_w} after cropping"
        )
    return infos


@dataclass(frozen=True)
class EpochPlan:
    """Which chunks each stream reads in one epoch, and how many batches it yields."""

    streams: list[list[tuple[int, int]]]  # per stream: (store index, chunk index)
    batches_per_stream: int


def plan_epoch(
    stores: Sequence[StoreInfo], seed: int, epoch: int, n_streams: int, batch_size: int
) -> EpochPlan:
    """Deal the shuffled chunks of all stores to ``n_streams`` streams for ``epoch``.

    ``batch_size`` is per stream batch (a rank's share of the global batch).
    """
    chunks = [(s, c) for s, info in enumerate(stores) for c in range(len(info.chunk_lengths))]
    order = np.random.default_rng([seed, _CHUNK_ORDER, epoch]).permutation(len(chunks))
    streams = [[chunks[i] for i in order[j::n_streams]] for j in range(n_streams)]
    counts = [sum(stores[s].chunk_lengths[c] for s, c in stream) for stream in streams]
    return EpochPlan(streams, min(counts) // batch_size)


class ShardStream(IterableDataset):
    """Batches of ``(image + label stack, augmentation parameters)`` for one DDP rank.

    Each item is a dict: ``stacked`` uint8 (B, C+1, h, w), image channels then the label
    map (already augmented when ``augment_in_loader``, else full size with ``params``
    (B, 5) for :func:`~nsa.train.augment.apply_augment` on the training device);
    or ``{"error": message}`` when a chunk could not be read.
    """

    def __init__(
        self,
        stores: Sequence[StoreInfo],
        *,
        seed: int,
        batch_size: int,
        shuffle_chunks: int,
        loader_workers: int,
        rank: int = 0,
        world_size: int = 1,
        augment_in_loader: bool = True,
    ) -> None:
        super().__init__()
        self.stores = list(stores)
        self.seed = seed
        self.batch_size = batch_size
        self.shuffle_chunks = max(1, shuffle_chunks)
        self.loader_processes = loader_workers
        self.loader_workers = max(1, loader_workers)  # streams per rank: 0 processes read as 1
        self.rank = rank
        self.world_size = world_size
        self.augment_in_loader = augment_in_loader
        self.out_size = self.stores[0].augment.output_size
        self.epoch = 0
        self.skip = 0
        self._open: dict[int, Store] = {}

    @property
    def n_streams(self) -> int:
        return self.world_size * self.loader_workers

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(self.stores, self.seed, epoch, self.n_streams, self.batch_size)

    def steps_in_epoch(self, epoch: int) -> int:
        """Batches this rank's loader yields in ``epoch`` (the same on every rank)."""
        return self.plan(epoch).batches_per_stream * self.loader_workers

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start the next iteration at ``epoch``, after its first ``skip`` batches."""
        self.epoch = epoch
        self.skip = skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        if info is not None and info.num_workers != self.loader_workers:
            raise RuntimeError("DataLoader num_workers differs from the plan's loader_workers")
        # Batch s of the epoch comes from local stream s % W. The DataLoader asks its
        # workers round-robin from worker 0, so after skipping `skip` batches worker i
        # serves local stream (i + skip) % W, which has yielded ceil((skip - that) / W).
        local = (worker + self.skip) % self.loader_workers
        skip_mine = (self.skip - local + self.loader_workers - 1) // self.loader_workers
        stream = self.rank * self.loader_workers + local
        plan = self.plan(self.epoch)
        try:
            yield from self._batches(plan.streams[stream], stream, plan.batches_per_stream,
                                     max(0, skip_mine))
        except StoreError as exc:
            yield {"error": str(exc)}

    def _store(self, index: int) -> Store:
        if index not in self._open:
            self._open[index] = open_store(self.stores[index].path)
        return self._open[index]

    def _windows(self, chunks: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        g = self.shuffle_chunks
        return [chunks[i:i + g] for i in range(0, len(chunks), g)]

    def _load_window(
        self, window: list[tuple[int, int]], stream: int, index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode a window's chunks; return (stacked uint8 (n, C+1, H, W), store index
        per example), both in the window's shuffled order."""
        parts, owners = [], []
        for s, c in window:
            data = self._store(s).read_chunk(c, verify=True)
            parts.append(np.concatenate([data.images, data.masks], axis=-1))
            owners.append(np.full(len(data.images), s, dtype=np.int64))
        stacked = np.concatenate(parts).transpose(0, 3, 1, 2)
        owner = np.concatenate(owners)
        perm = np.random.default_rng(
            [self.seed, _WINDOW_ORDER, self.epoch, stream, index]
        ).permutation(len(owner))
        return np.ascontiguousarray(stacked[perm]), owner[perm]

    def _batches(
        self, chunks: list[tuple[int, int]], stream: int, n_batches: int, skip: int
    ) -> Iterator[dict[str, Any]]:
        windows = self._windows(chunks)
        sizes = [sum(self.stores[s].chunk_lengths[c] for s, c in w) for w in windows]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        b = self.batch_size
        loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for k in range(skip, n_batches):
            lo, hi = k * b, (k + 1) * b
            first = int(np.searchsorted(starts, lo, side="right")) - 1
            last = int(np.searchsorted(starts, hi, side="left")) - 1
            for w in list(loaded):
                if w < first:
                    del loaded[w]
            pieces, owners = [], []
            for w in range(first, last + 1):
                if w not in loaded:
                    loaded[w] = self._load_window(windows[w], stream, w)
                stacked, owner = loaded[w]
                a, z = max(lo, starts[w]) - starts[w], min(hi, starts[w + 1]) - starts[w]
                pieces.append(stacked[a:z])
                owners.append(owner[a:z])
            yield self._make_batch(np.concatenate(pieces), np.concatenate(owners), stream, k)

    def _make_batch(
        self, stacked: np.ndarray, owner: np.ndarray, stream: int, k: int
    ) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, _AUGMENT, self.epoch, stream, k])
        params = np.concatenate([self.stores[s].augment.draw(rng, 1) for s in owner])
        tensor = torch.from_numpy(stacked)
        if self.augment_in_loader:
            return {"stacked": apply_augment(tensor, params, self.out_size)}
        return {"stacked": tensor, "params": torch.from_numpy(params)}


def make_loader(dataset: ShardStream, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` with its planned number of worker processes
    (0: read in the training process; the batches are the same as with 1)."""
    processes = dataset.loader_processes
    return DataLoader(
        dataset, batch_size=None, num_workers=processes, pin_memory=pin_memory,
        prefetch_factor=4 if processes else None,
    )
