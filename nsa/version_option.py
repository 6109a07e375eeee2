"""The ``--version`` callback every nsa command shares."""

from __future__ import annotations

import typer

import nsa


def show_version(value: bool) -> None:
    """Print the package version and stop, when ``--version`` was given."""
    if value:
        print(nsa.__version__)
        raise typer.Exit()
