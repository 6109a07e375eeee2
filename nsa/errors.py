"""One error type for bad user input, and the CLI wrapper that turns it into one line.

Library code raises :class:`UserError` (or a subclass) with a message that names the file
or option at fault; CLI entry points run inside :func:`cli_errors`, which prints
``error: <message>`` to stderr and exits 2, so users never see a traceback for bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong option, an unusable store."""

    exit_code = 2


class CheckFailed(UserError):
    """A check the user asked for found a problem (e.g. ``nsa-gen verify``): exit 1."""

    exit_code = 1


@contextmanager
def cli_errors() -> Iterator[None]:
    """Print a :class:`UserError` as one line on stderr and exit with its code."""
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
