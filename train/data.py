"""Streaming training examples out of NSA shard stores, in an order fixed by the seed.

Why it is built this way:

- Whole chunks are the unit of reading (one Zarr chunk per array, checked against its
  checksum), so a worker decodes each example once and never seeks.
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
- Errors met in a worker (a damaged chunk, an S3 server that stopped answering) travel as
  ``{"error": exception}`` items (a :class:`~nsa.errors.UserError`) rather than as raised
  exceptions, so the trainer can stop with its one line and exit code.
- One loader (:func:`make_loader`) serves every epoch: its processes outlive an epoch and
  read the epoch to serve from shared memory (:meth:`ShardStream.set_epoch`), so each
  opens the stores, and on S3 makes its client, once per training.
- Each stream reads its chunks, in the order it will use them, up to
  ``PREFETCH_CHUNKS`` ahead in ``PREFETCH_THREADS`` background threads, so that fetching
  (an S3 GET per array and chunk) overlaps with decoding and augmenting; the chunks and
  batches are the same as without.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import json
import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nsa.generate.presets import MODEL_STRIDE
from nsa.generate.shards import ChunkData, Store, StoreError, open_store
from nsa.train.augment import AugmentSpec, apply_augment
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nsa.errors import OutputError, UserError
from nsa.locations import LocationError, is_url, parse_location

# Domain tags keep the generators of different purposes apart for the same seed.
_CHUNK_ORDER, _WINDOW_ORDER, _AUGMENT = 0, 1, 2
#: Batches each loader process prepares ahead.
PREFETCH = 4
#: Where torch puts the tensors loader processes hand over.
SHARED_MEMORY = "/dev/shm"
#: Chunks each stream reads ahead of the one it decodes, and the threads that read them.
PREFETCH_CHUNKS = 4
PREFETCH_THREADS = 2


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
    fingerprint: str = ""

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
            "fingerprint": self.fingerprint,
        }


#: Store attributes that decide its content (besides the chunks' checksums).
_CONTENT_ATTRS = ("n", "chunk_size", "height", "width", "channels", "seed", "preset",
                  "settings", "source")


def store_fingerprint(store: Store) -> str:
    """SHA-256 (hex) of what a store holds: its settings, seed, source files (with their
    hashes) and the checksum of every chunk. Two stores with the same fingerprint hold the
    same examples; reading it costs one small array, not the data (and nothing more than
    opening the store did). Raises :class:`StoreError` when the checksums are unreadable."""
    digest = hashlib.sha256()
    content = {name: store.attrs.get(name) for name in _CONTENT_ATTRS}
    digest.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    digest.update(np.ascontiguousarray(store.checksums()).tobytes())  # read when opened
    return digest.hexdigest()


def open_training_stores(paths: Sequence[str | Path]) -> list[StoreInfo]:
    """Open and check the stores to train on together.

    Raises :class:`StoreError` (one line, naming the store) when one is missing,
    incomplete or given twice, when they differ in resolution or channels, when their
    augmentations give different output sizes, or when that size does not suit the model.
    """
    if not paths:
        raise StoreError("no stores given (--shards)")
    infos: list[StoreInfo] = []
    seen: set[str] = set()
    for path in paths:
        location = parse_location(path)
        if location.key() in seen:
            raise StoreError(f"{path}: store given twice")
        seen.add(location.key())
        store = open_store(location)
        settings = dict(store.attrs.get("settings") or {})
        shown = location.shown
        infos.append(StoreInfo(
            path=str(shown.resolve() if isinstance(shown, Path) else shown),
            n=store.n, chunk_size=store.chunk_size,
            height=store.height, width=store.width, channels=store.channels,
            seed=store.attrs.get("seed"), preset=store.attrs.get("preset"),
            settings=settings,
            augment=AugmentSpec.from_settings(settings, store.height, store.width),
            fingerprint=store_fingerprint(store),
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
    if out_h % MODEL_STRIDE or out_w % MODEL_STRIDE:
        raise StoreError(
            f"{first.path}: the model needs sides that are multiples of {MODEL_STRIDE}, "
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
    or ``{"error": exception}`` (a :class:`~nsa.errors.UserError`) when a chunk or a store
    could not be read.
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
        processes: int | None = None,
    ) -> None:
        super().__init__()
        self.stores = list(stores)
        self.seed = seed
        self.batch_size = batch_size
        self.shuffle_chunks = max(1, shuffle_chunks)
        self.loader_workers = max(1, loader_workers)  # streams per rank: 0 reads as 1
        # DataLoader processes: the streams' own count, or 0 to read every stream in the
        # training process; the batches and their order are the same either way.
        self.loader_processes = loader_workers if processes is None else processes
        if self.loader_processes not in (0, self.loader_workers):
            raise ValueError("processes must be 0 or the number of streams")
        self.rank = rank
        self.world_size = world_size
        self.augment_in_loader = augment_in_loader
        self.out_size = self.stores[0].augment.output_size
        #: Send batches from loader processes as numpy arrays through a pipe rather
        #: than as tensors in shared memory (see :func:`shared_memory_fits`).
        self.through_pipe = False
        # (epoch, skip) in shared memory: loader processes live for the whole training
        # (make_loader) and read the epoch to serve when the next iteration starts.
        self._position = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._open: dict[int, Store] = {}

    @property
    def n_streams(self) -> int:
        return self.world_size * self.loader_workers

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(self.stores, self.seed, epoch, self.n_streams, self.batch_size)

    def steps_in_epoch(self, epoch: int) -> int:
        """Batches this rank's loader yields in ``epoch`` (the same on every rank)."""
        return self.plan(epoch).batches_per_stream * self.loader_workers

    def batch_bytes(self) -> int:
        """Bytes of one batch as it leaves the loader (uint8 stack plus parameters)."""
        store = self.stores[0]
        h, w = self.out_size if self.augment_in_loader else (store.height, store.width)
        extra = 0 if self.augment_in_loader else self.batch_size * 5 * 8
        return self.batch_size * (store.channels + 1) * h * w + extra

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start the next iteration at ``epoch``, after its first ``skip`` batches (also
        in loader processes already running: call it before iterating the loader)."""
        self._position[0], self._position[1] = epoch, skip

    @property
    def epoch(self) -> int:
        return int(self._position[0])

    @property
    def skip(self) -> int:
        return int(self._position[1])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._epoch_batches(self.epoch, self.skip)

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[dict[str, Any]]:
        # Batch s of the epoch is batch s // W of local stream s % W. The DataLoader asks
        # its P processes round-robin, starting with process 0 at batch `skip`, so
        # process i serves batches skip + i, skip + i + P, ... (P = 1 in-process). P is 0
        # or W, so each stream's batches come from one process, in order.
        info = get_worker_info()
        worker, processes = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None and info.num_workers != self.loader_processes:
            raise RuntimeError("DataLoader num_workers differs from the planned processes")
        plan = self.plan(epoch)
        streams = self.loader_workers
        local: dict[int, Generator[dict[str, Any], None, None]] = {}
        error = None
        try:
            for s in range(skip + worker, streams * plan.batches_per_stream, processes):
                j, k = s % streams, s // streams
                if j not in local:
                    stream = self.rank * streams + j
                    local[j] = self._batches(plan.streams[stream], epoch, stream,
                                             plan.batches_per_stream, k)
                yield next(local[j])
        except UserError as exc:  # a damaged chunk, a lost S3 server: the error itself
            error = exc
        finally:  # the streams' reads end here, before the error leaves: a loader process
            for batches in local.values():  # that exits with S3 reads in flight crashes
                batches.close()  # (obstore's runtime outlives the interpreter's teardown)
        if error is not None:
            yield {"error": error}

    def __getstate__(self) -> dict[str, Any]:
        """What a spawned loader process gets: no opened stores (each process opens its
        own)."""
        return {**self.__dict__, "_open": {}}

    def _store(self, index: int) -> Store:
        """Store ``index``, opened in this process on first use. The training process
        opened it before: an S3 server that cannot be reached now has stopped answering
        (:class:`~nsa.errors.OutputError`, exit 1), not been given wrong."""
        if index not in self._open:
            try:
                self._open[index] = open_store(self.stores[index].path)
            except LocationError as exc:
                raise OutputError(f"{exc}; it answered when the training started") from None
        return self._open[index]

    def _windows(self, chunks: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        g = self.shuffle_chunks
        return [chunks[i:i + g] for i in range(0, len(chunks), g)]

    def _read_ahead(self, chunks: list[tuple[int, int]]
                    ) -> Generator[ChunkData, None, None]:
        """The chunks ``(store, chunk)`` in order, read and checked up to
        ``PREFETCH_CHUNKS`` ahead in background threads (a StoreError comes out in turn)."""
        for s, _ in chunks:
            self._store(s)  # open in this thread: the threads only read
        todo = iter(chunks)
        ahead: deque[Future[ChunkData]] = deque()
        with ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="nsa-read") as pool:
            try:
                for s, c in todo:
                    ahead.append(pool.submit(self._open[s].read_chunk, c, verify=True))
                    if len(ahead) > PREFETCH_CHUNKS:
                        yield ahead.popleft().result()
                while ahead:
                    yield ahead.popleft().result()
            finally:
                for future in ahead:
                    future.cancel()

    def _load_window(
        self, window: list[tuple[int, int]], epoch: int, stream: int, index: int,
        reader: Iterator[ChunkData],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode a window's chunks, taken in turn from ``reader``; return (stacked uint8
        (n, C+1, H, W), store index per example), both in the window's shuffled order."""
        parts, owners = [], []
        for s, _ in window:
            data = next(reader)
            parts.append(np.concatenate([data.images, data.masks], axis=-1))
            owners.append(np.full(len(data.images), s, dtype=np.int64))
        stacked = np.concatenate(parts).transpose(0, 3, 1, 2)
        owner = np.concatenate(owners)
        perm = np.random.default_rng(
            [self.seed, _WINDOW_ORDER, epoch, stream, index]
        ).permutation(len(owner))
        return np.ascontiguousarray(stacked[perm]), owner[perm]

    def _batches(
        self, chunks: list[tuple[int, int]], epoch: int, stream: int, n_batches: int,
        skip: int,
    ) -> Generator[dict[str, Any], None, None]:
        windows = self._windows(chunks)
        sizes = [sum(self.stores[s].chunk_lengths[c] for s, c in w) for w in windows]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        b = self.batch_size
        # Windows are loaded in order from the one holding batch `skip` on, never twice.
        first_window = int(np.searchsorted(starts, skip * b, side="right")) - 1
        last_window = int(np.searchsorted(starts, n_batches * b, side="left")) - 1
        reader = self._read_ahead([chunk for window in windows[first_window:last_window + 1]
                                   for chunk in window])
        try:
            yield from self._cut_batches(windows, starts, epoch, stream, skip, n_batches,
                                         reader)
        finally:
            reader.close()  # waits for the reads in flight

    def _cut_batches(self, windows: list[list[tuple[int, int]]], starts: np.ndarray,
                     epoch: int, stream: int, skip: int, n_batches: int,
                     reader: Iterator[ChunkData]) -> Iterator[dict[str, Any]]:
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
                    loaded[w] = self._load_window(windows[w], epoch, stream, w, reader)
                stacked, owner = loaded[w]
                a, z = max(lo, starts[w]) - starts[w], min(hi, starts[w + 1]) - starts[w]
                pieces.append(stacked[a:z])
                owners.append(owner[a:z])
            yield self._make_batch(np.concatenate(pieces), np.concatenate(owners), epoch,
                                   stream, k)

    def _make_batch(
        self, stacked: np.ndarray, owner: np.ndarray, epoch: int, stream: int, k: int
    ) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, _AUGMENT, epoch, stream, k])
        params = np.concatenate([self.stores[s].augment.draw(rng, 1) for s in owner])
        tensor = torch.from_numpy(stacked)
        if self.augment_in_loader:
            batch = {"stacked": apply_augment(tensor, params, self.out_size)}
        else:
            batch = {"stacked": tensor, "params": torch.from_numpy(params)}
        if self.through_pipe and get_worker_info() is not None:
            return {key: value.numpy() for key, value in batch.items()}
        return batch


def shared_memory_fits(dataset: ShardStream, factor: int = 1,
                       where: str | Path = SHARED_MEMORY) -> bool:
    """Whether ``where`` (``/dev/shm``) has room for the batches the loader processes
    hold at once (``PREFETCH`` each, plus two being used), with a quarter to spare;
    ``factor`` such loaders share it (the DDP workers of one machine).

    Torch hands a batch from a loader process to the trainer as a file there; when the
    room runs out, the batch is lost with a traceback and the epoch silently shortened.
    True when nothing is shared (in-process loading) or ``where`` does not exist.
    """
    if dataset.loader_processes == 0:
        return True
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return True
    held = (PREFETCH * dataset.loader_processes + 2) * dataset.batch_bytes() * factor
    return held * 5 // 4 <= free


def _as_tensors(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
            for key, value in batch.items()}


def _unchanged(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def _start_loader_process(worker: int) -> None:
    """Set up a loader process (DataLoader's ``worker_init_fn``).

    - Keep its garbage collector off what it inherited from the training process (a
      forked one): a full collection touches every object, and so copies every page that
      holds one (torch, zarr, botocore's models: measured, creating the S3 client in a
      loader process cost 0.55 CPU s and 33k page faults this way, 0.14 s frozen).
    - Let it end without the interpreter's teardown (a spawned one; a forked one ends so
      anyway): after a failed S3 read, obstore's runtime threads outlived zarr's event
      loop there and the process died of a segfault, which torch reports with two
      "ERROR:" lines and, at times, a traceback in place of the one-line error. A loader
      process holds nothing to flush or save; registered last, this runs first.
    """
    gc.freeze()
    atexit.register(os._exit, 0)


class BatchLoader:
    """A DataLoader over a :class:`ShardStream`, iterated once per epoch (see
    :func:`make_loader`); :meth:`close` ends its processes."""

    def __init__(self, loader: DataLoader, as_tensors: bool) -> None:
        self._loader: DataLoader | None = loader
        self._as_tensors = as_tensors

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._loader is None:
            raise RuntimeError("the loader is closed")
        batches = iter(self._loader)
        return (_as_tensors(batch) for batch in batches) if self._as_tensors else batches

    def close(self) -> None:
        """End the loader processes now. torch ends them when the loader is collected,
        which a traceback holding the trainer's frames puts off until the interpreter
        exits; multiprocessing then kills them, and torch reports each with a traceback."""
        iterator = getattr(self._loader, "_iterator", None)  # torch's, while processes run
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader = None


def _process_start(dataset: ShardStream) -> BaseContext | None:
    """How loader processes start: forked (None: torch's default) for stores on disk;
    spawned, as fresh interpreters, when a store is on S3. The S3 reader (obstore) runs
    its requests on a Rust (tokio) runtime that does not survive ``fork`` once used, and
    the training process has used it to open the stores: a forked child's reads hang for
    good. A spawned process costs about 4 CPU s of imports, once per training (the
    processes serve every epoch), and starts with this process's environment, working
    folder and CPUs as they are now (a fork server's children would get the server's)."""
    if not any(is_url(store.path) for store in dataset.stores):
        return None
    return multiprocessing.get_context("spawn")


def make_loader(dataset: ShardStream, pin_memory: bool = False) -> BatchLoader:
    """The loader of ``dataset``: each iteration gives the batches of the epoch last set
    with :meth:`ShardStream.set_epoch`, read by the planned number of loader processes
    (0: in the training process; the batches are the same either way).

    The processes start with the first iteration and serve every later one (each keeps
    its opened stores, their checksums and, on S3, its client: a new process an epoch
    paid 0.14 CPU s for a client and 17 requests to open a store again); they end with
    :meth:`BatchLoader.close`, or when the loader is garbage collected. With
    ``dataset.through_pipe`` they send numpy arrays through a pipe instead of shared
    memory; they come out as tensors all the same.
    """
    processes = dataset.loader_processes
    loader = DataLoader(
        dataset, batch_size=None, num_workers=processes, pin_memory=pin_memory,
        prefetch_factor=PREFETCH if processes else None,
        persistent_workers=processes > 0,
        multiprocessing_context=_process_start(dataset) if processes else None,
        collate_fn=_unchanged if dataset.through_pipe else None,
        worker_init_fn=_start_loader_process if processes else None,
    )
    return BatchLoader(loader, as_tensors=dataset.through_pipe)
