"""A typer group whose first command is also its default: ``cmd --opt`` = ``cmd first --opt``.

``nsa-train --shards A --out R`` (the original single-command form) and
``nsa-train export R`` share one program: any arguments that do not start with a
subcommand's name (or ``--help``) go to the default command.
"""

from __future__ import annotations

import click
from typer.core import TyperGroup

HELP_OPTIONS = ("--help", "-h")


class DefaultCommandGroup(TyperGroup):
    """Route arguments that name no subcommand to :attr:`default_command`."""

    default_command = "train"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in HELP_OPTIONS:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)
