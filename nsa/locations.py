"""Where a store lives: a local folder, or a prefix in an S3-compatible object store.

``parse_location("x.zarr")`` is a :class:`LocalLocation`; ``parse_location("s3://bucket/
prefix/x.zarr")`` an :class:`S3Location`, written through s3fs (zarr's ``FsspecStore``)
and read through obstore (zarr's ``ObjectStore``; see :meth:`S3Location.zarr_store`).
Credentials come from the environment the way every AWS client finds them
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role);
the server from ``endpoint`` when given, else ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (MinIO, Ceph), else AWS itself. The endpoint is resolved once, in
the process that parses the URL, and travels with the location (to Ray tasks); the
credentials do not: every process that touches the store needs them in its environment.

One writer per store:

- local: an advisory ``flock`` on ``.<name>.lock`` beside the store (see
  :func:`nsa.generate.shards.writer_lock`); the kernel drops it when the holder dies.
- S3: an object ``.<name>.lock`` beside the store, created with a conditional put
  (``If-None-Match: *``), so of two writers exactly one creates it. It holds the holder's
  host, pid and a lease (:data:`LEASE_S`) that a thread renews every third of it with
  ``If-Match`` on its own ETag. Another writer takes it over (``If-Match`` on the ETag it
  read, so again only one wins) when the lease has run out, or at once when the holder
  ran on the same host and its pid is gone (``kill -9`` + ``--resume``). A holder whose
  renewal fails has lost the lock, and :meth:`S3Lock.check` says so before the store is
  marked complete. Every chunk is a whole object written by one PUT, so even two writers
  of the same store with the same settings write the same bytes; the lock keeps them
  from racing on ``--overwrite`` and on the ``complete`` flag.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nsa.errors import OutputError, UserError

S3_SCHEME = "s3://"
#: A scheme with one slash (``s3:/b/x.zarr``): a mistyped URL, never meant as a folder.
_MISTYPED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/(?!/)")
#: Seconds an S3 writer lock stays valid without renewal.
LEASE_S = 60.0
#: Seconds the reachability probe waits for the endpoint (connect and read).
PROBE_TIMEOUT_S = 5
#: botocore settings of every S3 client here: a CRC only where S3 requires one (e.g.
#: DeleteObjects), none computed for an upload nor checked on a download. botocore's
#: default (``when_supported``) sends a CRC32 with every PUT and checks the one the server
#: returns with a whole object: 3 ms of CPU per 8 MB GET, measured against moto, a quarter
#: to a third of the client's CPU for it. Every chunk we read is checked against its
#: checksum anyway (training reads verify, and so does ``nsa-gen verify``), which catches
#: bytes damaged in an upload or a download as well.
CLIENT_CHECKSUMS = {"request_checksum_calculation": "when_required",
                    "response_checksum_validation": "when_required"}
#: How long obstore keeps credentials before asking botocore again.
CREDENTIALS_TTL = timedelta(minutes=5)
#: (endpoint, bucket) pairs this process has reached (probed once per process).
_REACHED: set[tuple[str | None, str]] = set()


class _InheritedSessions(logging.Filter):
    """Drops asyncio's "Unclosed client session/connector" reports in a forked child.

    A child (a DataLoader process) inherits the parent's S3 sessions, bound to an event
    loop that does not run in the child: they cannot be closed there, and aiohttp reports
    each one as unclosed when it is collected. Every other asyncio message passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Unclosed client session",
                                                    "Unclosed connector"))


def _after_fork_in_child() -> None:
    logging.getLogger("asyncio").addFilter(_InheritedSessions())


os.register_at_fork(after_in_child=_after_fork_in_child)


class LocationError(UserError):
    """An S3 location that cannot be used: bad URL, no credentials, no bucket, no server."""


@dataclass(frozen=True)
class LocalLocation:
    """A store folder on a local (or shared) file system."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)

    @property
    def shown(self) -> Path:
        """What :class:`~nsa.generate.shards.Store` keeps as its ``path``."""
        return self.path

    @property
    def name(self) -> str:
        return self.path.name

    def absolute(self) -> LocalLocation:
        return LocalLocation(self.path.absolute())

    def key(self) -> str:
        """One string per store, whatever the spelling (for "given twice")."""
        return str(self.path.resolve())

    def zarr_store(self, read_only: bool = False) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def check(self) -> None:
        """Nothing to probe for a local path (missing folders are reported on use)."""


@dataclass(frozen=True)
class S3Location:
    """A store under ``s3://bucket/key`` on the server at ``endpoint`` (None: AWS)."""

    bucket: str
    key_prefix: str
    endpoint: str | None = None

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key_prefix}"

    @property
    def shown(self) -> str:
        return str(self)

    @property
    def name(self) -> str:
        return self.key_prefix.rsplit("/", 1)[-1]

    def absolute(self) -> S3Location:
        return self

    def key(self) -> str:
        return f"{self.endpoint or 'aws'}|{self}"

    @property
    def fs_path(self) -> str:
        return f"{self.bucket}/{self.key_prefix}"

    def storage_options(self, probe: bool = False) -> dict[str, Any]:
        """s3fs options: the endpoint, no listing cache (another writer may change the
        store), one GET per object read (s3fs otherwise asks for its size first, to split
        large reads: two requests where one does), botocore's checksums only where S3
        requires them (:data:`CLIENT_CHECKSUMS`), and with ``probe`` short timeouts and no
        retries."""
        options: dict[str, Any] = {"use_listings_cache": False, "max_concurrency": 1,
                                   "config_kwargs": dict(CLIENT_CHECKSUMS)}
        if self.endpoint:
            options["endpoint_url"] = self.endpoint
        if probe:
            options["config_kwargs"].update(
                connect_timeout=PROBE_TIMEOUT_S, read_timeout=PROBE_TIMEOUT_S,
                retries={"max_attempts": 1})
            options["skip_instance_cache"] = True
        return options

    def filesystem(self, probe: bool = False) -> Any:
        """A synchronous ``s3fs.S3FileSystem`` for this location's server."""
        import s3fs

        fs = s3fs.S3FileSystem(**self.storage_options(probe))
        if probe:
            fs.retries = 1
        return fs

    def zarr_store(self, read_only: bool = False) -> Any:
        """A zarr store rooted at this prefix.

        Read-only: zarr's ``ObjectStore`` over obstore's ``S3Store`` (a Rust client; see
        :func:`_object_store`), wrapped in a :class:`~nsa.shard_index.ShardIndexCache`
        (each shard's index fetched once, not once per chunk read). For writing: zarr's
        ``FsspecStore`` over s3fs, the client of everything else here (the writer lock's
        conditional PUTs, listings, removal).
        """
        if read_only:
            from zarr.storage import ObjectStore

            from nsa.shard_index import ShardIndexCache

            return ShardIndexCache(ObjectStore(_object_store(self), read_only=True))
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(str(self), storage_options=self.storage_options())

    def list_keys(self) -> list[str]:
        """Every object under the prefix, relative to it (``zarr.json``, ``images/c/0/0/0``)."""
        fs = self.filesystem()
        try:
            found = fs.find(self.fs_path)
        except FileNotFoundError:
            return []
        return sorted(k.removeprefix(self.fs_path + "/") for k in found
                      if k.startswith(self.fs_path + "/"))

    def exists(self) -> bool:
        """Whether any object is under the prefix (one HEAD and one short listing)."""
        return bool(self.filesystem().exists(self.fs_path))

    def size_bytes(self) -> int:
        fs = self.filesystem()
        try:
            return int(fs.du(self.fs_path))
        except FileNotFoundError:
            return 0

    def put(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Write objects (key relative to the prefix, bytes), one PUT each, in order."""
        fs = self.filesystem()
        for key, data in items:
            fs.pipe_file(f"{self.fs_path}/{key}", data)

    def remove(self, last: str = "zarr.json") -> None:
        """Delete every object under the prefix, ``last`` after all the others (so an
        interrupted removal never leaves a group that opens without its arrays)."""
        fs = self.filesystem()
        keys = [f"{self.fs_path}/{k}" for k in self.list_keys() if k != last]
        if keys:
            fs.rm(keys)
        with suppress(FileNotFoundError):
            fs.rm_file(f"{self.fs_path}/{last}")

    def answers(self) -> bool:
        """Whether the server answers a request about the bucket now (any answer, an
        error too, within :data:`PROBE_TIMEOUT_S`): False when it cannot be reached."""
        try:
            self.filesystem(probe=True).call_s3("list_objects_v2", Bucket=self.bucket,
                                                MaxKeys=1)
        except connection_errors():
            return False
        except OSError:  # s3fs's translation of an answer (no such bucket, denied)
            return True
        return True

    def check(self) -> None:
        """Fail in seconds, with one line naming the URL, when the store cannot be reached:
        no credentials, no such bucket, access denied, or no server at the endpoint.

        Raises :class:`LocationError`. Probes once per process and location.
        """
        if (self.endpoint, self.bucket) in _REACHED:
            return
        import botocore.exceptions
        import botocore.session

        try:
            credentials = botocore.session.get_session().get_credentials()
        except botocore.exceptions.PartialCredentialsError as exc:
            raise LocationError(f"{self}: incomplete S3 credentials ({exc})") from None
        if credentials is None:
            raise LocationError(
                f"{self}: no S3 credentials (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
        server = self.endpoint or "AWS S3"
        try:  # a listing, not HEAD: its error names the cause (HEAD's has no body)
            self.filesystem(probe=True).call_s3("list_objects_v2", Bucket=self.bucket,
                                                MaxKeys=1)
        except FileNotFoundError as exc:
            if _error_code(exc) != "NoSuchBucket":  # e.g. a web server that is no S3
                raise LocationError(f"{self}: {server} does not answer as an S3 server "
                                    f"(HTTP {_error_code(exc)} for the bucket "
                                    f"{self.bucket!r})") from None
            raise LocationError(f"{self}: bucket {self.bucket!r} does not exist on "
                                f"{server}") from None
        except PermissionError:
            raise LocationError(f"{self}: access to bucket {self.bucket!r} denied by "
                                f"{server} (check the credentials)") from None
        except (botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError) as exc:
            raise LocationError(f"{self}: cannot reach the S3 endpoint {server} "
                                f"({exc.__class__.__name__})") from None
        except OSError as exc:
            raise LocationError(f"{self}: {server} refused the bucket {self.bucket!r} "
                                f"({exc})") from None
        _REACHED.add((self.endpoint, self.bucket))


class _BotocoreCredentials:
    """obstore's credential provider over botocore's credential chain, so that reads find
    the credentials where s3fs (and every AWS client) does: the environment, ``AWS_PROFILE``
    and its files, SSO, an instance role. botocore refreshes temporary credentials itself;
    obstore asks again every :data:`CREDENTIALS_TTL`."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def __call__(self) -> dict[str, Any]:
        frozen = self.credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token,
                "expires_at": datetime.now(UTC) + CREDENTIALS_TTL}


def _object_store(location: S3Location) -> Any:
    """obstore's ``S3Store`` for ``location``'s prefix, for reading.

    Why not s3fs here: measured against moto (``bench/object_store.py``'s set-up, client
    on its own CPU), a 2 kB GET costs 0.24 to 0.36 ms of the reader's CPU through obstore
    and 2 to 3 ms through s3fs (botocore's signing, hooks and parsers in Python), an 8 MB
    GET 3 to 3.5 ms against 17 to 21 ms (aiohttp's reads and copies): with 7 GETs per chunk,
    S3 cost a training loader 25 to 35 ms of CPU per chunk more than disk through s3fs.

    The region is botocore's (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile), else
    the bucket's own as AWS reports it, else ``us-east-1`` (MinIO's and Ceph's default).
    Raises :class:`LocationError` when no credentials are found.
    """
    import botocore.session
    from obstore.store import S3Store

    session = botocore.session.get_session()
    credentials = session.get_credentials()
    if credentials is None:
        raise LocationError(f"{location}: no S3 credentials (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
    region = session.get_config_variable("region") or _bucket_region(location) or "us-east-1"
    options: dict[str, Any] = {"region": region}
    if location.endpoint:
        options["endpoint"] = location.endpoint
    return S3Store(location.bucket, prefix=location.key_prefix, config=options,
                   client_options={"allow_http": bool(location.endpoint and
                                                      location.endpoint.startswith("http://"))},
                   credential_provider=_BotocoreCredentials(credentials))


def _bucket_region(location: S3Location) -> str | None:
    """The region AWS reports for the bucket (its ``x-amz-bucket-region`` header), or None
    for another server (which has no regions to redirect between) or no answer."""
    if location.endpoint:
        return None
    try:
        answer = location.filesystem().call_s3("head_bucket", Bucket=location.bucket)
    except OSError:
        return None
    return answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")


Location = LocalLocation | S3Location


def connection_errors() -> tuple[type[Exception], ...]:
    """botocore's errors for a server that does not answer (connection refused or
    closed, timeouts): no OSError, unlike s3fs's translations of S3's answers."""
    import botocore.exceptions

    return botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError


def endpoint_lost(exc: BaseException, location: Location, then: str = "") -> OutputError | None:
    """The one-line :class:`~nsa.errors.OutputError` (exit 1) for ``exc`` when it is
    botocore's report of an S3 server that stopped answering (connection refused or
    closed, a timeout) while ``location`` was in use, else None. ``then`` is appended
    (what the user can do, e.g. resume)."""
    if not isinstance(location, S3Location) or not isinstance(exc, connection_errors()):
        return None
    server = location.endpoint or "AWS S3"
    return OutputError(f"{location}: the S3 endpoint {server} stopped answering "
                       f"({exc.__class__.__name__})" + (f"; {then}" if then else ""))


@contextmanager
def s3_failures(location: Location, then: str = "") -> Iterator[None]:
    """In the body, an S3 server that stops answering becomes the one line of
    :func:`endpoint_lost` (a botocore error is no OSError: it would otherwise end a
    command with a traceback)."""
    try:
        yield
    except connection_errors() as exc:  # botocore, a core dependency (through s3fs)
        lost = endpoint_lost(exc, location, then)
        if lost is None:  # a local store: not ours to reword
            raise
        raise lost from None


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code (``NoSuchBucket``, ``404``) of the botocore error behind ``exc``."""
    response = getattr(exc.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code")


def local_folder(value: str | None) -> Path | None:
    """A typer callback for an option that takes a local path only (``nsa-train --out``,
    ``nsa-eval --model``): the path, or a usage error (one line, exit 2) for a URL, which
    a ``Path`` option would otherwise turn into a folder named ``s3:``. The option's type
    must be ``str``, so that the error shows the URL as typed."""
    if value is None:
        return None
    if "://" in value or _MISTYPED_URL.match(value):
        import typer

        raise typer.BadParameter(f"{value!r} is a URL; this option takes a local path (stores "
                                 "may be s3:// URLs, and nsa-pipeline's out)")
    return Path(value)


def is_url(where: str | Path) -> bool:
    return isinstance(where, str) and where.startswith(S3_SCHEME)


def endpoint_from_environment() -> str | None:
    """The S3 endpoint botocore would use: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def parse_location(where: str | Path | Location, endpoint: str | None = None) -> Location:
    """A local path or an ``s3://bucket/key`` URL as a location.

    ``endpoint`` overrides the environment's S3 endpoint. Raises :class:`LocationError`
    for an ``s3://`` URL without a bucket or key, another scheme (``gs://``), or a scheme
    with one slash (``s3:/b/x.zarr``, which would otherwise become a local folder ``s3:``).
    """
    if isinstance(where, LocalLocation | S3Location):
        return where
    text = str(where)
    if isinstance(where, str) and where.startswith(S3_SCHEME):
        bucket, _, key = where[len(S3_SCHEME):].partition("/")
        key = key.strip("/")
        if not bucket or not key:
            raise LocationError(f"{where}: an S3 store needs s3://BUCKET/KEY")
        server = endpoint or endpoint_from_environment()
        if server is not None and not server.startswith(("http://", "https://")):
            given = "the endpoint" if endpoint else "AWS_ENDPOINT_URL"
            raise LocationError(f"{where}: {given} {server!r} needs http:// or https://")
        return S3Location(bucket, key, server)
    if isinstance(where, str) and "://" in text:
        raise LocationError(f"{where}: only local paths and s3:// URLs are supported")
    if isinstance(where, str) and _MISTYPED_URL.match(where):
        raise LocationError(f"{where}: a URL needs '://' after its scheme (s3://BUCKET/KEY); "
                            "a local folder cannot start with 'scheme:/'")
    return LocalLocation(Path(where))


@dataclass
class S3Lock:
    """The writer lock object of an S3 store (see the module's docstring)."""

    location: S3Location
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    etag: str | None = None
    lost: str | None = None

    @property
    def path(self) -> str:
        prefix, _, name = self.location.fs_path.rpartition("/")
        return f"{prefix}/.{name}.lock"

    def _body(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "token": self.token, "expires": time.time() + LEASE_S}).encode()

    def _put(self, fs: Any, **condition: str) -> str:
        out = fs.call_s3("put_object", Bucket=self.location.bucket,
                         Key=self.path.split("/", 1)[1], Body=self._body(), **condition)
        return out["ETag"]

    def acquire(self) -> None:
        """Create the lock object, or take over a stale one; raise :class:`LocationError`
        naming the holder when it is held."""
        fs = self.location.filesystem()
        try:
            self.etag = self._put(fs, IfNoneMatch="*")
            return
        except FileExistsError:
            pass
        try:
            info = fs.info(self.path)
            holder = json.loads(fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            holder = {}
            info = {}
        if not _stale(holder):
            raise LocationError(
                f"{self.location}: another nsa-gen is writing this store (pid "
                f"{holder.get('pid')} on {holder.get('host')}; its lock "
                f"{S3_SCHEME}{self.path} expires in "
                f"{max(0, holder.get('expires', 0) - time.time()):.0f} s unless renewed)")
        try:  # only one taker wins: the put is conditional on the ETag just read
            if info.get("ETag"):
                self.etag = self._put(fs, IfMatch=info["ETag"])
            else:
                self.etag = self._put(fs, IfNoneMatch="*")
        except (FileExistsError, OSError):
            raise LocationError(f"{self.location}: another nsa-gen took over the stale lock "
                                f"{S3_SCHEME}{self.path} at the same moment") from None

    def renew(self) -> None:
        """Extend the lease; record :attr:`lost` when the lock is no longer ours."""
        try:
            self.etag = self._put(self.location.filesystem(), IfMatch=self.etag or "")
        except (OSError, *connection_errors()) as exc:
            self.lost = f"its renewal failed ({exc})"

    def check(self) -> None:
        """Raise :class:`LocationError` when the lock was lost while held."""
        if self.lost:
            raise LocationError(f"{self.location}: this nsa-gen lost its writer lock: "
                                f"{self.lost}; the store was not marked complete")

    def release(self) -> None:
        fs = self.location.filesystem()
        try:
            holder = json.loads(fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            return
        if holder.get("token") == self.token:
            fs.rm_file(self.path)


def _stale(holder: dict[str, Any]) -> bool:
    """Whether a lock's holder is gone: its lease ran out, or it ran on this host and its
    process no longer exists (an unreadable lock counts as stale)."""
    if not holder:
        return True
    if holder.get("expires", 0) < time.time():
        return True
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
    return False


@contextmanager
def s3_writer_lock(location: S3Location) -> Iterator[S3Lock]:
    """Hold the S3 writer lock of ``location``, renewing it in a daemon thread."""
    lock = S3Lock(location)
    lock.acquire()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_S / 3) and not lock.lost:
            lock.renew()

    thread = threading.Thread(target=renew, name="nsa-s3-lock", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        stop.set()
        thread.join()
        if not lock.lost:
            lock.release()
