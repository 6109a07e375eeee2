"""Error types for bad input and failed environments, and the CLI wrapper that turns them
into one line.

Library code raises :class:`UserError` (or a subclass) with a message that names the file
or option at fault; CLI entry points run inside :func:`cli_errors`, which prints
``error: <message>`` to stderr and exits with the error's code, so users never see a
traceback for an expected failure:

- exit 2: bad input (:class:`UserError`; an ``OSError`` about a path the user gave:
  missing, not a directory, permission denied, read-only file system);
- exit 1: a check that found a problem (:class:`CheckFailed`), or an environment that
  failed the command (:class:`OutputError`: no space left, I/O error);
- exit 130: interrupted (Ctrl-C, or SIGTERM: see :func:`terminate_as_interrupt`).

Writes that can fail for lack of space go through :func:`writing`, which names the path
in the message (a bare ``write()`` error does not carry one).
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

#: OSError numbers that mean "the path the user gave is wrong", hence exit 2.
_INPUT_ERRNOS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,
})


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong option, an unusable store."""

    exit_code = 2


class CheckFailed(UserError):
    """A check the user asked for found a problem (e.g. ``nsa-gen verify``): exit 1."""

    exit_code = 1


class OutputError(UserError):
    """The environment failed a write or read (no space left, I/O error), or a local
    Ray that would not start: exit 1.

    Raised by :func:`writing` for an ``OSError`` whose cause is not the path itself;
    one for a wrong path (missing folder, permission denied) keeps exit 2.
    """

    exit_code = 1


def os_error_line(exc: OSError, path: str | Path | None = None) -> str:
    """``"<path>: <reason>"`` for an OSError, e.g. ``"/x/y.zarr: no space left on device"``.

    ``path`` wins over the error's own ``filename`` (which is often a temporary name).
    """
    where = path if path is not None else exc.filename
    reason = exc.strerror.lower() if exc.strerror else (str(exc) or type(exc).__name__)
    return f"{where}: {reason}" if where is not None else reason


def os_error(exc: OSError, path: str | Path | None = None) -> UserError:
    """The :class:`UserError` (exit 2) or :class:`OutputError` (exit 1) for ``exc``."""
    cls = UserError if exc.errno in _INPUT_ERRNOS else OutputError
    return cls(os_error_line(exc, path))


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised in the body into a one-line error naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise os_error(exc, path) from exc


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so that ``finally`` blocks clean up."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """In the body, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op).

    The previous handler is put back afterwards, so a CLI called in-process (tests) leaves
    the caller's signal handling as it was.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Print an expected failure as one ``error:`` line on stderr and exit with its code.

    Catches :class:`UserError` (its ``exit_code``), ``OSError`` (see :func:`os_error`)
    and ``KeyboardInterrupt`` (exit 130); SIGTERM counts as an interrupt in the body (see
    :func:`terminate_as_interrupt`), so ``finally`` blocks clean up (Ray, temporary files).
    Anything else is a bug and keeps its traceback.
    """
    try:
        with terminate_as_interrupt():
            yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        error = os_error(exc)
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(what, file=sys.stderr)
        sys.stderr.flush()
        raise typer.Exit(130) from None

