"""The NSA shard store: the one definition of the format that ``nsa-gen`` writes and
``nsa-train`` reads (format version 3; docs/store-format.md states it for any Zarr client).

A store is a Zarr v3 group. Every example array is cut along the example axis into
*chunks* of ``chunk_size`` examples (the unit of compression, of a checksum and of a
read) and stored in *shards* of ``shard_chunks`` consecutive chunks (Zarr v3 sharding:
one file per shard and array). Shard ``s`` of every array holds chunks
``[s*shard_chunks, (s+1)*shard_chunks)`` and exactly one writer (one Ray task) owns all
of them: zarr loses data silently when two writers touch one shard, so the only writer
API is :meth:`Store.write_shard`, which writes a whole shard of every array and then its
checksums (:meth:`Store.write_chunk` rewrites one chunk in place and is for a process
that holds the whole store: tests and repairs).

Arrays (N examples, H x W pixels, C = 1 or 3 channels):

- ``images``   (N, H, W, C) uint8: the synthetic example.
- ``masks``    (N, H, W, 1) uint8: the pixel label map in [0, 1] stored as round(255 * label).
  The quantisation error (at most 1/510) is far below the label noise of NSA's own
  tolerance, and uint8 compresses several times better than float.
- ``labels``   (N,) uint8: image-level label, 1 when any mask pixel is positive.
- ``dest_index``, ``source_index`` (N,) int32: indices into ``attrs["source"]["files"]``.
- ``boxes``    (N, MAX_PATCHES, 4) int16: blended patch boxes (y0, x0, y1, x1) in the
  result, half-open; rows of -1 where no patch was blended.
- ``reason``   (N,) uint8: index into ``attrs["reasons"]``; 0 means at least one patch
  was blended, others say why an example has no anomaly.
- ``checksums`` (n_chunks, 16) uint8, one row per chunk: XXH3-128 over the chunk's bytes
  of every array above (:meth:`ChunkData.checksum`), written by the shard's writer
  *after* its data, one (unsharded) Zarr chunk of ``shard_chunks`` rows per shard. An
  all-zero row means the chunk is not written yet; ``--resume`` redoes every shard with
  such a row.

Group attributes: ``format`` and ``format_version``, ``preset``, ``settings`` (fully
resolved), ``seed``, ``n``, ``chunk_size``, ``shard_chunks``, ``height``, ``width``,
``channels``, ``source`` (kind, description, ``files`` with content hashes), ``versions``,
``reasons``, ``created``, and ``complete`` which is ``False`` until every chunk is written
and checked; it is set last. Readers refuse incomplete stores unless asked explicitly,
and stores of another format version always (versions 1 and 2 are refused with a line
saying to regenerate the store: the same command and seed give the same examples).

Every reader goes through :func:`open_store`, which checks the arrays against the
attributes (:func:`check_structure`) and names the first contradiction in one line, so a
hand-edited or truncated store fails there rather than as a KeyError later. Tools over a
store are linear in its size: the checksums are read once per opening (a read-only
:class:`Store` keeps them), and :func:`verify_store` reads each shard of each array once.
One process writes a store at a time: the writer holds :func:`writer_lock`
(``.<name>.lock`` beside the store) from before creation to the end.

A store is a local folder or an ``s3://bucket/key`` prefix (:mod:`nsa.locations`); every
function here takes either, as a path, a URL string or a location.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import xxhash
import zarr
import zarr.core.sync
from nsa.generate.presets import MAX_PATCHES, SettingsError, check_recorded_settings
from nsa.generate.shard_files import ShardEncoder, shard_encoder
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.core.buffer import default_buffer_prototype

from nsa.errors import CheckFailed, OutputError, UserError, writing
from nsa.locations import (
    LocalLocation,
    Location,
    S3Location,
    is_url,
    parse_location,
    s3_writer_lock,
)
from nsa.progress import progress_bar

FORMAT = "nsa-shards"
#: 1: one file per chunk and array. 2: Zarr v3 sharding, ``shard_chunks`` chunks a file.
#: 3: chunk checksums are XXH3-128 (16 bytes) instead of SHA-256 (32 bytes).
FORMAT_VERSION = 3
#: Bytes of a chunk checksum (XXH3-128).
CHECKSUM_BYTES = 16
DEFAULT_CHUNK_SIZE = 64
# Chunks per shard, the unit a Ray task makes and writes whole. A shard is at most
# MAX_SHARD_CHUNKS chunks (1,024 examples of 64: 8 files per 1,024 examples instead of 8
# per 64, a 200k store ~1.6k files instead of ~25k) and at most MAX_SHARD_BYTES of raw
# images and masks (a task holds its shard in memory: 32 MiB at 128 px grey, 128 MiB at
# 256 px RGB), and a store has at least MIN_SHARDS shards while it has that many chunks,
# so that a few workers finish together (the last shard's wait is at most 1/32 of the run
# per worker) and small stores still spread over every worker.
MAX_SHARD_CHUNKS = 16
MAX_SHARD_BYTES = 128 * 2**20
MIN_SHARDS = 32
# Blosc lz4 level 5 with bit shuffle. Synthesis makes an ELPV example in ~1.4 ms, so every
# 0.1 ms spent storing it costs 7% of a worker. Measured on 64 ELPV examples at 256 px
# (bench/generation.py, and per codec): zstd-3 with byte shuffle (a no-op for uint8)
# compressed at 0.58 ms per example; zstd-1 with bit shuffle at 0.14 ms (39.3 kB per
# example on disk, 2 workers at 63% of twice the engine rate); lz4-5 with bit shuffle at
# 0.05 ms (48.8 kB, 71%), and it reads back twice as fast (3.7 against 7.6 ms per chunk).
COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle)
# The pixel label maps are mostly zeros with a few flat regions, which lz4 finds without
# the bit shuffle: on 640 ELPV maps at 128 px, 31.7x smaller and 0.007 ms per example to
# compress without it, 16.4x and 0.019 ms with it (images: 1.41x with, 1.05x without).
MASK_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.noshuffle)

#: Arrays that hold one row per example, in the order their bytes enter a chunk checksum.
EXAMPLE_ARRAYS = ("images", "masks", "labels", "dest_index", "source_index", "boxes", "reason")


class StoreError(UserError):
    """A store that is missing, incomplete, damaged or does not match what was asked."""


class StoreDamaged(StoreError):
    """A store whose arrays or attributes contradict each other (hand-edited, truncated)."""


class StoreVersionError(StoreError):
    """An NSA store of another format version than this code reads."""


@dataclass(frozen=True)
class ChunkData:
    """All example arrays of one chunk, one shard or any run of examples, as numpy arrays
    with one row per example (shapes and dtypes as in :func:`array_specs`)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    dest_index: np.ndarray
    source_index: np.ndarray
    boxes: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, start: int, stop: int) -> ChunkData:
        """Examples ``[start, stop)`` of every array (views, not copies)."""
        return ChunkData(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def checksum(self) -> np.ndarray:
        """XXH3-128 (xxHash 0.8, seed 0) over every array's bytes in ``EXAMPLE_ARRAYS``
        order, as the 16 uint8 of its canonical (big-endian) digest.

        The checksum catches damaged, truncated or misplaced chunks, not forgery (whoever
        can rewrite a chunk can rewrite its checksum): XXH3-128's collision odds for
        different data are 2**-128, as good as a cryptographic hash's for that purpose,
        at about 0.1 of SHA-256's CPU (0.014 against 0.10 ms per 256 px ELPV example,
        3% of what a worker spent per example in format version 2). Hashes the arrays'
        buffers in place, without copies."""
        digest = xxhash.xxh3_128()
        for name in EXAMPLE_ARRAYS:
            digest.update(np.ascontiguousarray(getattr(self, name)))
        return np.frombuffer(digest.digest(), dtype=np.uint8).copy()


def label_to_mask(label: np.ndarray, out: np.ndarray | None = None,
                  window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Quantise an (H, W) float label map to the stored (H, W, 1) uint8: round(255 *
    clip(label, 0, 1)) in the label's dtype, halves to even (as ``np.rint``).

    ``out``: an (H, W, 1) uint8 array to write into (a row of a shard's ``masks``),
    returned. ``window``: (y0, x0, y1, x1) outside which ``label`` is 0, so that only
    the window is read (an example's ``label_window``; an empty window for an all-zero
    label); by default the whole label. A float32 label within [0, 1], as the synthesis
    makes, takes one pass of OpenCV's ``convertScaleAbs`` (the same bytes as numpy's
    multiply and rint in float32, checked on every 97th float32 in [0, 1]) at a fifth of
    numpy's CPU."""
    if out is None:
        out = np.empty((*label.shape, 1), np.uint8)
    rows, columns = slice(None), slice(None)
    if window is not None:
        out.fill(0)
        rows, columns = slice(window[0], window[2]), slice(window[1], window[3])
    part, into = label[rows, columns], out[rows, columns, 0]
    if part.size == 0:
        return out
    if part.dtype == np.float32 and part.min() >= 0 and part.max() <= 1:
        cv2.convertScaleAbs(part, into, 255.0)
    else:  # other dtypes, values outside [0, 1] (|x| and inf go wrong above), NaN
        into[...] = np.rint(np.clip(part, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def mask_to_label(mask: np.ndarray) -> np.ndarray:
    """Turn stored uint8 masks back into float32 labels in [0, 1] (any leading shape)."""
    return mask.astype(np.float32) / 255.0


def n_chunks(n: int, chunk_size: int) -> int:
    """How many pieces of ``chunk_size`` hold ``n`` (the last one may be short)."""
    return -(-n // chunk_size)


def default_shard_chunks(n: int, chunk_size: int, height: int, width: int,
                         channels: int) -> int:
    """Chunks per shard for a new store: at most ``MAX_SHARD_CHUNKS`` and
    ``MAX_SHARD_BYTES`` of images and masks, and few enough for ``MIN_SHARDS`` shards;
    at least 1. A function of the store's shape alone, never of the worker count."""
    chunk_bytes = chunk_size * height * width * (channels + 1)
    return max(1, min(MAX_SHARD_CHUNKS, n_chunks(n, chunk_size) // MIN_SHARDS,
                      MAX_SHARD_BYTES // chunk_bytes))


class ArraySpec(NamedTuple):
    """One array of a store: shape, dtype, chunk shape, shard shape (None: unsharded),
    fill value."""

    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    fill: int


def array_specs(n: int, height: int, width: int, channels: int, chunk_size: int,
                shard_chunks: int) -> dict[str, ArraySpec]:
    """Every array of a store by name: the one statement of the layout, used to create a
    store and to check one."""
    cs, rows = chunk_size, chunk_size * shard_chunks
    example = {
        "images": ((height, width, channels), "uint8", 0),
        "masks": ((height, width, 1), "uint8", 0),
        "labels": ((), "uint8", 0),
        "dest_index": ((), "int32", -1),
        "source_index": ((), "int32", -1),
        "boxes": ((MAX_PATCHES, 4), "int16", -1),
        "reason": ((), "uint8", 0),
    }
    specs = {name: ArraySpec((n, *tail), dtype, (cs, *tail), (rows, *tail), fill)
             for name, (tail, dtype, fill) in example.items()}
    specs["checksums"] = ArraySpec((n_chunks(n, cs), CHECKSUM_BYTES), "uint8",
                                   (shard_chunks, CHECKSUM_BYTES), None, 0)
    return specs


def create_store(
    path: str | Path | Location,
    *,
    n: int,
    height: int,
    width: int,
    channels: int,
    chunk_size: int,
    attrs: dict[str, Any],
    shard_chunks: int | None = None,
) -> zarr.Group:
    """Create an empty store with ``complete: False``; ``attrs`` adds the provenance.

    ``shard_chunks`` (chunks per shard, 1 to the store's chunk count) defaults to
    :func:`default_shard_chunks`. The store is built in a hidden sibling folder and
    renamed to ``path`` when its metadata is whole, so a kill at any moment leaves either
    nothing at ``path`` or a store that ``--resume`` can finish. ``path`` must not exist;
    the caller holds :func:`writer_lock`, so the hidden folders of other pids are
    leftovers of killed runs. An OSError (no space left) becomes an
    :class:`~nsa.errors.OutputError` naming ``path``. On S3, where nothing can be
    renamed, the arrays' metadata is written first and the group's (which makes it a
    store) last; :func:`store_exists` counts arrays' metadata alone as nothing, and this
    function clears it.
    """
    location = parse_location(path)
    path = location.shown
    if channels not in (1, 3):
        raise StoreError(f"{path}: channels must be 1 or 3, not {channels}")
    if shard_chunks is None:
        shard_chunks = default_shard_chunks(n, chunk_size, height, width, channels)
    if not 1 <= shard_chunks <= n_chunks(n, chunk_size):
        raise StoreError(f"{path}: shard_chunks must be 1 to {n_chunks(n, chunk_size)} "
                         f"(the store's chunks), not {shard_chunks}")
    layout = {"n": n, "height": height, "width": width, "channels": channels,
              "chunk_size": chunk_size, "shard_chunks": shard_chunks}
    if isinstance(location, S3Location):
        return _create_s3(location, layout, attrs)
    path = location.path
    if path.exists():
        raise StoreError(f"{path} already exists")
    building = path.with_name(f".{path.name}.creating-{os.getpid()}")
    with writing(path), _removed_on_error(building):
        for stale in path.parent.glob(f".{path.name}.creating-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        group = zarr.open_group(str(building), mode="w", zarr_format=3)
        _fill_new_group(group, layout, attrs)
        os.rename(building, path)
        return zarr.open_group(str(path), mode="r+", zarr_format=3)


def _fill_new_group(group: zarr.Group, layout: dict[str, int], attrs: dict[str, Any]) -> None:
    for name, spec in array_specs(**layout).items():
        group.create_array(name, shape=spec.shape, dtype=spec.dtype, chunks=spec.chunks,
                           shards=spec.shards,
                           compressors=(None if not spec.shards else MASK_COMPRESSOR
                                        if name == "masks" else COMPRESSOR),
                           fill_value=spec.fill)
    group.attrs.update({**attrs, "format": FORMAT, "format_version": FORMAT_VERSION,
                        **layout, "complete": False})


#: What a creation on S3 killed before its last write leaves: array metadata only.
_CREATION_KEYS = frozenset(f"{name}/zarr.json" for name in array_specs(1, 1, 1, 1, 1, 1))


def store_exists(path: str | Path | Location) -> bool:
    """Whether anything is at ``path``, not counting what an interrupted creation on S3
    left (see :func:`create_store`)."""
    location = parse_location(path)
    if isinstance(location, LocalLocation):
        return location.exists()
    keys = location.list_keys()
    return bool(keys) and not set(keys) <= _CREATION_KEYS


def _create_s3(location: S3Location, layout: dict[str, int],
               attrs: dict[str, Any]) -> zarr.Group:
    if store_exists(location):
        raise StoreError(f"{location} already exists")
    location.remove()  # what a killed creation left: array metadata, no group
    built: dict[str, Any] = {}
    _fill_new_group(zarr.open_group(zarr.storage.MemoryStore(built), mode="w",
                                    zarr_format=3), layout, attrs)
    keys = sorted(built, key=lambda key: key == "zarr.json")  # the group's metadata last
    with writing(location):
        location.put((key, built[key].to_bytes()) for key in keys)
        return zarr.open_group(location.zarr_store(), mode="r+", zarr_format=3)


@contextmanager
def _removed_on_error(folder: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@contextmanager
def writer_lock(path: str | Path | Location) -> Iterator[Any]:
    """Hold the one-writer lock of the store at ``path`` (which need not exist yet).

    An advisory ``flock`` on ``.<name>.lock`` beside the store, holding the holder's pid;
    the kernel drops it when the holder dies, even by ``kill -9``. The file is removed on
    leaving. Raises :class:`StoreError` naming the other writer's pid when it is held, or
    a one-line error from :func:`~nsa.errors.writing` when the folder is unusable.
    On S3, the lock object of :func:`nsa.locations.s3_writer_lock`, yielded so that the
    writer can :meth:`~nsa.locations.S3Lock.check` it before finishing (None locally).
    """
    location = parse_location(path)
    if isinstance(location, S3Location):
        with s3_writer_lock(location) as lock:
            yield lock
        return
    path = location.path
    lock_path = path.with_name(f".{path.name}.lock")
    existing = next(parent for parent in path.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise StoreError(f"{path}: {existing} is not a folder")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with writing(path):
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"{path}: another nsa-gen is writing this store (pid {holder})") from None
        try:  # the last holder may have removed the file between our open and flock
            current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield None
    finally:
        with writing(path):
            os.unlink(lock_path)  # while still locked: nobody can take a file about to go
            os.close(fd)


def _writing_empty_chunks(array: zarr.Array) -> zarr.Array:
    """``array`` writing chunks even when they hold only the fill value: zarr's test for
    that took 10 of the 13 ms of writing a 4 MB mask chunk, measured, and every written
    chunk then has its bytes."""
    return array.with_config({"write_empty_chunks": True})


class Store:
    """Read access to a store; also used by the writer to fill and finish it.

    Opened read-only (``mode="r"``), it reads the checksums once and keeps them; opened
    ``r+`` (by a writer, while other processes write other shards) it reads them anew
    each time they are asked for.
    """

    def __init__(self, path: str | Path | Location, group: zarr.Group,
                 checksums: np.ndarray | None = None,
                 arrays: dict[str, zarr.Array] | None = None) -> None:
        self.location = parse_location(path)
        #: The folder (a Path) or the URL (a str), as messages name the store.
        self.path: Path | str = self.location.shown
        self.group = group
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.n: int = self.attrs["n"]
        self.chunk_size: int = self.attrs["chunk_size"]
        self.shard_chunks: int = self.attrs["shard_chunks"]
        self.height: int = self.attrs["height"]
        self.width: int = self.attrs["width"]
        self.channels: int = self.attrs["channels"]
        self.n_chunks = n_chunks(self.n, self.chunk_size)
        self.n_shards = n_chunks(self.n_chunks, self.shard_chunks)
        self._read_only = group.read_only
        self._checksums = checksums if self._read_only else None
        self._arrays = {name: _writing_empty_chunks(array)
                        for name, array in (arrays or {}).items()}
        self._encoders: dict[str, ShardEncoder | None] = {}
        self._shard_files: dict[str, np.ndarray] = {}  # one per array, see _write_rows

    @property
    def complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name``, opened once (see :func:`_writing_empty_chunks`)."""
        if name not in self._arrays:
            array = self.group[name]
            assert isinstance(array, zarr.Array)  # check_structure made sure
            self._arrays[name] = _writing_empty_chunks(array)
        return self._arrays[name]

    def chunk_slice(self, index: int) -> slice:
        """The examples of chunk ``index``; IndexError when there is no such chunk."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} out of range 0..{self.n_chunks - 1}")
        start = index * self.chunk_size
        return slice(start, min(start + self.chunk_size, self.n))

    def shard_chunk_range(self, shard: int) -> range:
        """The chunks of shard ``shard``; IndexError when there is no such shard."""
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} out of range 0..{self.n_shards - 1}")
        first = shard * self.shard_chunks
        return range(first, min(first + self.shard_chunks, self.n_chunks))

    def shard_slice(self, shard: int) -> slice:
        """The examples of shard ``shard``."""
        chunks = self.shard_chunk_range(shard)
        return slice(chunks.start * self.chunk_size,
                     min(chunks.stop * self.chunk_size, self.n))

    def checksums(self) -> np.ndarray:
        """The (n_chunks, 16) uint8 checksum rows (all zero: chunk not written yet).

        Raises :class:`StoreDamaged` when the array cannot be read.
        """
        if self._checksums is not None:
            return self._checksums
        checksums = _read_checksums(self.path, self.array("checksums"))
        if self._read_only:
            self._checksums = checksums
        return checksums

    def written_chunks(self) -> np.ndarray:
        """Boolean per chunk: True where the writer recorded a checksum (chunk finished).

        Raises :class:`StoreDamaged` when the checksum array cannot be read.
        """
        return self.checksums().any(axis=1)

    def written_shards(self) -> np.ndarray:
        """Boolean per shard: True where every chunk of the shard has its checksum."""
        written = self.written_chunks()
        starts = np.arange(0, self.n_chunks, self.shard_chunks)
        return np.minimum.reduceat(written.astype(np.uint8), starts).astype(bool)

    def _read(self, rows: slice, what: str) -> ChunkData:
        """Examples ``rows`` of every array, the arrays read at once (on S3 their requests
        are in flight together, not one after another)."""
        arrays = [self.array(name).async_array for name in EXAMPLE_ARRAYS]

        async def together() -> list[Any]:
            return await asyncio.gather(*(array.getitem(rows) for array in arrays))

        try:
            values = zarr.core.sync.sync(together())
        except Exception as exc:  # zarr/numcodecs raise many types for damaged bytes
            raise self._unreadable(what, exc) from exc
        return ChunkData(**dict(zip(EXAMPLE_ARRAYS, values, strict=True)))

    def _unreadable(self, what: str, exc: Exception) -> UserError:
        """The one-line error for ``what`` (``chunk 3``) failing to read with ``exc``:
        :class:`~nsa.errors.OutputError` (exit 1) when the store is on an S3 server that
        no longer answers, else :class:`StoreError` (the bytes are damaged or missing).
        Only the first line of ``exc``'s message is kept (obstore's run to dozens)."""
        detail = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        location = self.location
        if isinstance(location, S3Location) and not location.answers():
            return OutputError(f"{self.path}: the S3 endpoint "
                               f"{location.endpoint or 'AWS S3'} stopped answering while "
                               f"{what} was read ({detail})")
        return StoreError(f"{self.path}: {what} is unreadable ({detail})")

    def read_chunk(self, index: int, verify: bool = True) -> ChunkData:
        """Read chunk ``index`` of every array; with ``verify``, check its checksum.

        Raises :class:`StoreError` naming the chunk when it is unreadable or its bytes do
        not match the recorded checksum.
        """
        data = self._read(self.chunk_slice(index), f"chunk {index}")
        if verify:
            if self._checksums is not None:
                stored = self._checksums[index]
            else:
                try:
                    stored = self.array("checksums")[index]
                except Exception as exc:  # zarr/numcodecs raise many types
                    raise self._unreadable(f"chunk {index}", exc) from exc
            if not np.array_equal(data.checksum(), stored):
                raise StoreError(f"{self.path}: chunk {index} does not match its checksum")
        return data

    def read_shard(self, shard: int) -> ChunkData:
        """Read every example of shard ``shard`` (one read per array), unchecked.

        Raises :class:`StoreError` naming the shard when it is unreadable.
        """
        return self._read(self.shard_slice(shard), f"shard {shard}")

    def chunk_problems(self, shard: int, chunks: list[int]) -> dict[int, str]:
        """What is wrong with each of ``chunks`` (written chunks of ``shard``): chunk index
        -> ``"does not match its checksum"``, ``"is unreadable (...)"``; sound chunks are
        left out. Reads the shard once, and chunk by chunk only when it is unreadable."""
        stored = self.checksums()
        try:
            data = self.read_shard(shard)
        except StoreError:
            problems = {}
            for index in chunks:
                try:
                    self.read_chunk(index, verify=True)
                except StoreError as exc:
                    problems[index] = str(exc).split(f"chunk {index} ", 1)[-1]
            return problems
        base = self.shard_slice(shard).start
        problems = {}
        for index in chunks:
            rows = self.chunk_slice(index)
            if not np.array_equal(data.rows(rows.start - base, rows.stop - base).checksum(),
                                  stored[index]):
                problems[index] = "does not match its checksum"
        return problems

    def write_shard(self, shard: int, data: ChunkData) -> None:
        """Write shard ``shard`` of every array, then its chunks' checksums (the 'done'
        marker), each a whole shard file; ``data`` holds exactly the shard's examples.

        The arrays' shard files are encoded by :mod:`~nsa.generate.shard_files` (zarr for
        a last, partial shard) and written at once (on S3, their PUTs are in flight
        together). Only the task that owns shard ``shard`` may call this: zarr does not
        survive two writers on one shard. Raises ValueError when ``data`` is not the
        shard's size.
        """
        rows = self.shard_slice(shard)
        if len(data) != rows.stop - rows.start:
            raise ValueError(f"shard {shard} holds {rows.stop - rows.start} examples, "
                             f"not {len(data)}")
        chunks = self.shard_chunk_range(shard)
        sums = np.stack([data.rows(self.chunk_slice(c).start - rows.start,
                                   self.chunk_slice(c).stop - rows.start).checksum()
                         for c in chunks])

        async def together() -> None:
            await asyncio.gather(*(self._write_rows(name, shard, rows, getattr(data, name))
                                   for name in EXAMPLE_ARRAYS))

        with writing(self.path):
            zarr.core.sync.sync(together())
            self.array("checksums")[chunks.start:chunks.stop] = sums

    async def _write_rows(self, name: str, shard: int, rows: slice, values: np.ndarray
                          ) -> None:
        """Write ``values`` as the examples ``rows`` (shard ``shard``) of array ``name``."""
        array = self.array(name)
        if name not in self._encoders:
            self._encoders[name] = shard_encoder(array)
        encoder = self._encoders[name]
        if encoder is None or rows.stop - rows.start != encoder.shard_shape[0]:
            await array.async_array.setitem(rows, values)
            return
        if name not in self._shard_files:  # reused shard after shard: see ShardEncoder
            self._shard_files[name] = np.empty(encoder.max_bytes, np.uint8)
        blob = await asyncio.to_thread(encoder.encode, values, self._shard_files[name])
        key = array.metadata.encode_chunk_key((shard,) + (0,) * (values.ndim - 1))
        await (array.store_path / key).set(default_buffer_prototype().buffer.from_array_like(blob))

    def write_chunk(self, index: int, data: ChunkData) -> None:
        """Rewrite chunk ``index`` of every array in place (zarr reads, changes and writes
        back each shard file), then its checksum.

        For a process that holds the whole store (tests, repairs); concurrent writers use
        :meth:`write_shard`, one task per shard.
        """
        rows = self.chunk_slice(index)
        with writing(self.path):
            for name in EXAMPLE_ARRAYS:
                self.array(name)[rows] = getattr(data, name)
            self.array("checksums")[index] = data.checksum()
        if self._checksums is not None:
            self._checksums[index] = data.checksum()

    def summary(self) -> dict[str, Any]:
        """What ``nsa-gen info`` prints: shape, provenance, progress and label counts.

        Reads the checksums and the (N,) ``labels`` and ``reason`` arrays once, no
        example data."""
        written = self.written_chunks()
        reasons = self.attrs.get("reasons", [])
        done = np.repeat(written, self.chunk_size)[: self.n]
        counts = np.bincount(self.array("reason")[:][done], minlength=len(reasons))
        labels = self.array("labels")[:][done]
        source = self.attrs.get("source", {})
        if isinstance(self.location, S3Location):
            size = self.location.size_bytes()
        else:
            size = sum(f.stat().st_size for f in self.location.path.rglob("*") if f.is_file())
        return {
            "path": str(self.path),
            "format_version": self.attrs.get("format_version"),
            "complete": self.complete,
            "n": self.n,
            "shape": [self.height, self.width, self.channels],
            "chunks_written": int(written.sum()),
            "chunks": self.n_chunks,
            "chunk_size": self.chunk_size,
            "shards": self.n_shards,
            "shard_chunks": self.shard_chunks,
            "preset": self.attrs.get("preset"),
            "seed": self.attrs.get("seed"),
            "source": f"{source.get('kind')}: {source.get('description')} "
                      f"({len(source.get('files', []))} images)",
            "anomalous": int(labels.sum()),
            "examples_written": int(done.sum()),
            "skipped": {name: int(counts[i]) for i, name in enumerate(reasons)
                        if i and counts[i]},
            "bytes": size,
            "created": self.attrs.get("created"),
            "versions": self.attrs.get("versions", {}),
            "warnings": list(self.attrs.get("warnings", [])),
        }

    def mark_complete(self) -> None:
        """Record that every chunk is written; the last write of a finished store."""
        with writing(self.path):
            self.group.attrs["complete"] = True
        self.attrs["complete"] = True


def open_store(path: str | Path | Location, *, allow_incomplete: bool = False,
               mode: str = "r") -> Store:
    """Open a store for reading (or ``mode="r+"`` for the writer).

    Raises :class:`StoreError` with a one-line reason when ``path`` is missing, is not an
    NSA store, or is incomplete and ``allow_incomplete`` is False;
    :class:`StoreVersionError` when it has another format version; :class:`StoreDamaged`
    when its arrays or attributes contradict each other (see :func:`check_structure`).
    Reads metadata, and the checksums of a complete store; no example data.
    :class:`~nsa.locations.LocationError` when an S3 store's server, bucket or
    credentials are not there.
    """
    location = parse_location(path)
    path = location.shown
    location.check()
    try:
        group = zarr.open_group(location.zarr_store(read_only=mode == "r"), mode=mode,
                                zarr_format=3)
    except Exception as exc:  # zarr raises many types for what is not a v3 group
        # asked only now: on S3 a HEAD and a listing, and in a fresh loader process a
        # second S3 client (0.1 to 0.5 CPU s) that a store that opens never needs
        if not location.exists():
            raise StoreError(f"{path}: no such store") from None
        raise StoreError(f"{path}: not a Zarr v3 group ({exc.__class__.__name__})") from exc
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path}: not an NSA shard store (format={attrs.get('format')!r})")
    version = attrs.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StoreDamaged(f"{path}: damaged store: attribute 'format_version' is "
                           f"{version!r}, not a version number")
    if version != FORMAT_VERSION:
        older = version < FORMAT_VERSION
        raise StoreVersionError(
            f"{path}: store format version {version!r}, this nsa-pipeline reads version "
            f"{FORMAT_VERSION} only; " + (
                "regenerate the store with the nsa-gen command that made it and "
                "--overwrite (the same seed gives the same examples)" if older else
                "read it with the nsa-pipeline that made it")
        )
    arrays: dict[str, zarr.Array] = {}
    checksums = check_structure(path, group, arrays)
    if not attrs.get("complete", False) and not allow_incomplete:
        raise StoreError(
            f"{path}: store is incomplete (generation was interrupted); "
            "finish it with `nsa-gen ... --resume`"
        )
    return Store(location, group, checksums, arrays)


_DIMENSIONS = ("n", "chunk_size", "shard_chunks", "height", "width", "channels")


def check_structure(path: Path | str, group: zarr.Group,
                    opened: dict[str, zarr.Array] | None = None) -> np.ndarray | None:
    """Check that the store's arrays are what its attributes say; raise :class:`StoreDamaged`
    with one line naming the first contradiction.

    Checked: ``n``, ``chunk_size``, ``shard_chunks``, ``height``, ``width``, ``channels``
    are positive integers (channels 1 or 3); ``settings``, when present, passes
    :func:`~nsa.generate.presets.check_recorded_settings`; every array exists with
    the shape, dtype, chunks and shards those imply (:func:`array_specs`); and a store
    marked ``complete`` has a checksum for every chunk. Returns the (n_chunks, 16)
    checksums when it read them (complete stores), else None. ``opened``, when given,
    receives the arrays by name (so that a :class:`Store` need not read their metadata
    again: one request each on S3).
    """
    attrs = dict(group.attrs)

    def damaged(problem: str) -> StoreDamaged:
        return StoreDamaged(f"{path}: damaged store: {problem}")

    for key in _DIMENSIONS:
        value = attrs.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise damaged(f"attribute {key!r} is {value!r}, not a positive integer")
    if attrs["channels"] not in (1, 3):
        raise damaged(f"attribute 'channels' is {attrs['channels']}, not 1 or 3")
    if "settings" in attrs:
        try:
            check_recorded_settings(attrs["settings"])
        except SettingsError as exc:
            raise damaged(f"attribute 'settings': {exc}") from None
    specs = array_specs(attrs["n"], attrs["height"], attrs["width"], attrs["channels"],
                        attrs["chunk_size"], attrs["shard_chunks"])
    arrays = {} if opened is None else opened
    for name, spec in specs.items():
        try:
            array = group[name]
        except KeyError:
            raise damaged(f"array {name!r} is missing") from None
        except (ValueError, TypeError) as exc:  # unreadable zarr.json
            raise damaged(f"array {name!r} has unreadable metadata ({exc})") from None
        if not isinstance(array, zarr.Array):
            raise damaged(f"{name!r} is not an array")
        arrays[name] = array
        found = {"shape": tuple(array.shape), "dtype": str(array.dtype),
                 "chunks": tuple(array.chunks),
                 "shards": None if array.shards is None else tuple(array.shards)}
        expected = spec._asdict()
        for what in ("shape", "dtype", "chunks", "shards"):
            if found[what] != expected[what]:
                raise damaged(
                    f"array {name!r} has {what} {found[what]}, the attributes (n, "
                    f"chunk_size, shard_chunks, height, width, channels) imply "
                    f"{expected[what]}")
    if not attrs.get("complete", False):
        return None
    checksums = _read_checksums(path, arrays["checksums"])
    written = checksums.any(axis=1)
    if not written.all():
        missing = np.flatnonzero(~written)
        raise damaged(f"marked complete but {missing.size} of {written.size} chunks "
                      f"have no checksum (first: chunk {missing[0]})")
    return checksums


def _read_checksums(path: Path | str, checksums: zarr.Array) -> np.ndarray:
    try:
        return np.asarray(checksums[:], dtype=np.uint8)
    except Exception as exc:  # zarr/numcodecs raise many types for damaged chunks
        raise StoreDamaged(
            f"{path}: damaged store: the checksums array is unreadable ({exc})") from exc


def format_summary(summary: dict[str, Any]) -> str:
    """:meth:`Store.summary` as aligned ``key: value`` lines."""
    written = summary["examples_written"]
    lines = {
        "store": summary["path"],
        "format": f"{FORMAT} version {summary['format_version']}",
        "complete": "yes" if summary["complete"] else
        f"no ({summary['chunks_written']} of {summary['chunks']} chunks written)",
        "examples": f"{summary['n']} of {'x'.join(map(str, summary['shape']))} uint8, "
                    f"{summary['chunks']} chunk{'s' * (summary['chunks'] != 1)} of "
                    f"{summary['chunk_size']} in {summary['shards']} "
                    f"shard{'s' * (summary['shards'] != 1)} of {summary['shard_chunks']}",
        "preset": summary["preset"],
        "seed": summary["seed"],
        "source": summary["source"],
        "anomalous": f"{summary['anomalous']} of {written} written"
                     + (f" ({summary['anomalous'] / written:.1%})" if written else ""),
        "no anomaly because": ", ".join(f"{k} {v}" for k, v in summary["skipped"].items())
                              or "-",
        ("in the bucket" if is_url(str(summary["path"])) else "on disk"):
            f"{summary['bytes'] / 1e6:,.1f} MB"
                   + (f" ({summary['bytes'] / written / 1e3:,.1f} kB per example)"
                      if written else ""),
        "created": summary["created"],
        "versions": ", ".join(f"{k} {v}" for k, v in summary["versions"].items()),
        "warnings": "; ".join(summary.get("warnings", [])) or "-",
    }
    width = max(map(len, lines))
    return "\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in lines.items())


def verify_store(path: str | Path | Location, *, progress: bool = False) -> int:
    """Re-check every chunk of the store at ``path``; return how many were checked.

    Reads the checksums once and each shard of each array once (linear in the store).
    Raises :class:`~nsa.errors.CheckFailed` (exit 1) naming every missing, unreadable or
    corrupted chunk by index, or the store's first structural damage. An incomplete store
    whose written chunks are intact raises CheckFailed saying so (``--resume`` finishes
    it). A missing or non-store ``path``, or one of another format version, raises
    :class:`StoreError` (exit 2).
    """
    try:
        store = open_store(path, allow_incomplete=True)
        written = store.written_chunks()
    except StoreDamaged as exc:
        raise CheckFailed(str(exc)) from None
    bad: list[str] = []
    bar = progress_bar("chunks")
    bar.disable = not progress
    bar.start()
    task = bar.add_task("verifying", total=store.n_chunks)
    try:
        for shard in range(store.n_shards):
            chunks = store.shard_chunk_range(shard)
            todo = [c for c in chunks if written[c]]  # the rest: not generated yet
            if todo:
                problems = store.chunk_problems(shard, todo)
                bad.extend(f"chunk {c} {problems[c]}" for c in todo if c in problems)
            bar.advance(task, len(chunks))
    finally:
        bar.stop()
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise CheckFailed(f"{store.path}: {len(bad)} of {store.n_chunks} chunks bad: {shown}")
    unwritten = int((~written).sum())
    if unwritten:
        raise CheckFailed(
            f"{store.path}: incomplete, not damaged: {store.n_chunks - unwritten} of "
            f"{store.n_chunks} chunks written and intact; finish it with the same nsa-gen "
            "command and --resume")
    return store.n_chunks
