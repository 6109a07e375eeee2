"""Start a private local Ray, or join a cluster, for the length of one command.

Every stage that uses Ray (generation tasks, Ray Train, cluster batch jobs) enters
:func:`ray_session`, so Ray is configured in one place:

- A local Ray gets its own temporary directory ``/tmp/nsa-ray-<pid>-*`` (short, as Ray's
  socket paths must stay under 108 bytes; removed afterwards), no dashboard, worker logs
  not forwarded to the terminal (task errors still arrive as exceptions), and these
  environment variables unless the user set them:
  ``RAY_AUTH_MODE=disabled`` (Ray 2.60 otherwise generates a token and writes it to
  ``~/.ray/auth_token``; a private single-machine instance needs no token),
  ``RAY_USAGE_STATS_ENABLED=0`` and ``RAY_enable_metrics_collection=0`` (without a
  dashboard nothing reads Ray's metrics; exporting them cost the dashboard agent half
  of its CPU). Nothing is written under ``$HOME``.
- ``address`` ("host:port" of a running head node, ``ray://host:port``, or ``auto``)
  joins that cluster with the environment as the user has it (a cluster that uses token
  authentication needs its token, as Ray documents). The port is probed first: ``ray.init``
  itself retries an unreachable address for minutes and waits forever on a service that
  is not Ray, we fail in seconds with a one-line :class:`~nsa.errors.UserError`. Ray's
  head (GCS) and client server are gRPC servers, so the probe opens an HTTP/2 connection
  and expects the server's SETTINGS frame (skipped when ``RAY_USE_TLS`` is set).
- Without ``address``, the ``RAY_ADDRESS`` environment variable counts as one, as it
  does for ``ray.init`` (a ``ray job submit`` entry point has it set).
- A local Ray's temporary folder and processes go when the session ends, also by
  Ctrl-C or SIGTERM (every CLI turns SIGTERM into an exception with
  :func:`nsa.errors.terminate_as_interrupt`; that handler is kept across ``ray.init``,
  which installs its own). Folders ``/tmp/nsa-ray-<pid>-*`` whose process is dead
  (killed with ``kill -9``) are removed when the next session starts.
- When Ray is already initialised (a caller, a test fixture, or a Ray job), the session
  uses it as it is and leaves it running.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nsa.errors import OutputError, Terminated, UserError

#: Seconds to wait for a TCP connection to ``--address`` before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0
_TEMP_ROOT = "/tmp"
_TEMP_PREFIX = "nsa-ray-"
_LOCAL_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
              "RAY_enable_metrics_collection": "0"}


def _host_port(address: str, option: str) -> tuple[str, int]:
    """Split "host:port" or "ray://host:port" (UserError naming ``option`` otherwise)."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{option} {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S,
                    option: str = "--address") -> None:
    """Raise UserError (naming ``option``) unless a Ray head answers at ``address``.

    A Ray head (GCS) or Ray Client server is a gRPC server: after the HTTP/2 client
    preface it sends a SETTINGS frame. No connection, no answer within ``timeout``
    seconds, or another answer (an HTTP/1 server, say) is a one-line error.
    """
    host, port = _host_port(address, option)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise UserError(f"{option} {address}: no Ray cluster reachable ({reason})") from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        sock.close()
        return
    with sock:
        try:
            sock.sendall(_HTTP2_PREFACE + _HTTP2_EMPTY_SETTINGS)
            header = _receive(sock, 9)
        except TimeoutError:
            raise UserError(f"{option} {address}: not a Ray cluster (no answer to a gRPC "
                            f"connection within {timeout:g} s)") from None
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise UserError(f"{option} {address}: not a Ray cluster (the connection "
                            f"failed: {reason})") from None
    if len(header) < 9 or header[3] != _HTTP2_SETTINGS:
        raise UserError(f"{option} {address}: not a Ray cluster (the service there does not "
                        "speak gRPC)")


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP2_SETTINGS = 0x4
_HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, SETTINGS


def check_cluster(address: str | None) -> tuple[str | None, str]:
    """Probe the cluster that :func:`ray_session` would join: ``address``, else
    ``RAY_ADDRESS``; return ``(address, option)``, the option naming where it came from.
    Raises UserError as :func:`check_reachable`; ``auto`` and no address pass."""
    option = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None and address != "auto":
        check_reachable(address, option=option)
    return address, option


def _receive(sock: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes; fewer when the peer closes first."""
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            break
        data += more
    return data


def remove_stale_temp_dirs() -> None:
    """Remove ``/tmp/nsa-ray-<pid>-*`` folders whose process is gone (killed runs), and
    end the Ray processes of those sessions that are still running."""
    for folder in Path(_TEMP_ROOT).glob(f"{_TEMP_PREFIX}*-*"):
        pid = folder.name.removeprefix(_TEMP_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _end_processes_naming(str(folder))
            shutil.rmtree(folder, ignore_errors=True)


def _end_processes_naming(folder: str, grace_s: float = 3.0) -> None:
    """SIGTERM, then after ``grace_s`` SIGKILL, the processes whose command line names
    ``folder`` (a private session's temp folder): Ray's agents, which outlive
    ``ray.shutdown`` by a minute or more when ``ray.init`` was interrupted. Linux only
    (reads ``/proc``); elsewhere nothing is done."""
    marker = folder.encode()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [pid for pid in pids if _signal(pid, sig)]
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [pid for pid in pids if _running(pid)]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie's command line is empty)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes() != b""
    except OSError:
        return False


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig``; False when the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables the user has not set; restore them afterwards."""
    added = [key for key in values if key not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Run the body with Ray initialised; shut it down afterwards if we started it.

    ``num_cpus`` caps a local Ray (default: every CPU); it cannot change a cluster, so
    callers that join one limit their own concurrency. Raises :class:`UserError` for an
    unreachable or malformed ``address`` and for ``num_cpus < 1``.
    """
    import ray  # importing ray costs about a second; only commands that use it pay

    if num_cpus is not None and num_cpus < 1:
        raise UserError(f"--workers must be at least 1, not {num_cpus}")
    address, option = check_cluster(address)
    if ray.is_initialized():
        yield
        return
    temp_dir = None
    if not address:
        remove_stale_temp_dirs()
        temp_dir = tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=_TEMP_ROOT)
    try:
        with _environment({} if address else _LOCAL_ENV):
            _init(address, option, num_cpus, temp_dir)
            yield
    finally:
        ray.shutdown()  # also after a failed or interrupted ray.init: its processes go
        if temp_dir is not None:
            _end_processes_naming(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)


class _NoDashboardErrors(logging.Filter):
    """Drops the errors of Ray's ``start_api_server`` while a local Ray starts.

    ``ray.init`` starts Ray's dashboard process even with ``include_dashboard=False`` (as
    an API server) and, when it has not registered within a minute, logs four ERROR
    lines and goes on without it (Ray 2.60, ``ray/_private/services.py``; seen on a
    machine at load 16, and with ``RAY_DASHBOARD_STARTUP_TIMEOUT_S=0``). The commands use
    no dashboard, so those lines only alarm; a Ray that does not start at all is still
    one ``error:`` line (:func:`_init_error`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "start_api_server"


def _init(address: str | None, option: str, num_cpus: int | None,
          temp_dir: str | None) -> None:
    """``ray.init`` with one-line errors, keeping the caller's SIGTERM handler.

    ``ray.init`` installs a SIGTERM handler that calls ``sys.exit(15)``; a SIGTERM while
    it runs becomes :class:`~nsa.errors.Terminated` here, and the command's own handler
    (if it set one, e.g. :func:`~nsa.errors.terminate_as_interrupt`) is put back after.
    """
    import ray

    quiet = {"include_dashboard": False, "log_to_driver": False,
             "logging_level": logging.WARNING}
    main_thread = threading.current_thread() is threading.main_thread()
    on_sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    services_log, quiet_dashboard = logging.getLogger("ray._private.services"), _NoDashboardErrors()
    services_log.addFilter(quiet_dashboard)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus, _temp_dir=temp_dir, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise _init_error(exc, address, option) from None
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:
            raise
        raise Terminated() from None
    except Exception as exc:
        if type(exc) is not Exception:  # a bug: keep its traceback
            raise
        # Ray raises a plain Exception when its raylet has not registered after 30 s
        # ("The current node timed out during startup"), seen on an overloaded machine
        raise _init_error(exc, address, option) from None
    finally:
        services_log.removeFilter(quiet_dashboard)
        if callable(on_sigterm):  # ray.init replaced it
            signal.signal(signal.SIGTERM, on_sigterm)


def _init_error(exc: Exception, address: str | None, option: str) -> UserError:
    """The one-line error for a failed ``ray.init``: exit 2 for an address that does not
    connect (the user's input), exit 1 (:class:`~nsa.errors.OutputError`) for a local Ray
    that did not start (the machine: overloaded, out of memory or disk)."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if address:
        return UserError(f"{option} {address}: could not connect ({first_line})")
    return OutputError(f"could not start a local Ray ({first_line})")
