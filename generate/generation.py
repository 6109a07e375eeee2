"""Generate an NSA shard store with Ray: one task per shard, resumable, reproducible.

Why it is built this way:

- Example ``i`` is ``make_example(sources, settings, seed, i)``, a pure function, so the
  bytes of a store do not depend on how many workers made it or in which order.
- A Ray task owns one shard of every array (see :mod:`nsa.generate.shards`): zarr loses
  data silently when two writers touch one shard. The task makes the shard's examples
  into preallocated arrays, writes each array's shard file whole, then the shard's chunk
  checksums, the marker that its chunks are done. ``--resume`` therefore redoes exactly
  the shards with a chunk without checksum, and produces what an uninterrupted run would
  have; ``nsa-gen verify`` re-reads every chunk against its checksum. (Reading a chunk
  back in the task would cost ~0.25 ms per ELPV example, against ~1.5 ms to make one.)
- A task's fixed costs (Ray's scheduling, writing 8 files) are paid once per shard (up
  to 16 chunks), not once per chunk, and a store has ~8 files per shard instead of per
  chunk. A worker opens the store and fetches the sources once per run, not per task.
- The source images are resized once in the driver, their object masks computed once,
  and the resulting ``SourceSet`` put into the object store once; workers read it without
  copying. At most ``workers`` tasks run at once, each holding one shard in memory, so
  memory does not grow with ``n``; a second task per worker waits in Ray's queue when
  Ray's CPUs allow no more than ``workers`` at once (tasks return only a count).
- One ``nsa-gen`` writes a store at a time (a ``flock`` held from before creation, also by
  ``--resume``; the kernel drops it when the holder dies, so ``kill -9`` + ``--resume``
  works). A full disk, in the driver or in a task, is one line naming the store, and the
  shards written so far stay resumable.
- Everything that can be wrong with the input is checked before the store is created, so
  bad input never leaves anything that looks like a store on disk; ``complete: true`` is
  written last, after every chunk is accounted for.

The store path must be reachable under the same name from every Ray node (a shared file
system when ``--address`` names a multi-machine cluster), or be an ``s3://`` URL (see
:mod:`nsa.locations`: every node then needs the S3 credentials in its environment).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from nsa.generate import shards
from nsa.generate.anomaly_rate import check_anomaly_rate
from nsa.generate.images import read_images, with_white_level
from nsa.generate.presets import (
    IMPLIED_SETTINGS,
    preset_names,
    resolve_settings,
    upgrade_settings,
)
from nsa.generate.sources import Source
from nsa.generate.synthesis import SKIP_REASONS, SourceSet, make_example, prepare_sources

from nsa.errors import UserError, os_error
from nsa.locations import Location, S3Location, endpoint_lost, parse_location, s3_failures
from nsa.progress import progress_bar
from nsa.ray_session import check_cluster, ray_session
from nsa.versions import package_versions

#: Attributes that must match for ``--resume`` to continue a store.
IDENTITY_KEYS = ("preset", "settings", "seed", "n", "chunk_size", "height", "width",
                 "channels")


def shard_arrays(count: int, shape: tuple[int, int, int]) -> shards.ChunkData:
    """Empty arrays for ``count`` examples of ``shape`` (H, W, C), as :func:`shard_data`
    fills them (shapes and dtypes as in :func:`~nsa.generate.shards.array_specs`)."""
    height, width, channels = shape
    return shards.ChunkData(
        images=np.empty((count, height, width, channels), np.uint8),
        masks=np.empty((count, height, width, 1), np.uint8),
        labels=np.empty(count, np.uint8),
        dest_index=np.empty(count, np.int32),
        source_index=np.empty(count, np.int32),
        boxes=np.empty((count, shards.MAX_PATCHES, 4), np.int16),
        reason=np.empty(count, np.uint8),
    )


def shard_data(sources: SourceSet, settings: dict[str, Any], seed: int, rows: range,
               out: shards.ChunkData | None = None) -> shards.ChunkData:
    """Make examples ``rows`` into the stored arrays (one row per example), filled in
    place so that a task holds one copy of its shard.

    ``out``: arrays of :func:`shard_arrays` with at least ``len(rows)`` rows and the
    sources' shape, to fill and return the first rows of (a worker's arrays, reused from
    shard to shard: numpy's new arrays cost a page fault per 4 KiB at their first touch,
    0.12 CPU ms per 256 px ELPV example, 3% of the engine; ``bench/generation.py``
    measures the store path); every value of those rows is overwritten."""
    count = len(rows)
    if out is None:
        out = shard_arrays(count, sources.shape)
    elif len(out) < count or out.images.shape[1:] != sources.shape:
        raise ValueError(f"arrays for {len(out)} examples of {out.images.shape[1:]} cannot "
                         f"hold {count} of {sources.shape}")
    data = out.rows(0, count)
    data.boxes.fill(-1)
    scalars = []  # (image label, dest, source, reason) per row, stored once at the end
    for row, index in enumerate(rows):
        example = make_example(sources, settings, seed, index, data.images[row])
        shards.label_to_mask(example.label, data.masks[row], example.label_window or (0,) * 4)
        if example.boxes:
            data.boxes[row, :len(example.boxes)] = example.boxes[:shards.MAX_PATCHES]
        scalars.append((example.image_label, example.dest_index, example.source_index,
                        SKIP_REASONS.index(example.reason)))
    if scalars:
        columns = np.array(scalars, np.int64).T
        data.labels[:], data.dest_index[:], data.source_index[:], data.reason[:] = columns
    return data


def write_shard(path: Path | Location, sources: SourceSet, settings: dict[str, Any], seed: int,
                shard: int) -> int:
    """Make and write shard ``shard`` of the store at ``path``; return its example count.

    What one Ray task does (with the store its worker keeps open), callable in-process.
    """
    return _fill_shard(shards.open_store(path, allow_incomplete=True, mode="r+"), sources,
                       settings, seed, shard)


def _fill_shard(store: shards.Store, sources: SourceSet, settings: dict[str, Any], seed: int,
                shard: int, arrays: shards.ChunkData | None = None) -> int:
    span = store.shard_slice(shard)
    store.write_shard(shard, shard_data(sources, settings, seed, range(span.start, span.stop),
                                        arrays))
    return span.stop - span.start


@dataclass
class _WorkerRun:
    """What the Ray worker running this module holds for the run it last worked for: its
    next tasks of that run skip opening the store (~10 metadata reads and checks, ~4 ms)
    and deserializing the SourceSet (~7 ms for ELPV's 441 images), which cost a
    64-example shard 8% of its time, and fill the same shard arrays. One run at a time: a
    task of another run replaces it, so a worker keeps at most one SourceSet mapped and
    one shard's arrays and files (at most ``MAX_SHARD_BYTES`` each), until then or until
    the worker exits, which a Ray job's workers do when its driver ends."""

    run: str
    store: shards.Store
    sources: SourceSet
    arrays: shards.ChunkData


_worker_run: _WorkerRun | None = None


def _write_shard_task(run: str, path: Path | Location, sources_ref: list[Any],
                      settings: dict[str, Any], seed: int, shard: int) -> int:
    """Write shard ``shard`` as :func:`write_shard` does, in a Ray worker of run ``run``
    (``sources_ref``: the SourceSet's object reference in a list, so that Ray passes the
    reference instead of the object and the worker fetches it once per run).

    One task per CPU, so no nested thread pools: OpenCV and Blosc get one thread each
    (Ray already sets OMP_NUM_THREADS=1 for a one-CPU task, which numpy's BLAS reads)."""
    import cv2
    import ray
    from numcodecs import blosc

    global _worker_run
    cv2.setNumThreads(1)
    blosc.set_nthreads(1)
    if _worker_run is None or _worker_run.run != run:
        _worker_run = None  # let the last run's sources and arrays go before the new ones
        store = shards.open_store(path, allow_incomplete=True, mode="r+")
        sources = ray.get(sources_ref[0])
        rows = store.shard_slice(0)
        _worker_run = _WorkerRun(run, store, sources,
                                 shard_arrays(rows.stop - rows.start, sources.shape))
    held = _worker_run
    return _fill_shard(held.store, held.sources, settings, seed, shard, held.arrays)


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
    except (shards.StoreDamaged, shards.StoreVersionError):
        return True  # an NSA store, whose parts contradict each other or of another version
    except shards.StoreError:
        return False
    return True


def _existing_hint(out: Location) -> str:
    """What to do about an existing ``out``: finish an interrupted store, replace a
    complete one, or choose another path for anything that is not an NSA store."""
    if not _is_store(out):
        if isinstance(out, S3Location) or not out.path.is_dir() or any(out.path.iterdir()):
            return "it is not an NSA store: choose another --out"
        return "it is an empty folder: pass --overwrite to write the store into it"
    try:
        shards.open_store(out)
    except shards.StoreError:
        return "pass --resume to finish it or --overwrite to replace it"
    return "it is a complete store (nsa-gen verify checks it): pass --overwrite to replace it"


def _check_out(out: Location, resume: bool, overwrite: bool) -> None:
    if not shards.store_exists(out):
        return
    if resume:
        try:
            shards.open_store(out, allow_incomplete=True)
        except (shards.StoreDamaged, shards.StoreVersionError):
            raise
        except shards.StoreError as exc:
            reason = str(exc).removeprefix(f"{out}: ")
            raise UserError(f"{out}: --resume needs an NSA store here ({reason})") from None
        return
    if not overwrite:
        raise UserError(f"{out} already exists; {_existing_hint(out)}")
    if not _is_store(out) and (isinstance(out, S3Location) or not out.path.is_dir()
                               or any(out.path.iterdir())):
        raise UserError(f"{out}: --overwrite replaces only NSA stores, and this is not one")


def _settings_difference(before: Any, now: dict[str, Any]) -> str:
    """The settings that differ between a store's record and this run's, each with both
    values and the ``--set`` that would make this run the store's (a setting a record
    leaves out has its implied value)."""
    if not isinstance(before, dict):
        return f"settings ({before!r} there)"
    there = {**IMPLIED_SETTINGS, **upgrade_settings(before)}
    here = {**IMPLIED_SETTINGS, **now}
    names = [name for name in sorted(set(there) | set(here)) if there.get(name) != here.get(name)]
    values = "; ".join(f"{name} ({there.get(name)!r} there, {here.get(name)!r} now)"
                       for name in names)
    sets = " ".join(f"--set {name}={json.dumps(there[name])}" for name in names
                    if name in there and name not in ("preset", "settings_version"))
    return f"settings: {values}" + (f" (to finish it as it was made: {sets})" if sets else "")


def _resume_mismatch(attrs: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first attribute that differs between an existing store and this run."""
    for key in IDENTITY_KEYS:
        # settings recorded by an older version are compared as this version records them
        before = upgrade_settings(attrs.get(key)) if key == "settings" else attrs.get(key)
        if before != wanted[key]:
            if key == "settings":
                return _settings_difference(attrs.get(key), wanted[key])
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
    """Generate ``n`` examples from ``source`` into the store ``out``; return its path.

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
    with s3_failures(location, _RESUME_HINT), \
            shards.writer_lock(location) as lock:  # one nsa-gen per store, also --resume
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
            run_shards(store, sources, settings, seed, workers, progress)
        check_anomaly_rate(store)
        if lock is not None:
            lock.check()  # an S3 lock taken over while we ran: leave finishing to its taker
        _finish(store)


def _open_or_create(out: Location, wanted: dict[str, Any], resume: bool) -> shards.Store:
    if resume and shards.store_exists(out):
        store = shards.open_store(out, allow_incomplete=True, mode="r+")
        mismatch = _resume_mismatch(store.attrs, wanted)
        if mismatch:
            raise UserError(f"{out}: cannot resume, the store was made with different {mismatch}")
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


def run_shards(store: shards.Store, sources: SourceSet, settings: dict[str, Any], seed: int,
               workers: int | None = None, progress: bool = True) -> None:
    """Write every shard of ``store`` that has a chunk without checksum, as Ray tasks, at
    most ``workers`` at a time (default: every CPU of the Ray cluster); Ray must be running.

    The generation phase of :func:`generate_store`, public so that benchmarks can time it
    without Ray's start-up and the image loading.
    """
    import ray

    pending = deque(int(s) for s in np.flatnonzero(~store.written_shards()))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    concurrent = workers or cpus
    # When Ray's CPUs already cap the tasks running at once (a local Ray of `workers`
    # CPUs), a second task per worker waits in Ray's queue: a worker that finishes a shard
    # starts the next at once instead of idling until this loop has submitted one.
    in_flight_cap = 2 * concurrent if cpus <= concurrent else concurrent
    task = ray.remote(num_cpus=1, max_retries=0)(_write_shard_task)
    sources_ref = ray.put(sources)
    run = uuid.uuid4().hex
    path = store.location.absolute()  # workers need not share the driver's working folder

    def size(shard: int) -> int:
        span = store.shard_slice(shard)
        return span.stop - span.start

    bar = progress_bar("examples")
    bar.disable = not progress
    bar.start()
    bar_task = bar.add_task("generating", total=store.n,
                            completed=store.n - sum(map(size, pending)))
    in_flight: dict[Any, int] = {}  # task -> shard index
    try:
        while pending or in_flight:
            while pending and len(in_flight) < in_flight_cap:
                shard = pending.popleft()
                ref = task.remote(run, path, [sources_ref], settings, seed, shard)
                in_flight[ref] = shard
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            shard = in_flight.pop(ready[0])
            bar.advance(bar_task, _result(ready[0], store, shard))
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated: the command ends
        # Its tasks end with it: ray.shutdown stops a local Ray's workers, a cluster ends a
        # job's tasks when its driver exits. Cancelling them here raced with the reply of a
        # task finishing at that moment and aborted Ray's core worker ("Tried to complete
        # task that was not pending", ray 2.60; ray-project/ray#54798): exit 1, not 130.
        in_flight.clear()
        raise
    finally:
        for ref in in_flight:  # after a failed task: the run's other tasks stop writing
            ray.cancel(ref, force=True)
        bar.stop()


#: What to do when the S3 server stopped answering in the middle of a run.
_RESUME_HINT = "the shards written so far are kept: run the same command with --resume"


def _result(ref: Any, store: shards.Store, shard: int) -> int:
    """The task's result. A UserError raised in a task comes out as itself, an OSError as
    the one-line error of :func:`~nsa.errors.os_error` naming the store; a lost
    worker or node becomes a one-line UserError (a bug in the task keeps its traceback)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        lost = endpoint_lost(exc.cause, store.location, _RESUME_HINT)
        if lost is not None:  # the S3 server stopped answering the worker
            raise lost from None
        if isinstance(exc.cause, OSError):  # e.g. the store's disk failed in the worker
            raise os_error(exc.cause, store.path) from None
        raise
    except ray.exceptions.RayError as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        chunks = store.shard_chunk_range(shard)
        raise UserError(
            f"{store.path}: shard {shard} (chunks {chunks.start}-{chunks.stop - 1}) failed "
            f"({exc.__class__.__name__}: {first_line}); finished shards are kept, rerun "
            "with --resume"
        ) from None


def _finish(store: shards.Store) -> None:
    """Mark the store complete once every chunk has its checksum."""
    missing = np.flatnonzero(~store.written_chunks())
    if missing.size:
        raise shards.StoreError(f"{store.path}: chunks {missing.tolist()[:5]} were not written")
    store.mark_complete()
