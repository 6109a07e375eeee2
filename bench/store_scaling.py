"""Time of the tools over a store as the store grows: ``verify``, ``info``, opening for
training and a full read, at several sizes, and each one's ratio to the full read.

Every tool over a store should be linear in its size, so each ratio should stay flat (or
fall) from the smallest store to the largest; a tool that re-reads a whole array once per
chunk shows a ratio growing with the store. Measured in this process, on stores in the page
cache (written just before), best of 3:

- full read: every chunk of every example array, chunk by chunk as the training loader
  reads them (``Store.read_chunk`` without the checksum);
- verify: :func:`~nsa.generate.shards.verify_store` (what ``nsa-gen verify`` runs);
- info: opening the store and :meth:`~nsa.generate.shards.Store.summary` (``nsa-gen info``);
- open: :func:`~nsa.train.data.open_training_stores` (what ``nsa-train`` does first).

The stores are synthetic by default (smooth random images with a rectangle anomaly,
written in this process in the format's default layout). With ``--generate`` they are
real ``nsa-gen elpv --type mono`` stores, and the table adds generation's wall time,
examples/s and the peak resident memory (VmHWM) of the driver and of the largest Ray
worker, which should stay flat as ``n`` grows; ``--loader`` adds one epoch of the
training loader (one process, batch 64) in examples/s.

Run: ``.venv/bin/python bench/store_scaling.py`` (base 2,000 examples at 1x, 4x, 16x; about a
minute on 2 cores), or e.g. ``--generate --sizes 1000 4000 16000 --workers 2``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nsa.generate import shards
from nsa.generate.presets import resolve_settings
from nsa.train.data import ShardStream, make_loader, open_training_stores

#: Each time is the best of this many runs (other processes only ever slow a run down).
REPEATS = 3


def write_synthetic_store(path: Path, n: int, size: int) -> Path:
    """A complete grey store of ``n`` examples at ``size`` px in the default layout, one
    :meth:`~nsa.generate.shards.Store.write_shard` per shard (compresses like photos more
    than white noise would)."""
    rng = np.random.default_rng(0)
    settings = resolve_settings("elpv", {"size": size})
    shards.create_store(path, n=n, height=size, width=size, channels=1,
                        chunk_size=shards.DEFAULT_CHUNK_SIZE,
                        attrs={"preset": "elpv", "settings": settings, "seed": 0,
                               "reasons": ["", "no-change"],
                               "source": {"kind": "synthetic", "description": "bench",
                                          "files": []}})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    yy, xx = np.mgrid[0:size, 0:size] / size
    for shard in range(store.n_shards):
        rows = store.shard_slice(shard)
        m = rows.stop - rows.start
        phase = rng.uniform(0, 6.28, (m, 1, 1, 1))
        base = 120 + 60 * np.sin(6 * yy[None, ..., None] + 4 * xx[None, ..., None] + phase)
        images = np.clip(base + rng.normal(0, 6, (m, size, size, 1)), 0, 255)
        masks = np.zeros((m, size, size, 1), np.uint8)
        masks[:, size // 4: size // 2, size // 3: size // 2] = 204
        store.write_shard(shard, shards.ChunkData(
            images=images.astype(np.uint8), masks=masks, labels=np.ones(m, np.uint8),
            dest_index=np.zeros(m, np.int32), source_index=np.ones(m, np.int32),
            boxes=np.full((m, shards.MAX_PATCHES, 4), -1, np.int16),
            reason=np.zeros(m, np.uint8)))
    store.mark_complete()
    return path


@dataclass(frozen=True)
class Generation:
    """Figures of one ``nsa-gen`` run: wall seconds, examples/s, peak RSS in MB of the
    driver and of the largest Ray worker."""

    wall: float
    rate: float
    driver_mb: float
    worker_mb: float


def _peak_kb(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid`` in kB, 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _ray_workers(session: int) -> list[int]:
    """Ray worker processes (command line ``ray::...``) of the session ``session``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) == session and cmdline.startswith(b"ray::"):
            found.append(int(entry))
    return found


def generate_elpv_store(path: Path, n: int, size: int, workers: int) -> Generation:
    """Run ``nsa-gen elpv --type mono`` into ``path`` and sample the peak memory of its
    driver and Ray workers every 0.2 s. Raises SystemExit when the command fails."""
    command = [str(Path(sys.executable).parent / "nsa-gen"), "elpv", "--type", "mono",
               "--n", str(n), "--size", str(size), "--workers", str(workers),
               "--out", str(path), "--no-progress"]
    start = time.perf_counter()
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
    driver = worker = 0
    while process.poll() is None:
        driver = max(driver, _peak_kb(process.pid))
        worker = max([worker, *map(_peak_kb, _ray_workers(process.pid))])
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return Generation(wall, n / wall, driver / 1e3, worker / 1e3)


def best_time(run: Callable[[], object], repeats: int = REPEATS) -> float:
    """The shortest wall time in seconds of ``repeats`` calls of ``run``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def full_read(path: Path) -> None:
    """Read every chunk of every example array, chunk by chunk."""
    store = shards.open_store(path)
    for index in range(store.n_chunks):
        store.read_chunk(index, verify=False)


def tool_times(path: Path, repeats: int = REPEATS) -> dict[str, float]:
    """Seconds of a full read, verify, info and opening for training on the store."""
    return {
        "read": best_time(lambda: full_read(path), repeats),
        "verify": best_time(lambda: shards.verify_store(path), repeats),
        "info": best_time(lambda: shards.format_summary(
            shards.open_store(path, allow_incomplete=True).summary()), repeats),
        "open": best_time(lambda: open_training_stores([path]), repeats),
    }


def loader_rate(path: Path) -> float:
    """Examples/s of one epoch of the training loader (one process, batch 64, the
    store's own augmentation): read, check, shuffle, augment."""
    dataset = ShardStream(open_training_stores([path]), seed=0, batch_size=64,
                          shuffle_chunks=8, loader_workers=1)
    dataset.set_epoch(0)
    start, count = time.perf_counter(), 0
    for batch in make_loader(dataset):
        count += len(batch["stacked"])
    return count / (time.perf_counter() - start)


def files_and_bytes(path: Path) -> tuple[int, int]:
    """Number of files of a store and their summed size in bytes."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=2000, help="examples of the 1x store")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="store sizes in examples (instead of --base and --factors)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--generate", action="store_true",
                        help="real nsa-gen elpv --type mono stores, with generation figures")
    parser.add_argument("--workers", type=int, default=2, help="nsa-gen --workers")
    parser.add_argument("--loader", action="store_true", help="add one loader epoch")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--work", type=Path, help="folder for the stores' temporary folder "
                        "(default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the largest store (its "
                        "path is printed) for more measurements; remove it yourself")
    args = parser.parse_args(argv)
    sizes = args.sizes or [args.base * f for f in args.factors]

    work = Path(tempfile.mkdtemp(prefix="nsa-bench-scaling-", dir=args.work))
    rows = []
    kept = None
    try:
        for n in sizes:
            path = work / f"s{n}.zarr"
            made = generate_elpv_store(path, n, args.size, args.workers) if args.generate \
                else write_synthetic_store(path, n, args.size)
            store = shards.open_store(path)
            files, size = files_and_bytes(path)
            times = tool_times(path, args.repeats)
            rate = loader_rate(path) if args.loader else None
            rows.append((n, store.n_chunks, store.n_shards, files, size, times, made, rate))
            if args.keep and n == max(sizes):
                kept = work.with_name(f"{work.name}-{path.name}")
                path.rename(kept)
            else:
                shutil.rmtree(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    kind = (f"nsa-gen elpv --type mono --workers {args.workers}" if args.generate
            else "synthetic grey")
    print(f"{kind} stores at {args.size} px, CPUs: {os.cpu_count()}, load average: "
          f"{os.getloadavg()[0]:.1f}; seconds (best of {args.repeats}), and x the full read")
    header = (f"{'n':>8} {'chunks':>6} {'shards':>6} {'files':>6} {'MB':>8} {'read s':>8} "
              f"{'verify s':>16} {'info s':>16} {'open s':>16}")
    if args.generate:
        header += f" {'gen s':>8} {'ex/s':>7} {'driver MB':>9} {'worker MB':>9}"
    if args.loader:
        header += f" {'loader ex/s':>11}"
    print(header)
    for n, chunks, shard_count, files, size, times, made, rate in rows:
        read = times["read"]
        line = (f"{n:>8} {chunks:>6} {shard_count:>6} {files:>6} {size / 1e6:>8.1f} "
                f"{read:>8.3f}" + "".join(
                    f" {times[k]:>8.3f} ({times[k] / read:>4.2f}x)"
                    for k in ("verify", "info", "open")))
        if isinstance(made, Generation):
            line += (f" {made.wall:>8.1f} {made.rate:>7.0f} {made.driver_mb:>9.0f} "
                     f"{made.worker_mb:>9.0f}")
        if rate is not None:
            line += f" {rate:>11.0f}"
        print(line)
    if kept:
        print(f"kept: {kept}")


if __name__ == "__main__":
    main()
