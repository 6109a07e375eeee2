"""The NSA shard store: the one definition of the format that ``nsa-gen`` writes and
``nsa-train`` reads.

A store is a Zarr v3 group. Every array is chunked along the example axis with the same
``chunk_size``, so chunk ``i`` of every array holds examples ``[i*chunk_size, (i+1)*chunk_size)``
and one writer (one Ray task) owns all of them: zarr loses data silently when two writers
touch one chunk.

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
- ``checksums`` (n_chunks, 32) uint8, one row per chunk: SHA-256 over the chunk's bytes
  of every array above, written by the chunk's writer *after* its data. An all-zero row
  means the chunk is not written yet; that is how ``--resume`` finds what is missing.

Group attributes: ``format`` and ``format_version``, ``preset``, ``settings`` (fully
resolved), ``seed``, ``n``, ``chunk_size``, ``height``, ``width``, ``channels``,
``source`` (kind, description, ``files`` with content hashes), ``versions``, ``reasons``,
``created``, and ``complete`` which is ``False`` until every chunk is written and checked;
it is set last. Readers refuse incomplete stores unless asked explicitly.

Every reader goes through :func:`open_store`, which checks the arrays against the
attributes (:func:`check_structure`) and names the first contradiction in one line, so a
hand-edited or truncated store fails there rather than as a KeyError later. One process
writes a store at a time: the writer holds :func:`writer_lock` (``.<name>.lock`` beside
the store) from before creation to the end.

A store is a local folder or an ``s3://bucket/key`` prefix (:mod:`nsa.locations`); every
function here takes either, as a path, a URL string or a location.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from nsa.generate.presets import SettingsError, check_recorded_settings
from zarr.codecs import BloscCodec, BloscShuffle

from nsa.errors import CheckFailed, UserError, writing
from nsa.locations import LocalLocation, Location, S3Location, parse_location, s3_writer_lock
from nsa.progress import progress_bar

FORMAT = "nsa-shards"
FORMAT_VERSION = 1
MAX_PATCHES = 4
DEFAULT_CHUNK_SIZE = 64
# Blosc lz4 level 5 with bit shuffle. Synthesis makes an ELPV example in ~1.4 ms, so every
# 0.1 ms spent storing it costs 7% of a worker. Measured on 64 ELPV examples at 256 px
# (bench/generation.py, and per codec): zstd-3 with byte shuffle (a no-op for uint8)
# compressed at 0.58 ms per example; zstd-1 with bit shuffle at 0.14 ms (39.3 kB per
# example on disk, 2 workers at 63% of twice the engine rate); lz4-5 with bit shuffle at
# 0.05 ms (48.8 kB, 71%), and it reads back twice as fast (3.7 against 7.6 ms per chunk).
COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle)

#: Arrays that hold one row per example, in the order their bytes enter a chunk checksum.
EXAMPLE_ARRAYS = ("images", "masks", "labels", "dest_index", "source_index", "boxes", "reason")


class StoreError(UserError):
    """A store that is missing, incomplete, damaged or does not match what was asked."""


class StoreDamaged(StoreError):
    """A store whose arrays or attributes contradict each other (hand-edited, truncated)."""


@dataclass(frozen=True)
class ChunkData:
    """All arrays of one chunk (or one slice of examples), as numpy arrays."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    dest_index: np.ndarray
    source_index: np.ndarray
    boxes: np.ndarray
    reason: np.ndarray

    def checksum(self) -> np.ndarray:
        """SHA-256 over every array's bytes in ``EXAMPLE_ARRAYS`` order, as 32 uint8."""
        digest = hashlib.sha256()
        for name in EXAMPLE_ARRAYS:
            digest.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        return np.frombuffer(digest.digest(), dtype=np.uint8).copy()


def label_to_mask(label: np.ndarray) -> np.ndarray:
    """Quantise a float label map in [0, 1] of shape (H, W) to the stored (H, W, 1) uint8."""
    return np.rint(np.clip(label, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None]


def mask_to_label(mask: np.ndarray) -> np.ndarray:
    """Turn stored uint8 masks back into float32 labels in [0, 1] (any leading shape)."""
    return mask.astype(np.float32) / 255.0


def n_chunks(n: int, chunk_size: int) -> int:
    return -(-n // chunk_size)


def array_specs(n: int, height: int, width: int, channels: int,
                chunk_size: int) -> dict[str, tuple[tuple[int, ...], str, tuple[int, ...], int]]:
    """Every array of a store: ``name -> (shape, dtype, chunks, fill value)``.

    The one statement of the layout, used to create a store and to check one.
    """
    cs = chunk_size
    return {
        "images": ((n, height, width, channels), "uint8", (cs, height, width, channels), 0),
        "masks": ((n, height, width, 1), "uint8", (cs, height, width, 1), 0),
        "labels": ((n,), "uint8", (cs,), 0),
        "dest_index": ((n,), "int32", (cs,), -1),
        "source_index": ((n,), "int32", (cs,), -1),
        "boxes": ((n, MAX_PATCHES, 4), "int16", (cs, MAX_PATCHES, 4), -1),
        "reason": ((n,), "uint8", (cs,), 0),
        "checksums": ((n_chunks(n, cs), 32), "uint8", (1, 32), 0),
    }


def create_store(
    path: str | Path | Location,
    *,
    n: int,
    height: int,
    width: int,
    channels: int,
    chunk_size: int,
    attrs: dict[str, Any],
) -> zarr.Group:
    """Create an empty store with ``complete: False``; ``attrs`` adds the provenance.

    The store is built in a hidden sibling folder and renamed to ``path`` when its
    metadata is whole, so a kill at any moment leaves either nothing at ``path`` or a
    store that ``--resume`` can finish. ``path`` must not exist; the caller holds
    :func:`writer_lock`, so the hidden folders of other pids are leftovers of killed runs.
    An OSError (no space left) becomes an :class:`~nsa.errors.OutputError` naming ``path``.
    On S3, where nothing can be renamed, the arrays' metadata is written first and the
    group's (which makes it a store) last; :func:`store_exists` counts arrays' metadata
    alone as nothing, and this function clears it.
    """
    location = parse_location(path)
    if channels not in (1, 3):
        raise StoreError(f"{location}: channels must be 1 or 3, not {channels}")
    if isinstance(location, S3Location):
        return _create_s3(location, n=n, height=height, width=width, channels=channels,
                          chunk_size=chunk_size, attrs=attrs)
    path = location.path
    if path.exists():
        raise StoreError(f"{path} already exists")
    building = path.with_name(f".{path.name}.creating-{os.getpid()}")
    with writing(path), _removed_on_error(building):
        for stale in path.parent.glob(f".{path.name}.creating-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        group = zarr.open_group(str(building), mode="w", zarr_format=3)
        _fill_new_group(group, n=n, height=height, width=width, channels=channels,
                        chunk_size=chunk_size, attrs=attrs)
        os.rename(building, path)
        return zarr.open_group(str(path), mode="r+", zarr_format=3)


def _fill_new_group(group: zarr.Group, *, n: int, height: int, width: int, channels: int,
                    chunk_size: int, attrs: dict[str, Any]) -> None:
    for name, (shape, dtype, chunks, fill) in array_specs(
            n, height, width, channels, chunk_size).items():
        group.create_array(name, shape=shape, dtype=dtype, chunks=chunks,
                           compressors=COMPRESSOR, fill_value=fill)
    group.attrs.update(
        {
            **attrs,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "n": n,
            "height": height,
            "width": width,
            "channels": channels,
            "chunk_size": chunk_size,
            "complete": False,
        }
    )


#: What a creation on S3 killed before its last write leaves: array metadata only.
_CREATION_KEYS = frozenset(f"{name}/zarr.json" for name in array_specs(1, 1, 1, 1, 1))


def store_exists(path: str | Path | Location) -> bool:
    """Whether anything is at ``path``, not counting what an interrupted creation on S3
    left (see :func:`create_store`)."""
    location = parse_location(path)
    if isinstance(location, LocalLocation):
        return location.exists()
    keys = location.list_keys()
    return bool(keys) and not set(keys) <= _CREATION_KEYS


def _create_s3(location: S3Location, **layout: Any) -> zarr.Group:
    if store_exists(location):
        raise StoreError(f"{location} already exists")
    location.remove()  # what a killed creation left: array metadata, no group
    built: dict[str, Any] = {}
    _fill_new_group(zarr.open_group(zarr.storage.MemoryStore(built), mode="w",
                                    zarr_format=3), **layout)
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


class Store:
    """Read access to a store; also used by the writer to fill and finish it."""

    def __init__(self, path: str | Path | Location, group: zarr.Group) -> None:
        self.location = parse_location(path)
        #: The folder (a Path) or the URL (a str), as messages name the store.
        self.path: Path | str = self.location.shown
        self.group = group
        #: Arrays by name, opened once (each opening reads its metadata: a GET on S3).
        self._arrays: dict[str, zarr.Array] = {}
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.n: int = self.attrs["n"]
        self.chunk_size: int = self.attrs["chunk_size"]
        self.height: int = self.attrs["height"]
        self.width: int = self.attrs["width"]
        self.channels: int = self.attrs["channels"]
        self.n_chunks = n_chunks(self.n, self.chunk_size)

    def array(self, name: str) -> zarr.Array:
        """The array ``name`` of the store (opened on first use)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    @property
    def complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    def chunk_slice(self, index: int) -> slice:
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} out of range 0..{self.n_chunks - 1}")
        start = index * self.chunk_size
        return slice(start, min(start + self.chunk_size, self.n))

    def read_chunk(self, index: int, verify: bool = True) -> ChunkData:
        """Read chunk ``index`` of every array; with ``verify``, check its SHA-256.

        Raises :class:`StoreError` naming the chunk when it is unreadable or its bytes do
        not match the recorded checksum.
        """
        sl = self.chunk_slice(index)
        try:
            data = ChunkData(**{name: self.array(name)[sl] for name in EXAMPLE_ARRAYS})
            stored = self.array("checksums")[index]
        except Exception as exc:  # zarr/numcodecs raise many types for damaged chunks
            raise StoreError(f"{self.path}: chunk {index} is unreadable ({exc})") from exc
        if verify and not np.array_equal(data.checksum(), stored):
            raise StoreError(f"{self.path}: chunk {index} does not match its checksum")
        return data

    def written_chunks(self) -> np.ndarray:
        """Boolean per chunk: True where the writer recorded a checksum (chunk finished).

        Raises :class:`StoreDamaged` when the checksum array cannot be read.
        """
        return _written_chunks(self.path, self.group)

    def chunk_problem(self, index: int, written: bool) -> str | None:
        """What is wrong with chunk ``index`` (``"missing"``, ``"does not match its
        checksum"``, ...), or None; ``written`` is its entry of :meth:`written_chunks`."""
        if not written:
            return "missing"
        try:
            self.read_chunk(index, verify=True)
        except StoreError as exc:
            return str(exc).split(f"chunk {index} ", 1)[-1]
        return None

    def write_chunk(self, index: int, data: ChunkData) -> None:
        """Write chunk ``index`` of every array, then its checksum (the 'done' marker).

        Only the task that owns chunk ``index`` may call this: zarr does not survive two
        writers on one chunk. Chunks are written even when they hold only the fill value:
        zarr's test for that took 10 of the 13 ms of writing a 4 MB mask chunk (measured),
        and every written chunk then has its file.
        """
        sl = self.chunk_slice(index)
        with writing(self.path), zarr.config.set({"array.write_empty_chunks": True}):
            for name in EXAMPLE_ARRAYS:
                self.array(name)[sl] = getattr(data, name)
            self.array("checksums")[index] = data.checksum()

    def summary(self) -> dict[str, Any]:
        """What ``nsa-gen info`` prints: shape, provenance, progress and label counts."""
        written = self.written_chunks()
        reasons = self.attrs.get("reasons", [])
        done = np.repeat(written, self.chunk_size)[: self.n]
        counts = np.bincount(self.group["reason"][:][done], minlength=len(reasons))
        labels = self.group["labels"][:][done]
        source = self.attrs.get("source", {})
        if isinstance(self.location, S3Location):
            size = self.location.size_bytes()
        else:
            size = sum(f.stat().st_size for f in self.location.path.rglob("*") if f.is_file())
        return {
            "path": str(self.path),
            "complete": self.complete,
            "n": self.n,
            "shape": [self.height, self.width, self.channels],
            "chunks_written": int(written.sum()),
            "chunks": self.n_chunks,
            "chunk_size": self.chunk_size,
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
    NSA store, has another format version, or is incomplete and ``allow_incomplete`` is
    False; :class:`StoreDamaged` when its arrays or attributes contradict each other
    (see :func:`check_structure`); :class:`~nsa.locations.LocationError` when an S3
    store's server, bucket or credentials are not there.
    """
    location = parse_location(path)
    path = location.shown
    location.check()
    if not location.exists():
        raise StoreError(f"{path}: no such store")
    try:
        group = zarr.open_group(location.zarr_store(read_only=mode == "r"), mode=mode,
                                zarr_format=3)
    except Exception as exc:  # zarr raises many types for what is not a v3 group
        raise StoreError(f"{path}: not a Zarr v3 group ({exc.__class__.__name__})") from exc
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path}: not an NSA shard store (format={attrs.get('format')!r})")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {attrs.get('format_version')}, "
            f"this nsa-pipeline reads version {FORMAT_VERSION}"
        )
    check_structure(path, group)
    if not attrs.get("complete", False) and not allow_incomplete:
        raise StoreError(
            f"{path}: store is incomplete (generation was interrupted); "
            "finish it with `nsa-gen ... --resume`"
        )
    return Store(location, group)


_DIMENSIONS = ("n", "chunk_size", "height", "width", "channels")


def check_structure(path: Path | str, group: zarr.Group) -> None:
    """Check that the store's arrays are what its attributes say; raise :class:`StoreDamaged`
    with one line naming the first contradiction.

    Checked: ``n``, ``chunk_size``, ``height``, ``width``, ``channels`` are positive
    integers (channels 1 or 3); ``settings``, when present, passes
    :func:`~nsa.generate.presets.check_recorded_settings`; every array exists with
    the shape, dtype and chunks those imply (:func:`array_specs`); and a store marked
    ``complete`` has a checksum for every chunk.
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
                        attrs["chunk_size"])
    for name, (shape, dtype, chunks, _) in specs.items():
        try:
            array = group[name]
        except KeyError:
            raise damaged(f"array {name!r} is missing") from None
        except (ValueError, TypeError) as exc:  # unreadable zarr.json
            raise damaged(f"array {name!r} has unreadable metadata ({exc})") from None
        if not isinstance(array, zarr.Array):
            raise damaged(f"{name!r} is not an array")
        found = {"shape": tuple(array.shape), "dtype": str(array.dtype),
                 "chunks": tuple(array.chunks)}
        for what, expected in (("shape", shape), ("dtype", dtype), ("chunks", chunks)):
            if found[what] != expected:
                raise damaged(
                    f"array {name!r} has {what} {found[what]}, the attributes (n, "
                    f"chunk_size, height, width, channels) imply {expected}")
    if attrs.get("complete", False):
        written = _written_chunks(path, group)
        if not written.all():
            missing = np.flatnonzero(~written)
            raise damaged(f"marked complete but {missing.size} of {written.size} chunks "
                          f"have no checksum (first: chunk {missing[0]})")


def _written_chunks(path: Path | str, group: zarr.Group) -> np.ndarray:
    try:
        return group["checksums"][:].any(axis=1)
    except Exception as exc:  # zarr/numcodecs raise many types for damaged chunks
        raise StoreDamaged(
            f"{path}: damaged store: the checksums array is unreadable ({exc})") from exc


def format_summary(summary: dict[str, Any]) -> str:
    """:meth:`Store.summary` as aligned ``key: value`` lines."""
    written = summary["examples_written"]
    lines = {
        "store": summary["path"],
        "complete": "yes" if summary["complete"] else
        f"no ({summary['chunks_written']} of {summary['chunks']} chunks written)",
        "examples": f"{summary['n']} of {'x'.join(map(str, summary['shape']))} uint8, "
                    f"{summary['chunks']} chunk{'s' * (summary['chunks'] != 1)} of "
                    f"{summary['chunk_size']}",
        "preset": summary["preset"],
        "seed": summary["seed"],
        "source": summary["source"],
        "anomalous": f"{summary['anomalous']} of {written} written"
                     + (f" ({summary['anomalous'] / written:.1%})" if written else ""),
        "no anomaly because": ", ".join(f"{k} {v}" for k, v in summary["skipped"].items())
                              or "-",
        "on disk": f"{summary['bytes'] / 1e6:,.1f} MB"
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

    Raises :class:`~nsa.errors.CheckFailed` (exit 1) naming every missing, unreadable or
    corrupted chunk by index, or the store's first structural damage. An incomplete store
    whose written chunks are intact raises CheckFailed saying so (``--resume`` finishes
    it). A missing or non-store ``path`` raises
    :class:`StoreError` (exit 2).
    """
    try:
        store = open_store(path, allow_incomplete=True)
    except StoreDamaged as exc:
        raise CheckFailed(str(exc)) from None
    bad: list[str] = []
    bar = progress_bar("chunks")
    bar.disable = not progress
    bar.start()
    task = bar.add_task("verifying", total=store.n_chunks)
    unwritten = 0
    try:
        written = store.written_chunks()  # once: one file per chunk
        for index in range(store.n_chunks):
            if not store.complete and not written[index]:
                unwritten += 1  # not yet generated: --resume makes it, nothing is damaged
            else:
                problem = store.chunk_problem(index, bool(written[index]))
                if problem:
                    bad.append(f"chunk {index} {problem}")
            bar.advance(task)
    finally:
        bar.stop()
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise CheckFailed(f"{store.path}: {len(bad)} of {store.n_chunks} chunks bad: {shown}")
    if unwritten:
        raise CheckFailed(
            f"{store.path}: incomplete, not damaged: {store.n_chunks - unwritten} of "
            f"{store.n_chunks} chunks written and intact; finish it with the same nsa-gen "
            "command and --resume")
    return store.n_chunks
