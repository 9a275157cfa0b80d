"""Moved to `colabmagic.commands`; kept until nothing imports it."""

from .commands import COMMANDS, FORCE, QUIET, WORKERS, Arg  # noqa: F401
