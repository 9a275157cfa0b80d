"""The magics: parse the line, call the Python twin, return its result.

The arguments, their defaults and the dispatch live in `commands` (shared with the
CLI); this module adds what only a kernel has: the traits and IPython's errors.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Int, TraitError, Unicode, observe, validate

from . import commands, drive, source
from .errors import ColabMagicError


def _command(name: str) -> Callable[[Callable], Callable]:
    """Make the magic NAME: `%name?` is METHOD's docstring and the usage generated from
    the shared argument table; the line is parsed by the shared parser and run by the
    shared dispatch (METHOD's body is never called); every expected failure is
    IPython's one-line ``UsageError("%name: ...")``."""
    _, specs = commands.COMMANDS[name]
    parser = commands.parser(name)

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: ColabMagic, line: str = "", cell: str | None = None) -> Any:
            try:
                argv = commands.split(line)
                if "-h" in argv or "--help" in argv:
                    print(wrapper.__doc__)
                    return None
                args = commands.parse(parser, argv)
                if cell is not None:  # a cell magic: %%cache
                    args.cell = cell
                return commands.run(name, args, self._defaults())
            except ColabMagicError as error:
                raise UsageError(f"{'%' if cell is None else '%%'}{name}: {error}") from None

        # `argument` decorators are listed bottom-up; apply them in reverse so that
        # the usage line shows them in the order of the table.
        for flags, options in reversed(specs):
            wrapper = argument(*flags, **options)(wrapper)
        return magic_arguments()(wrapper)

    return decorate


@magics_class
class ColabMagic(Magics):
    """Magics that stop Colab training from waiting on Google Drive."""

    drive_root = Unicode(
        "",
        help="Folder that holds MyDrive; empty means Colab's mount or $COLABMAGIC_DRIVE.",
    ).tag(config=True)
    mount_point = Unicode(drive.COLAB_MOUNT_POINT, help="Where Colab mounts Drive.").tag(
        config=True
    )
    workers = Int(
        source.WORKERS, help="Reads in flight when copying, packing or timing many files."
    ).tag(config=True)
    progress = Bool(True, help="Show progress bars.").tag(config=True)
    retries = Int(source.RETRIES, help="Retries of a Drive read or write after EIO/ENOTCONN.").tag(
        config=True
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        source.set_retries(self.retries)  # a default value is not observed

    @validate("workers")
    def _valid_workers(self, proposal: Any) -> int:
        try:
            return source.workers(proposal["value"])
        except ColabMagicError:
            raise TraitError(
                f"ColabMagic.workers must be between 1 and {source.MAX_WORKERS}"
            ) from None

    @validate("retries")
    def _valid_retries(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError("ColabMagic.retries must be 0 or more")
        return proposal["value"]

    @observe("retries")
    def _retries_changed(self, change: Any) -> None:
        source.set_retries(change["new"])

    @observe("drive_root")
    def _drive_root_changed(self, change: Any) -> None:
        drive.use_root(change["new"] or None)

    @observe("mount_point")
    def _mount_point_changed(self, change: Any) -> None:
        drive.use_mount_point(change["new"])

    def _defaults(self) -> commands.Defaults:
        return commands.Defaults(
            workers=self.workers, quiet=not self.progress, kernel=True, shell=self.shell
        )

    @line_magic
    @_command("stage")
    def stage(self) -> None:
        """Bring SRC from Drive to local disk, once: an archive is unpacked while it
        streams in, a folder is copied with many reads in flight."""

    @line_magic
    @_command("packdrive")
    def packdrive(self) -> None:
        """Pack a Drive folder of many small files into one archive beside it."""

    @line_magic
    @_command("ckptlink")
    def ckptlink(self) -> None:
        """Keep LOCAL's checkpoints in DRIVE_DIR: a symlink, or with --mirror a
        background copy, so that a disconnect loses nothing."""

    @line_magic
    @_command("timeread")
    def timeread(self) -> None:
        """Measure what reading PATH costs from Drive, against local disk."""

    @line_magic
    @_command("drive")
    def drive(self) -> None:
        """Show where Drive is and how it is doing; --fake DIR mounts a simulated Drive."""

    @line_cell_magic  # the line form says to make it the cell's first line
    @_command("cache")
    def cache(self) -> None:
        """Run the cell once and keep its --outputs in DRIVE_DIR; in a later session,
        restore them (exec bits kept, merged into what is there) instead of running it."""

    @line_magic
    @_command("devpath")
    def devpath(self) -> None:
        """Put DRIVE_DIR first on sys.path with autoreload on and bytecode kept local;
        shows its modules and warns of Drive's "name (1).py" copies, shadowed and stale
        modules.  --local imports from a local copy re-synced before each cell."""


def _semicolon_hides(lines: list[str]) -> list[str]:
    """``%stage x;`` as ``get_ipython().run_line_magic('stage', 'x');``.

    IPython hides a result when the parsed cell ends with ``;``, but it parses
    ``%stage x;`` into a call that does not, and hands the ``;`` to the magic; and it
    reads ``%drive;`` as a magic named ``drive;``.  Written as the call IPython itself
    would make, with the ``;`` after it, the result is hidden as DESIGN §4 says.
    """
    return [_MAGIC_WITH_SEMICOLON.sub(_as_quiet_call, line) for line in lines]


_MAGIC_WITH_SEMICOLON = re.compile(
    rf"^(?P<lead>\s*(?:[A-Za-z_][\w.]*\s*=\s*)?)%(?P<name>{'|'.join(commands.COMMANDS)})"
    r"(?:\s+(?P<rest>.*?))?\s*;[ \t]*(?P<end>\r?\n?)$"
)


def _as_quiet_call(match: re.Match) -> str:
    call = f"get_ipython().run_line_magic({match['name']!r}, {match['rest'] or ''!r})"
    return f"{match['lead']}{call};{match['end']}"


def load(ip: Any) -> None:
    ip.register_magics(ColabMagic)
    cleanup = getattr(ip, "input_transformers_cleanup", None)
    if cleanup is not None and _semicolon_hides not in cleanup:
        cleanup.append(_semicolon_hides)


def unload(ip: Any) -> None:
    """Remove the magics that `load` registered, so %load_ext can run again."""
    manager = ip.magics_manager
    instance = manager.registry.pop(ColabMagic.__name__, None)
    if instance is None:
        return
    for kind, names in instance.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    source.set_retries(source.RETRIES)
    cleanup = getattr(ip, "input_transformers_cleanup", [])
    if _semicolon_hides in cleanup:
        cleanup.remove(_semicolon_hides)
    from . import checkpoints

    checkpoints.stop_all_mirrors()
    if "colabmagic.devpath" in sys.modules:
        sys.modules["colabmagic.devpath"].remove_all(ip)
