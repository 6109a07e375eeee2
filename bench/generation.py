"""Benchmark ``nsa-gen`` on ELPV at 256 px: rates, scaling, disk size, peak memory.

This machine kind runs at one of two speeds a third apart and switches between them every
few seconds to minutes (the host's load; no steal time shows), so a rate is only compared
with the engine's rate measured right around it:

1. the engine alone: ``make_example`` in a loop in this process (examples/s, best of 3),
   and the same loop in 2 processes at once (no Ray, no store), between two timings of
   one: what this machine's cores deliver in parallel, the ceiling for 2 workers (on a
   virtual machine whose 2 vCPUs share a physical core, or under other tenants' load, it
   is well below twice one process);
2. the generation phase of ``nsa-gen`` (``run_shards``: Ray tasks making, compressing and
   writing whole shards) with 1 and with 2 workers, in a warm Ray session (Ray's start,
   worker start-up and image loading are not counted), ``--rounds`` times each, every
   run between two timings of the engine loop in the driver. A round is *steady* when
   those two engine rates are within 5% of each other; the figure is the median over
   the steady rounds of the run's rate over (workers x the engine's mean rate around it).
   The timed stores have the shard layout of a large store (``--shard-chunks``, default:
   that of 200,000 examples) and ``--n`` should be a multiple of twice the shard size, so
   both workers get equal work;
3. CPU milliseconds per example of the engine loops (``time.process_time``) and of each
   generation run (summed over the driver and every process of its Ray session, read
   from ``/proc``: the workers', and the rest's: raylet, GCS, agents, log monitor,
   driver). "engine CPU / generation CPU" is the share of the CPU spent that makes
   examples: with every core busy, 2 workers reach about that share of twice the engine
   rate, and no more;
4. the same without Ray or a second process (``store_path_cpu``): CPU per example of the
   engine, of making one whole shard's arrays (``shard_data``) and of writing it
   (``Store.write_shard``), over the same examples: the share of a task's CPU that is the
   store path, free of the machine's parallel ceiling and of Ray;
5. bytes per example on disk with the store's compressor;
6. peak memory of the real command ``nsa-gen elpv --type mono --n N`` (driver plus every
   process it starts, i.e. its session: Ray's services and workers), at two values of N,
   as summed RSS and summed PSS (PSS shares each shared page, such as the object store
   holding the source images, among the processes that map it). A worker's RSS grows
   until it has touched every source image in the object store (zero-copy reads), then
   stays flat: the first value of N should be large enough for that (1000 is, for ELPV).

Run: ``.venv/bin/python bench/generation.py`` (about 4 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from nsa.generate import shards
from nsa.generate.generation import run_shards, shard_arrays, shard_data
from nsa.generate.images import load_images
from nsa.generate.presets import resolve_settings
from nsa.generate.sources import elpv_source
from nsa.generate.synthesis import SourceSet, make_example, prepare_sources

from nsa.ray_session import ray_session

#: Each rate is the best of this many runs: on a shared machine other processes' bursts
#: only ever slow a run down, so the fastest run is the closest to the unloaded rate.
REPEATS = 3
#: A generation run counts when the engine's rates before and after it differ by at most
#: this share: this machine kind switches between two speeds a third apart (the host's
#: load, not visible as steal time), and a round across a switch compares unlike things.
STEADY = 0.05


def _engine(cell_type: str, size: int) -> tuple[SourceSet, dict[str, Any]]:
    """The engine as a task runs it (one OpenCV thread): the ELPV ``cell_type`` sources at
    ``size`` px and the ``elpv`` settings, warmed up by one example."""
    cv2.setNumThreads(1)
    settings = resolve_settings("elpv", {"size": size})
    sources = prepare_sources(load_images(elpv_source(cell_type).files, size), settings)
    make_example(sources, settings, 0, 0)
    return sources, settings


def _timed_loop(sources: SourceSet, settings: dict[str, Any], first: int,
                n: int) -> tuple[float, float, float]:
    """(start, end, CPU seconds) of making examples ``first .. first + n - 1``."""
    began, began_cpu = time.perf_counter(), time.process_time()
    for index in range(first, first + n):
        make_example(sources, settings, 0, index)
    return began, time.perf_counter(), time.process_time() - began_cpu


def engine_rate(cell_type: str, size: int, n: int) -> tuple[float, float]:
    """Examples/s of ``make_example`` in one process on one thread, as in a task, and its
    CPU milliseconds per example (both the best of ``REPEATS`` runs)."""
    sources, settings = _engine(cell_type, size)
    spans = [_timed_loop(sources, settings, 0, n) for _ in range(REPEATS)]
    return (max(n / (end - began) for began, end, _ in spans),
            min(1e3 * seconds / n for _, _, seconds in spans))


def _engine_loop(cell_type: str, size: int, n: int, first: int,
                 start: multiprocessing.synchronize.Barrier,
                 results: multiprocessing.Queue) -> None:
    """One process of :func:`parallel_engine_rate`: examples ``first .. first + n - 1``,
    started together with the others; puts (start, end, CPU seconds) on ``results``."""
    sources, settings = _engine(cell_type, size)
    start.wait()
    results.put(_timed_loop(sources, settings, first, n))


def parallel_engine_rate(cell_type: str, size: int, n: int,
                         processes: int) -> tuple[float, float]:
    """Examples/s of ``processes`` engine loops running at once, ``n`` examples each, from
    the first start to the last end, and their CPU milliseconds per example (both the best
    of ``REPEATS`` runs). Forked processes, so the engine is imported once."""
    context = multiprocessing.get_context("fork")
    rates, cpu = [], []
    for _ in range(REPEATS):
        start, results = context.Barrier(processes), context.Queue()
        workers = [context.Process(target=_engine_loop,
                                   args=(cell_type, size, n, k * n, start, results))
                   for k in range(processes)]
        for worker in workers:
            worker.start()
        spans: list[tuple[float, float, float]] = []
        while len(spans) < processes:
            try:
                spans.append(results.get(timeout=1.0))
            except queue.Empty:
                if any(worker.exitcode for worker in workers):
                    for worker in workers:
                        worker.terminate()
                    raise RuntimeError("an engine process failed (see above)") from None
        for worker in workers:
            worker.join()
        wall = max(end for _, end, _ in spans) - min(began for began, _, _ in spans)
        rates.append(processes * n / wall)
        cpu.append(1e3 * sum(seconds for _, _, seconds in spans) / (processes * n))
    return max(rates), min(cpu)


class StorePathFigures(NamedTuple):
    """CPU ms per example in one process without Ray (best of ``REPEATS``): the engine
    alone, making a whole shard's arrays (``shard_data``: the engine plus copying and
    quantising into them), and writing them (``Store.write_shard``: checksums,
    compression, files)."""

    engine_ms: float
    fill_ms: float
    write_ms: float


def store_path_cpu(cell_type: str, size: int, shard_chunks: int,
                   work: Path) -> StorePathFigures:
    """What a task spends per example besides the engine, measured without Ray or a
    second process: the engine loop, ``shard_data`` and ``write_shard`` over the same
    examples (shards of ``shard_chunks`` chunks, one store), alternating, so that the
    machine's parallel ceiling and Ray play no part. Like a worker, it fills the same
    shard arrays and writes through the same open store each time."""
    sources, settings = _engine(cell_type, size)
    rows = shard_chunks * shards.DEFAULT_CHUNK_SIZE
    height, width, channels = sources.shape
    shards.create_store(work / "path.zarr", n=rows * REPEATS, height=height, width=width,
                        channels=channels, chunk_size=shards.DEFAULT_CHUNK_SIZE, attrs={},
                        shard_chunks=shard_chunks)
    store = shards.open_store(work / "path.zarr", allow_incomplete=True, mode="r+")
    arrays = shard_arrays(rows, sources.shape)
    engine, fill, write = [], [], []
    for repeat in range(REPEATS):
        examples = range(repeat * rows, (repeat + 1) * rows)
        engine.append(_timed_loop(sources, settings, examples.start, rows)[2])
        began = time.process_time()
        data = shard_data(sources, settings, 0, examples, arrays)
        fill.append(time.process_time() - began)
        began = time.process_time()
        store.write_shard(repeat, data)  # compression runs in zarr's threads: process time
        write.append(time.process_time() - began)
    return StorePathFigures(*(1e3 * min(seconds) / rows for seconds in (engine, fill, write)))


class Round(NamedTuple):
    """One timed generation run and the engine timed just before and after it, in the
    driver of the same Ray session (examples/s); CPU ms per example of the run in the Ray
    workers and in every other process of the session (driver, raylet, GCS, agents), and
    of the engine loops."""

    rate: float
    engine_before: float
    engine_after: float
    worker_cpu_ms: float
    other_cpu_ms: float
    engine_cpu_ms: float

    @property
    def engine(self) -> float:
        return (self.engine_before + self.engine_after) / 2

    @property
    def steady(self) -> bool:
        """Whether the machine kept its speed through the round: the engine before and
        after it within ``STEADY`` of each other."""
        return abs(self.engine_before - self.engine_after) <= STEADY * self.engine

    def share(self, workers: int) -> float:
        """The run's rate over ``workers`` times the engine's around it."""
        return self.rate / (workers * self.engine)


def _cpu_seconds(pid: int) -> tuple[str, float] | None:
    """(command line, user + system CPU seconds of all its threads) of ``pid``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state ppid ... utime stime
    return command, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of this process and each of its descendants (a local Ray's services
    are its children, Ray's workers their children), by pid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return {pid: cpu for pid in tree if (cpu := _cpu_seconds(pid)) is not None}


def _cpu_split(before: dict[int, tuple[str, float]],
               after: dict[int, tuple[str, float]]) -> tuple[float, float]:
    """CPU seconds spent between two :func:`_tree_cpu` readings in Ray's workers (titled
    ``ray::<task>`` or ``ray::IDLE``) and in every other process."""
    workers = other = 0.0
    for pid, (command, cpu) in after.items():
        spent = cpu - before.get(pid, (command, 0.0))[1]
        if command.startswith("ray::") and not command.endswith("Agent"):
            workers += spent
        else:
            other += spent
    return workers, other


def generation_rounds(cell_type: str, size: int, n: int, workers: int, work: Path,
                      shard_chunks: int, rounds: int, engine_n: int
                      ) -> tuple[list[Round], float]:
    """``rounds`` timed runs of the generation phase (``run_shards``) with ``workers``
    tasks at once, each between two timings of the engine loop (``engine_n`` examples) in
    this process.

    Ray is started, every worker warmed up (its first task imports the engine) and the
    images loaded before the first round: this is the rate a long run settles at. Also
    returns :func:`counted_engine_share` of one more store of ``n`` examples.
    """
    settings = resolve_settings("elpv", {"size": size})
    source = elpv_source(cell_type)
    sources = prepare_sources(load_images(source.files, size), settings)
    engine_sources, engine_settings = _engine(cell_type, size)
    height, width, channels = sources.shape

    def store(name: str, count: int, chunks_a_shard: int) -> shards.Store:
        chunks = shards.n_chunks(count, shards.DEFAULT_CHUNK_SIZE)
        shards.create_store(work / name, n=count, height=height, width=width,
                            channels=channels, chunk_size=shards.DEFAULT_CHUNK_SIZE,
                            attrs={}, shard_chunks=min(chunks_a_shard, chunks))
        return shards.open_store(work / name, allow_incomplete=True, mode="r+")

    def engine() -> tuple[float, float]:
        began, end, cpu = _timed_loop(engine_sources, engine_settings, 0, engine_n)
        return engine_n / (end - began), cpu

    with ray_session(None, workers):
        # shards of one chunk, 2 a worker: every worker gets a task and imports the engine
        warm = store(f"warm{workers}.zarr", 2 * workers * shards.DEFAULT_CHUNK_SIZE, 1)
        run_shards(warm, sources, settings, 0, workers, progress=False)
        timed: list[Round] = []
        for repeat in range(rounds):
            target = store(f"w{workers}-{repeat}.zarr", n, shard_chunks)
            before, before_cpu = engine()
            cpu_before = _tree_cpu()
            start = time.perf_counter()
            run_shards(target, sources, settings, 0, workers, progress=False)
            rate = n / (time.perf_counter() - start)
            worker_s, other_s = _cpu_split(cpu_before, _tree_cpu())
            after, after_cpu = engine()
            timed.append(Round(rate, before, after, 1e3 * worker_s / n, 1e3 * other_s / n,
                               1e3 * (before_cpu + after_cpu) / (2 * engine_n)))
        share = counted_engine_share(store(f"c{workers}.zarr", n, shard_chunks), sources,
                                     settings)
    return timed, share


def _counted_shard_task(run: str, path: Any, sources_ref: list[Any], settings: dict[str, Any],
                        shard: int) -> float:
    """``nsa-gen``'s own task for ``shard`` (seed 0), with the CPU seconds of its
    ``make_example`` calls counted on their thread and returned."""
    from nsa.generate import generation, synthesis

    spent = [0.0]

    def counted(*args: Any) -> Any:
        began = time.thread_time()
        try:
            return synthesis.make_example(*args)
        finally:
            spent[0] += time.thread_time() - began

    generation.make_example = counted
    try:
        generation._write_shard_task(run, path, sources_ref, settings, 0, shard)
    finally:
        generation.make_example = synthesis.make_example
    return spent[0]


def counted_engine_share(target: shards.Store, sources: SourceSet,
                         settings: dict[str, Any]) -> float:
    """The engine's share of all the CPU a generation of ``target`` costs (Ray must be
    running): the CPU of ``make_example`` counted inside the tasks, over the CPU of every
    process of the session in the same span. Both are measured at the same time, so the
    machine's changes of speed cancel out (the rates of :class:`Round` cannot avoid them).
    The tasks are submitted all at once, not by ``run_shards``; Ray runs as many at a time
    as it has CPUs."""
    import ray
    from ray import cloudpickle

    if __name__ != "__main__":  # loaded from its path (tests): workers cannot import it
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(num_cpus=1, max_retries=0)(_counted_shard_task)
    sources_ref = ray.put(sources)
    path = target.location.absolute()
    before = _tree_cpu()
    engine_s = sum(ray.get([task.remote("counted", path, [sources_ref], settings, shard)
                            for shard in range(target.n_shards)]))
    worker_s, other_s = _cpu_split(before, _tree_cpu())
    return engine_s / (worker_s + other_s)


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid:  # fields after "(comm)": state ppid pgrp session ...
            members.append(int(entry))
    return members


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB, (0, 0) if it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if ":" in line}
    return values.get("Rss", 0), values.get("Pss", 0)


def peak_memory(cell_type: str, n: int, work: Path) -> tuple[float, float, float]:
    """Run ``nsa-gen elpv --type T --n N`` and sample its session's memory every 0.2 s.

    Returns (peak summed RSS, peak summed PSS, wall seconds), memory in MB.
    """
    command = [str(Path(sys.executable).parent / "nsa-gen"), "elpv", "--type", cell_type,
               "--n", str(n), "--out", str(work / f"mem{n}.zarr"), "--no-progress"]
    start = time.perf_counter()
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
    peak_rss = peak_pss = 0
    while process.poll() is None:
        rss = pss = 0
        for pid in _session_members(process.pid):
            r, p = _memory_kb(pid)
            rss, pss = rss + r, pss + p
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return peak_rss / 1e3, peak_pss / 1e3, time.perf_counter() - start


def _median(values: list[float]) -> float:
    return float(np.median(values))


def summarise(rounds: list[Round], workers: int) -> str:
    """One line per worker count: the median of the steady rounds (all rounds when none
    is steady, said so) of the rate, its share of ``workers`` times the engine around it,
    and the CPU split."""
    steady = [r for r in rounds if r.steady]
    used = steady or rounds
    shares = [r.share(workers) for r in used]
    total = [r.worker_cpu_ms + r.other_cpu_ms for r in used]
    what = (f"{len(steady)} steady rounds of {len(rounds)}" if steady else
            f"NO steady round of {len(rounds)}: the machine changed speed in every one")
    label = f"{workers} worker{'s' * (workers > 1)}"
    return (f"nsa-gen generation, {label}: {_median([r.rate for r in used]):7.1f} examples/s, "
            f"{_median(shares):.0%} of {workers}x the engine (median of {what}; every round: "
            + ", ".join(f"{r.share(workers):.0%}{'' if r.steady else '*'}" for r in rounds)
            + f")\n  CPU per example: {_median(total):.3f} ms (workers "
            f"{_median([r.worker_cpu_ms for r in used]):.3f}, Ray's other processes and the "
            f"driver {_median([r.other_cpu_ms for r in used]):.3f}); engine CPU / generation "
            f"CPU {_median([r.engine_cpu_ms / t for r, t in zip(used, total, strict=True)]):.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--type", default="mono", dest="cell_type")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n", type=int, default=4096, help="examples per timed run")
    parser.add_argument("--shard-chunks", type=int, help="chunks per shard of the timed "
                        "stores (default: the layout of a 200,000-example store)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed runs per worker count, each between two engine timings")
    parser.add_argument("--engine-n", type=int, default=256)
    parser.add_argument("--memory-n", type=int, nargs=2, default=(1000, 8000))
    args = parser.parse_args()

    shard_chunks = args.shard_chunks or shards.default_shard_chunks(
        200_000, shards.DEFAULT_CHUNK_SIZE, args.size, args.size, 1)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="nsa-bench-gen-"))
    try:
        before = engine_rate(args.cell_type, args.size, args.engine_n)
        parallel, parallel_cpu = parallel_engine_rate(args.cell_type, args.size,
                                                      args.engine_n, 2)
        after = engine_rate(args.cell_type, args.size, args.engine_n)
        path = store_path_cpu(args.cell_type, args.size, shard_chunks, work)
        rounds = {workers: generation_rounds(args.cell_type, args.size, args.n, workers, work,
                                             shard_chunks, args.rounds, args.engine_n)
                  for workers in (1, 2)}
        store = work / "w2-0.zarr"
        on_disk = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        memory = [peak_memory(args.cell_type, n, work) for n in args.memory_n]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"ELPV {args.cell_type} at {args.size} px, n={args.n} in shards of {shard_chunks} "
          f"chunks of {shards.DEFAULT_CHUNK_SIZE}, CPUs: {os.cpu_count()}, "
          f"load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} "
          "(other processes' load distorts the 2-worker figures)")
    engine = (before[0] + after[0]) / 2
    print(f"engine, 1 process, make_example loop: {before[0]:.1f} / {after[0]:.1f} examples/s "
          f"(before / after the next line), {before[1]:.3f} / {after[1]:.3f} CPU ms per example")
    print(f"engine, 2 processes at once:          {parallel:.1f} examples/s, {parallel_cpu:.3f} "
          f"CPU ms per example ({parallel / engine:.2f}x one process: this machine's parallel "
          "ceiling)")
    stored = path.fill_ms + path.write_ms
    print(f"CPU per example, 1 process, no Ray:   engine {path.engine_ms:.3f} ms, filling a "
          f"shard's arrays +{path.fill_ms - path.engine_ms:.3f} ms, checksums and writing "
          f"+{path.write_ms:.3f} ms: engine / all {path.engine_ms / stored:.0%}")
    print("Each generation round is compared with the engine timed just before and after it "
          f"in the same Ray session; * = not steady (those engine rates {STEADY:.0%} apart)")
    for workers, (timed, share) in rounds.items():
        print(summarise(timed, workers))
        print(f"  engine CPU counted inside the tasks / all the session's CPU at the same "
              f"time: {share:.0%} (immune to the machine's changes of speed)")
    codecs = ", ".join(f"{name}: {codec.cname.value} {codec.clevel} {codec.shuffle.value}"
                       for name, codec in (("images", shards.COMPRESSOR),
                                           ("label maps", shards.MASK_COMPRESSOR)))
    print(f"on disk ({codecs}): {on_disk / args.n / 1e3:.1f} kB per example")
    for n, (rss, pss, wall) in zip(args.memory_n, memory, strict=True):
        print(f"peak memory, nsa-gen elpv --n {n:<6}: RSS sum {rss:7.0f} MB, "
              f"PSS sum {pss:7.0f} MB ({wall:.0f} s wall)")


if __name__ == "__main__":
    main()
