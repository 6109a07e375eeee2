"""Generate an NSA shard store with Ray: one task per chunk, resumable, reproducible.

Why it is built this way:

- Example ``i`` is ``make_example(sources, settings, seed, i)``, a pure function, so the
  bytes of a store do not depend on how many workers made it or in which order.
- A Ray task owns one chunk of every array (see :mod:`nsa.generate.shards`): zarr loses
  data silently when two writers touch one chunk. The task writes the data, then the
  chunk's checksum, the marker that the chunk is done. ``--resume`` therefore redoes
  exactly the chunks without a checksum, and produces what an uninterrupted run would
  have; ``nsa-gen verify`` re-reads every chunk against its checksum. (Reading a chunk
  back in the task would cost ~0.25 ms per ELPV example, against ~1.5 ms to make one.)
- The source images are resized once in the driver, their object masks computed once,
  and the resulting ``SourceSet`` put into the object store once; tasks read it without
  copying. At most ``workers`` tasks are in flight, so the driver's memory and the object
  store hold only that many chunks whatever ``n`` is.
- One ``nsa-gen`` writes a store at a time (a ``flock`` held from before creation, also by
  ``--resume``; the kernel drops it when the holder dies, so ``kill -9`` + ``--resume``
  works). A full disk, in the driver or in a task, is one line naming the store, and the
  chunks written so far stay resumable.
- Everything that can be wrong with the input is checked before the store is created, so
  bad input never leaves anything that looks like a store on disk; ``complete: true`` is
  written last, after every chunk is accounted for.

The store path must be reachable under the same name from every Ray node (a shared file
system when ``--address`` names a multi-machine cluster), or be an ``s3://`` URL (see
:mod:`nsa.locations`: every node then needs the S3 credentials in its environment).
"""

from __future__ import annotations

import shutil
import uuid
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from nsa.generate import shards
from nsa.generate.anomaly_rate import check_anomaly_rate
from nsa.generate.images import read_images, with_white_level
from nsa.generate.presets import preset_names, resolve_settings
from nsa.generate.sources import Source
from nsa.generate.synthesis import SKIP_REASONS, Example, SourceSet, make_example, prepare_sources

from nsa.errors import UserError, os_error
from nsa.locations import Location, S3Location, parse_location
from nsa.progress import progress_bar
from nsa.ray_session import check_cluster, ray_session
from nsa.versions import package_versions

#: Attributes that must match for ``--resume`` to continue a store.
IDENTITY_KEYS = ("preset", "settings", "seed", "n", "chunk_size", "height", "width",
                 "channels")


def chunk_data(examples: list[Example]) -> shards.ChunkData:
    """Stack examples into the stored arrays of one chunk."""
    boxes = np.full((len(examples), shards.MAX_PATCHES, 4), -1, np.int16)
    for row, example in enumerate(examples):
        if example.boxes:
            boxes[row, :len(example.boxes)] = np.asarray(example.boxes[:shards.MAX_PATCHES])
    return shards.ChunkData(
        images=np.stack([e.image for e in examples]),
        masks=np.stack([shards.label_to_mask(e.label) for e in examples]),
        labels=np.array([e.image_label for e in examples], np.uint8),
        dest_index=np.array([e.dest_index for e in examples], np.int32),
        source_index=np.array([e.source_index for e in examples], np.int32),
        boxes=boxes,
        reason=np.array([SKIP_REASONS.index(e.reason) for e in examples], np.uint8),
    )


#: The store a Ray worker process last opened for writing, by (location, run token):
#: opening one on S3 costs a dozen requests, as many as writing a chunk.
_OPENED: dict[tuple[Path | Location, str], shards.Store] = {}


def write_chunk(path: Path | Location, sources: SourceSet, settings: dict[str, Any], seed: int,
                index: int, run: str | None = None) -> int:
    """Make and write chunk ``index`` of the store at ``path``; return its size.

    The body of one Ray task; also callable in-process. Tasks of one run (the same
    ``run`` token) reuse the store their process opened.
    """
    store = _OPENED.get((path, run)) if run else None
    if store is None:
        store = shards.open_store(path, allow_incomplete=True, mode="r+")
        if run:
            _OPENED.clear()
            _OPENED[(path, run)] = store
    span = store.chunk_slice(index)
    examples = [make_example(sources, settings, seed, i) for i in range(span.start, span.stop)]
    store.write_chunk(index, chunk_data(examples))
    return span.stop - span.start


def _write_chunk_task(path: Path | Location, sources: SourceSet, settings: dict[str, Any],
                      seed: int, index: int, run: str) -> int:
    """One task per CPU, so no nested thread pools: OpenCV and Blosc get one thread each
    (Ray already sets OMP_NUM_THREADS=1 for a one-CPU task, which numpy's BLAS reads)."""
    import cv2
    from numcodecs import blosc

    cv2.setNumThreads(1)
    blosc.set_nthreads(1)
    return write_chunk(path, sources, settings, seed, index, run)


def _check_options(n: int, seed: int, workers: int | None, chunk_size: int, resume: bool,
                   overwrite: bool) -> None:
    if n < 1:
        raise UserError(f"--n must be at least 1, not {n}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, not {seed}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    if chunk_size < 1:
        raise UserError(f"--chunk-size must be at least 1, not {chunk_size}")
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")


def _is_store(path: Location) -> bool:
    try:
        shards.open_store(path, allow_incomplete=True)
    except shards.StoreDamaged:
        return True  # an NSA store, whose parts contradict each other
    except shards.StoreError:
        return False
    return True


def _check_out(out: Location, resume: bool, overwrite: bool) -> None:
    if not shards.store_exists(out):
        return
    if resume:
        try:
            shards.open_store(out, allow_incomplete=True)
        except shards.StoreDamaged:
            raise
        except shards.StoreError as exc:
            reason = str(exc).removeprefix(f"{out}: ")
            raise UserError(f"{out}: --resume needs an NSA store here ({reason})") from None
        return
    if not overwrite:
        raise UserError(f"{out} already exists; pass --resume to finish it or --overwrite "
                        "to replace it")
    if not _is_store(out) and (isinstance(out, S3Location) or not out.path.is_dir()
                               or any(out.path.iterdir())):
        raise UserError(f"{out}: --overwrite replaces only NSA stores, and this is not one")


def _resume_mismatch(attrs: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first attribute that differs between an existing store and this run."""
    for key in IDENTITY_KEYS:
        if attrs.get(key) != wanted[key]:
            return f"{key} ({attrs.get(key)!r} there, {wanted[key]!r} now)"
    old, new = attrs.get("source", {}), wanted["source"]
    if old.get("kind") != new["kind"]:
        return f"source kind ({old.get('kind')!r} there, {new['kind']!r} now)"
    old_hashes = [f.get("sha256") for f in old.get("files", [])]
    new_hashes = [f["sha256"] for f in new["files"]]
    if old_hashes != new_hashes:
        return (f"source images ({len(old_hashes)} files there, {len(new_hashes)} now, "
                "or their contents differ)")
    return None


def source_settings(source: Source, preset: str | None = None,
                    overrides: dict[str, Any] | None = None,
                    size: int | None = None) -> dict[str, Any]:
    """Resolved settings for ``source``: its default preset unless ``preset`` is given,
    with ``overrides`` and ``size`` (the ``--size`` option) applied."""
    preset = preset or source.default_preset
    if preset is None:
        raise UserError(f"{source.kind} source: choose a --preset ({', '.join(preset_names())})")
    overrides = dict(overrides or {})
    if size is not None:
        if size < 1:
            raise UserError(f"--size must be a positive number of pixels, not {size}")
        overrides["size"] = size
    return resolve_settings(preset, overrides)


def generate_store(
    source: Source,
    out: Path | str | Location,
    *,
    n: int,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    size: int | None = None,
    chunk_size: int = shards.DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> Path | str:
    """Generate ``n`` examples from ``source`` into the store ``out`` (a folder or an
    ``s3://`` URL); return its path (the URL for S3).

    ``preset`` defaults to the source's; ``overrides`` and ``size`` change settings.
    ``workers`` caps concurrent tasks (default: every CPU of the local machine or the
    cluster at ``address``). ``resume`` finishes an interrupted store made with the same
    settings, seed, n and source images (and starts one when ``out`` does not exist);
    ``overwrite`` replaces an existing store. Holds :func:`~nsa.generate.shards.writer_lock`
    throughout, so a second writer of ``out`` fails at once with a :class:`UserError`.
    An S3 store whose server, bucket or credentials are missing fails in seconds, before
    anything is read or written.
    """
    location = parse_location(out)
    _check_options(n, seed, workers, chunk_size, resume, overwrite)
    location.check()
    check_cluster(address)  # fail in seconds, before reading any image
    settings = source_settings(source, preset, overrides, size)
    with shards.writer_lock(location) as lock:  # one nsa-gen per store, also --resume
        _generate_locked(source, location, settings, n, seed, workers, address, resume,
                         overwrite, chunk_size, progress, lock)
    return location.shown


def _generate_locked(source: Source, out: Location, settings: dict[str, Any], n: int,
                     seed: int, workers: int | None, address: str | None, resume: bool,
                     overwrite: bool, chunk_size: int, progress: bool, lock: Any) -> None:
    preset = settings["preset"]
    _check_out(out, resume, overwrite)

    loaded = read_images(source.files, settings["size"], progress=progress)
    settings = with_white_level(settings, loaded.white_level)
    sources = prepare_sources(loaded.images, settings)
    height, width, channels = sources.shape
    wanted = {
        "preset": preset, "settings": settings, "seed": seed, "n": n,
        "chunk_size": chunk_size, "height": height, "width": width, "channels": channels,
        "source": source.attrs(),
    }

    store = _open_or_create(out, wanted, resume)
    if not store.complete:
        with ray_session(address, workers if address is None else None):
            run_chunks(store, sources, settings, seed, workers, progress)
        check_anomaly_rate(store)
        if lock is not None:
            lock.check()  # an S3 lock taken over while we ran: leave finishing to its taker
        _finish(store)


def _open_or_create(out: Location, wanted: dict[str, Any], resume: bool) -> shards.Store:
    if resume and shards.store_exists(out):
        store = shards.open_store(out, allow_incomplete=True, mode="r+")
        mismatch = _resume_mismatch(store.attrs, wanted)
        if mismatch:
            raise UserError(f"{out}: cannot resume, the store was made with another {mismatch}")
        return store
    if isinstance(out, S3Location):  # --overwrite (checked by _check_out), or leftovers
        out.remove()
    elif out.path.is_dir():  # --overwrite, checked to be a store or empty by _check_out
        shutil.rmtree(out.path)
    attrs = {
        **{k: wanted[k] for k in ("preset", "settings", "seed", "source")},
        "reasons": list(SKIP_REASONS),
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    shards.create_store(out, n=wanted["n"], height=wanted["height"], width=wanted["width"],
                        channels=wanted["channels"], chunk_size=wanted["chunk_size"],
                        attrs=attrs)
    return shards.open_store(out, allow_incomplete=True, mode="r+")


def run_chunks(store: shards.Store, sources: SourceSet, settings: dict[str, Any], seed: int,
               workers: int | None = None, progress: bool = True) -> None:
    """Write every chunk of ``store`` that has no checksum yet, as Ray tasks, at most
    ``workers`` at a time (default: every CPU of the Ray cluster); Ray must be running.

    The generation phase of :func:`generate_store`, public so that benchmarks can time it
    without Ray's start-up and the image loading.
    """
    import ray

    pending = deque(int(i) for i in np.flatnonzero(~store.written_chunks()))
    in_flight_cap = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1, max_retries=0)(_write_chunk_task)
    sources_ref = ray.put(sources)
    path = store.location.absolute()  # workers need not share the driver's working folder
    run = uuid.uuid4().hex
    done = store.n - sum(store.chunk_slice(i).stop - store.chunk_slice(i).start
                         for i in pending)
    bar = progress_bar("examples")
    bar.disable = not progress
    bar.start()
    bar_task = bar.add_task("generating", total=store.n, completed=done)
    in_flight: dict[Any, int] = {}  # task -> chunk index
    try:
        while pending or in_flight:
            while pending and len(in_flight) < in_flight_cap:
                index = pending.popleft()
                ref = task.remote(path, sources_ref, settings, seed, index, run)
                in_flight[ref] = index
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            index = in_flight.pop(ready[0])
            bar.advance(bar_task, _result(ready[0], store.path, index))
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        bar.stop()


def _result(ref: Any, path: Path | str, index: int) -> int:
    """The task's result. A UserError raised in a task comes out as itself, an OSError as
    the one-line error of :func:`~nsa.errors.os_error` naming the store; a lost
    worker or node becomes a one-line UserError (a bug in the task keeps its traceback)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        if isinstance(exc.cause, OSError):  # e.g. the store's disk failed in the worker
            raise os_error(exc.cause, path) from None
        raise
    except ray.exceptions.RayError as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(
            f"{path}: chunk {index} failed ({exc.__class__.__name__}: {first_line}); "
            "finished chunks are kept, rerun with --resume"
        ) from None


def _finish(store: shards.Store) -> None:
    """Mark the store complete once every chunk has its checksum."""
    missing = np.flatnonzero(~store.written_chunks())
    if missing.size:
        raise shards.StoreError(f"{store.path}: chunks {missing.tolist()[:5]} were not written")
    store.mark_complete()
