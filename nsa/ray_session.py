"""Start a private local Ray, or join a cluster, for the length of one command.

Every stage that uses Ray (generation tasks, Ray Train, cluster batch jobs) enters
:func:`ray_session`, so Ray is configured in one place:

- A local Ray gets its own temporary directory ``/tmp/nsa-ray-<pid>-*`` (short, as Ray's
  socket paths must stay under 108 bytes; removed afterwards), no dashboard, worker logs
  not forwarded to the terminal (task errors still arrive as exceptions), and these
  environment variables unless the user set them:
  ``RAY_AUTH_MODE=disabled`` (Ray 2.60 otherwise generates a token and writes it to
  ``~/.ray/auth_token``; a private single-machine instance needs no token) and
  ``RAY_USAGE_STATS_ENABLED=0``. Nothing is written under ``$HOME``.
- ``address`` ("host:port" of a running head node, ``ray://host:port``, or ``auto``)
  joins that cluster with the environment as the user has it (a cluster that uses token
  authentication needs its token, as Ray documents). The port is probed first with a
  plain TCP connection: ``ray.init`` itself retries an unreachable address for minutes,
  we fail in seconds with a one-line :class:`~nsa.errors.UserError`.
- Without ``address``, the ``RAY_ADDRESS`` environment variable counts as one, as it
  does for ``ray.init`` (a ``ray job submit`` entry point has it set).
- When Ray is already initialised (a caller, a test fixture, or a Ray job), the session
  uses it as it is and leaves it running.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from nsa.errors import UserError

#: Seconds to wait for a TCP connection to ``--address`` before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0
_LOCAL_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _host_port(address: str, option: str) -> tuple[str, int]:
    """Split "host:port" or "ray://host:port" (UserError naming ``option`` otherwise)."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{option} {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S,
                    option: str = "--address") -> None:
    """Raise UserError (naming ``option``) unless something accepts TCP connections at
    ``address``."""
    host, port = _host_port(address, option)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise UserError(f"{option} {address}: no Ray cluster reachable ({reason})") from None


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
    option = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None and address != "auto":
        check_reachable(address, option=option)
    if ray.is_initialized():
        yield
        return
    temp_dir = None if address else tempfile.mkdtemp(prefix=f"nsa-ray-{os.getpid()}-",
                                                     dir="/tmp")
    quiet = {"include_dashboard": False, "log_to_driver": False,
             "logging_level": logging.WARNING}
    env = {} if address else _LOCAL_ENV
    with _environment(env):
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=num_cpus, _temp_dir=temp_dir, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if address:
                raise UserError(f"{option} {address}: could not connect ({first_line})") \
                    from None
            raise UserError(f"could not start a local Ray ({first_line})") from None
        try:
            yield
        finally:
            ray.shutdown()
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
