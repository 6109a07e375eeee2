"""The shard loader reading a store from an S3 server against the same store on disk.

Writes one 256 px RGB store (``bench/training.py``'s smooth images, ``bottle``
augmentation) to a local folder and, with the same bytes, to a bucket on an S3 server,
then times one epoch of the loader alone (read, checksum, shuffle, augment; no model) on
each, alternating, ``--repeats`` times, with the chunk read-ahead of
``nsa.train.data`` and, for comparison, without it (``PREFETCH_CHUNKS = 0``: each chunk
read when it is needed). Prints examples/s (median), the ratio S3 / disk, and per epoch
the CPU seconds of the loader (this process and its DataLoader processes) and of the S3
server, and the HTTP requests the server answered (when it runs here, on the same cores
as the loader: on a machine with few cores its CPU is taken from the loader).
``--shard-chunks`` writes shards of several chunks, so that chunks are byte ranges.
``--loader-cpus 0 --server-cpus 1`` pins the loader (this process, and so its DataLoader
processes, for the disk and the S3 epochs alike) and the S3 server started here to
separate CPUs, as a server on its own machine would be; the last line says which CPUs
each got.

The S3 server is moto's (``moto_server``, started here on 127.0.0.1 at a free port) unless
``--endpoint`` names another (MinIO, Ceph: then ``--bucket`` must exist and the AWS
credentials be in the environment).

Run: ``.venv/bin/python bench/object_store.py`` (1 to 2 minutes on 2 cores at ``--n 512``).

Measured 2026-11-30 (session 7) on 2 cores, nothing else running, ``--repeats 3`` (8 chunks
an epoch at ``--n 512``, 32 at 2048), read-ahead 4 chunks; "later" is the median of the epochs
after the first, served by the same loader process; CPU s per epoch:

====== ====== ===== ============ ========== ========== ======== ========
n      CPUs   epoch S3 / disk    loader CPU loader CPU moto CPU requests
                    rate         disk s     S3 s       s        (S3)
====== ====== ===== ============ ========== ========== ======== ========
512    pinned first 0.35         2.05       5.73       0.30     74
512    pinned later **0.99**     1.79       1.77       0.22     56
512    shared first 0.23         1.69       6.27       0.26     74
512    shared later **1.07**     1.55       1.43       0.20     56
2048   pinned first 0.59         6.53       10.95      0.88     266
2048   pinned later **0.96**     6.25       6.51       0.85     224
====== ====== ===== ============ ========== ========== ======== ========

("pinned": ``--loader-cpus 0 --server-cpus 1``; "shared": both on both cores.) After the
first epoch S3 streams within 5% of disk and costs the loader no more CPU: 7 GETs a chunk
through obstore cost about what zarr's local reads do. The first epoch pays for starting
the loader process, spawned for S3 (about 4.5 CPU s of imports), once per training.

Before (session 6: a new loader, its processes and S3 client every epoch, and reads
through s3fs), the same benchmark gave 0.61 to 0.87 (pinned) and 0.51 to 0.81 (shared) at
512, with 10 to 45% more loader CPU for S3 than for disk: a fresh S3 client and 17
requests to open the store in each loader process every epoch (0.14 CPU s), then 2 to 3
ms of client CPU per small GET and 17 to 21 ms per 8 MB GET (botocore's signing, hooks and
parsers, aiohttp's reads and copies), against 0.24 to 0.36 ms and 3 to 3.5 ms through
obstore (measured in one process, client and moto on separate cores). moto closes every
connection (werkzeug's development server), so each request opens a new one; a server
that keeps connections open (MinIO, AWS) saves the client about 0.4 ms more per request.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nsa.generate import shards
from nsa.train import data
from training import write_bench_store

from nsa.locations import parse_location

#: The pid of the S3 server started here (None: another server).
SERVER: list[int] = []
#: The request log (werkzeug's, one line per HTTP request) of the S3 server started here.
SERVER_LOG: list[Path] = []


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (0: it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_s() -> float:
    """CPU seconds the S3 server started here has used so far (0: another server)."""
    return process_cpu_s(SERVER[0]) if SERVER else 0.0


def server_requests() -> int:
    """HTTP requests the S3 server started here has answered so far (0: another server)."""
    if not SERVER_LOG:
        return 0
    return SERVER_LOG[0].read_text(errors="replace").count(" HTTP/1.1")


def _children() -> list[int]:
    """The pids of this process's live children."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == os.getpid():
            pids.append(int(stat.parent.name))
    return pids


def loader_cpu_s() -> float:
    """CPU seconds of this process and of its DataLoader processes, running or finished
    (not the S3 server's: a child too)."""
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    running = sum(process_cpu_s(pid) for pid in _children() if pid not in SERVER)
    return time.process_time() + finished.ru_utime + finished.ru_stime + running


def cpu_set(text: str) -> set[int]:
    """CPU numbers from ``0``, ``0,2`` or ``0-3`` (argparse type); raises
    ``argparse.ArgumentTypeError`` for a malformed list or a CPU this process may not use."""
    cpus: set[int] = set()
    for part in text.split(","):
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if found is None or int(found[2] or found[1]) < int(found[1]):
            raise argparse.ArgumentTypeError(f"{text!r} is no CPU list (e.g. 0 or 0,2 or "
                                             "0-3)")
        cpus.update(range(int(found[1]), int(found[2] or found[1]) + 1))
    usable = os.sched_getaffinity(0)
    if not cpus <= usable:
        raise argparse.ArgumentTypeError(
            f"{text!r}: this process may use CPUs {_cpu_text(usable)} only")
    return cpus


def _cpu_text(cpus: set[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


def _threads(pid: int | None = None) -> list[int]:
    """The thread ids of process ``pid`` (None: this one)."""
    return [int(t.name) for t in Path(f"/proc/{pid or 'self'}/task").iterdir()]


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Every thread of this process on ``cpus`` (None: left as it is), and so the
    processes and threads started in the body (they inherit it); as before afterwards."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    for thread in _threads():
        os.sched_setaffinity(thread, cpus)
    try:
        yield
    finally:
        for thread in _threads():
            os.sched_setaffinity(thread, before)


def cpus_of(pid: int | None = None) -> set[int]:
    """The CPUs any thread of process ``pid`` (None: this one) may run on."""
    return set().union(*(os.sched_getaffinity(t) for t in _threads(pid)))


@contextmanager
def moto_server(cpus: set[int] | None = None) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (fake credentials in this process's environment),
    logging its requests to a temporary file; on ``cpus`` (None: this process's)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as logs, open(Path(logs) / "moto.log", "wb") as log:
        SERVER_LOG.append(Path(log.name))
        server = subprocess.Popen(  # pinned before exec: each of its threads inherits it
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
             str(port)], stdout=subprocess.DEVNULL, stderr=log,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))
        SERVER.append(server.pid)
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            for name, value in (("AWS_ACCESS_KEY_ID", "bench"),
                                ("AWS_SECRET_ACCESS_KEY", "bench"),
                                ("AWS_DEFAULT_REGION", "us-east-1")):
                os.environ.setdefault(name, value)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=30)


@dataclass
class Epochs:
    """What the epochs of one (read-ahead setting, store) measured."""

    rates: list[float] = field(default_factory=list)  # examples/s
    loader_cpu: list[float] = field(default_factory=list)  # s per epoch, loader processes
    server_cpu: list[float] = field(default_factory=list)  # s per epoch, S3 server
    requests: list[int] = field(default_factory=list)  # HTTP requests per epoch

    def measure(self, dataset: data.ShardStream, loader: Iterable[dict], epoch: int) -> None:
        """Run ``epoch`` of ``loader`` and record what it took."""
        before = loader_cpu_s(), server_cpu_s(), server_requests()
        dataset.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += len(batch["stacked"])
        self.rates.append(count / (time.perf_counter() - start))
        self.loader_cpu.append(loader_cpu_s() - before[0])
        self.server_cpu.append(server_cpu_s() - before[1])
        self.requests.append(server_requests() - before[2])


def rates(stores: dict[str, str], processes: int, repeats: int, aheads: dict[str, int]
          ) -> tuple[dict[tuple[str, str], Epochs], dict[tuple[str, str], Epochs]]:
    """Per (read-ahead setting, store): its first epoch, which starts the loader
    processes (each opens the store, and on S3 makes its client), and ``repeats`` later
    epochs served by the same processes, as in training. The later epochs alternate
    between settings and stores so that a change in the machine's load hits them alike."""
    loaders: dict[tuple[str, str], tuple[data.ShardStream, Iterable[dict]]] = {}
    first: dict[tuple[str, str], Epochs] = {}
    for setting, ahead in aheads.items():
        data.PREFETCH_CHUNKS = ahead  # loader processes keep the value they start with
        for name, where in stores.items():
            dataset = data.ShardStream(data.open_training_stores([where]), seed=0,
                                       batch_size=64, shuffle_chunks=8,
                                       loader_workers=processes)
            loaders[setting, name] = dataset, data.make_loader(dataset)
            first[setting, name] = Epochs()
            first[setting, name].measure(*loaders[setting, name], epoch=0)
    later: dict[tuple[str, str], Epochs] = {}
    for repeat in range(repeats):
        for setting, ahead in aheads.items():
            data.PREFETCH_CHUNKS = ahead  # for --processes 0 (read in this process)
            for name in stores:
                later.setdefault((setting, name), Epochs()).measure(
                    *loaders[setting, name], epoch=1 + repeat)
    return first, later


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="examples in the store")
    parser.add_argument("--processes", type=int, default=1, help="DataLoader processes")
    parser.add_argument("--shard-chunks", type=int,
                        help="chunks per shard (default: a new store's, 1 below 4096 examples)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--endpoint", help="an S3 server's URL (default: start moto_server)")
    parser.add_argument("--bucket", help="bucket on --endpoint (default: a new one)")
    parser.add_argument("--loader-cpus", type=cpu_set, metavar="CPUS",
                        help="run the loader (this process and its DataLoader processes) "
                             "on these CPUs, for the disk and the S3 epochs alike, e.g. 0 "
                             "or 0-3 (default: every CPU this process may use)")
    parser.add_argument("--server-cpus", type=cpu_set, metavar="CPUS",
                        help="run the S3 server started here on these CPUs, e.g. 1 "
                             "(default: every CPU this process may use, the loader's too)")
    args = parser.parse_args(argv)
    if args.server_cpus is not None and args.endpoint is not None:
        parser.error("--server-cpus: only for the S3 server started here, not with "
                     "--endpoint")
    ahead = data.PREFETCH_CHUNKS
    with tempfile.TemporaryDirectory() as tmp, (
            moto_server(args.server_cpus) if args.endpoint is None
            else _given(args.endpoint)) as endpoint, pinned(args.loader_cpus):
        cpus = (f"loader on CPUs {_cpu_text(cpus_of())}, S3 server on CPUs "
                f"{_cpu_text(cpus_of(SERVER[0])) if SERVER else '(not started here)'}")
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        bucket = args.bucket or f"nsa-bench-{uuid.uuid4().hex[:8]}"
        url = f"s3://{bucket}/bench.zarr"
        if args.bucket is None:
            parse_location(url).filesystem().mkdir(bucket)
        local = str(write_bench_store(Path(tmp) / "bench.zarr", args.n, 256, 3, "bottle",
                                      args.shard_chunks))
        write_bench_store(url, args.n, 256, 3, "bottle",  # type: ignore[arg-type]
                          args.shard_chunks)
        settings = {f"read-ahead {ahead} chunks": ahead, "no read-ahead": 0}
        first, later = rates({"disk": local, "s3": url}, args.processes, args.repeats,
                             settings)
        shard_chunks = shards.open_store(local).shard_chunks
    print(f"loader alone, {args.n} examples of 256 px RGB ({shard_chunks} chunk(s) of "
          f"{shards.DEFAULT_CHUNK_SIZE} a shard), {args.processes} DataLoader "
          f"process(es), S3 at {endpoint}; per epoch: examples/s, CPU s of the loader "
          f"(this process and its DataLoader processes) and of the S3 server, HTTP "
          f"requests; the first epoch (starts the loader processes) and the median of "
          f"{args.repeats} later ones (the same processes)")
    for label in settings:
        for when, measured in (("first epoch", first), ("later epochs", later)):
            disk, s3 = measured[label, "disk"], measured[label, "s3"]
            rate_disk, rate_s3 = (statistics.median(e.rates) for e in (disk, s3))
            print(f"  {label:<22} {when:<12} disk {rate_disk:7.1f}  s3 {rate_s3:7.1f} "
                  f"examples/s  s3/disk {rate_s3 / rate_disk:.2f}")
            for name, epochs in (("disk", disk), ("s3", s3)):
                print(f"  {'':<35} {name:<4} loader "
                      f"{statistics.median(epochs.loader_cpu):5.2f} CPU s  server "
                      f"{statistics.median(epochs.server_cpu):5.2f} CPU s  "
                      f"{statistics.median(epochs.requests):5.0f} requests")
    print(f"  ({os.cpu_count()} CPUs here, {cpus}; load average "
          f"{os.getloadavg()[0]:.1f})")


@contextmanager
def _given(endpoint: str) -> Iterator[str]:
    yield endpoint


if __name__ == "__main__":
    main()
