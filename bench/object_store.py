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

Measured 2026-11-30 (``--repeats 3``, 8 chunks an epoch at ``--n 512``, 32 at 2048; 2
cores shared with the lead's benchmarks; medians per epoch with read-ahead; "before":
botocore's default CRCs on every request, "after": only where S3 requires them
(``nsa.locations.CLIENT_CHECKSUMS``); "shared": both cores for loader and moto, "pinned":
``--loader-cpus 0 --server-cpus 1``; in the order run; the two runs at load 6 to 7 met
other work of the lead's and this session's profiling):

===== ====== ====== =========== =========== ======== ========= =======
n     code   CPUs   loader CPU  loader CPU  moto CPU S3 / disk load
                    (disk) s    (S3) s      s        rate      average
===== ====== ====== =========== =========== ======== ========= =======
512   before shared 1.84        2.53        0.36     0.51      3.1
512   before pinned 1.95        2.43        0.38     0.62      3.4
512   after  shared 1.92        2.87        0.33     0.61      3.1
512   after  pinned 2.52        2.92        0.40     0.72      3.3
512   before shared 1.68        2.32        0.34     0.81      3.0
512   before pinned 1.60        2.30        0.33     0.69      2.7
512   after  shared 2.32        2.69        0.35     0.81      1.8
512   after  pinned 1.84        2.35        0.29     0.76      2.5
2048  after  pinned 6.80        8.49        1.21     1.21      6.9
2048  after  shared 8.40        11.09       1.53     0.48      6.2
512   before shared 2.60        3.18        0.43     0.69      3.7
512   before pinned 2.36        2.60        0.45     0.77      3.0
512   after  shared 2.80        3.29        0.46     0.72      3.2
512   after  pinned 2.57        3.10        0.49     0.78      2.8
2048  after  pinned 8.54        10.74       1.50     0.78      2.7
2048  after  shared 10.08       11.02       1.52     0.87      3.0
===== ====== ====== =========== =========== ======== ========= =======

Neither the CRC setting nor moto on a core of its own brings S3 within 10% of disk here.
The CRC costs only the 8 whole-object GETs of 9 MB an epoch (3 ms each: 0.02 s, lost in
the noise). Pinned, the loader has one core and is bound by its CPU, and S3 takes 10 to
45% more of it than disk (0.25 to 0.7 s an epoch at 512, 2.2 s at 2048), so the rate
ratio stays 0.6 to 0.8 (1.21 once, at load 6.9, the lead's work slowing the disk
epochs). Earlier runs, at load 5 to 8 with moto on the loader's cores, gave 0.32 to 0.93
with the same code (one chunk a shard: 108 requests an epoch before shards' indexes
were cached, 90 after; four chunks a shard: 153, then 92).

What S3 costs the loader (client CPU measured in one process against moto at load
average 1 to 2.5): a fresh S3 client in each loader process every epoch, 135 to 145 ms
with its first request (in a forked process whose garbage collector is kept off what it
inherits; 60 to 80 ms of it botocore parsing its S3 model again, which a botocore session
made before the fork could spare, but sessions are not meant to be shared between
threads); 17 requests to open the store there (metadata and the checksums, one object a
shard); then 7 GETs a chunk: 1.9 ms of client CPU for a small GET (signing, botocore's
hooks and parsers, and a new connection: moto closes each one), 6 to 9 ms for an 8 MB
one (aiohttp's reads and its two copies of the body; 9 to 15 ms with botocore checking
the CRC32 moto returns with a whole object). Raw, a chunk's 7 objects cost 22 to 29 ms
of CPU; read through zarr 52 to 67 ms against 34 to 39 ms from disk (decoding included).
moto reads the whole object for every GET, a byte range too, so its CPU grows with the
shard (0.3 to 0.5 s an epoch of 8 chunks at one chunk a shard).
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
