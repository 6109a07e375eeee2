"""The project's typer application: typer's conventions, with a usage error on one line.

typer shows a usage error (an unknown option, a value of the wrong type, a missing
required option) as a usage line, a hint and a boxed panel. The project's rule for bad
input is one ``error:`` line naming the option, exit 2 (the code click gives usage
errors); the line ends with the ``--help`` to read. Everything else (help pages, ``--version``,
a command's own ``error:`` lines from :func:`nsa.errors.cli_errors`, exit codes 0/1/2/130)
is typer's unchanged.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer


class App(typer.Typer):
    """A ``typer.Typer`` whose usage errors print ``error: MESSAGE (see 'CMD --help')``."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs.setdefault("standalone_mode", False)
        try:
            code = super().__call__(*args, **kwargs)
        except typer.Abort:
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        except typer.TyperException as exc:  # typer's click.ClickException and subclasses
            if type(exc).__name__ == "NoArgsIsHelpError":  # typer has printed the help
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            print(f"error: {message}{hint}", file=sys.stderr)
            sys.exit(getattr(exc, "exit_code", 2))
        # typer returns the code of an explicit ``typer.Exit``; a command that finishes
        # returns None (no command of the project returns a value).
        sys.exit(code if isinstance(code, int) else 0)
