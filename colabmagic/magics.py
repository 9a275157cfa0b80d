"""The magics: parse the line, call the Python twin, return its result."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Int, TraitError, Unicode, observe, validate

from . import args as arg_specs
from . import drive
from .errors import ColabMagicError


def _with_args(command: str) -> Callable[[Callable], Callable]:
    """Apply the shared argument definition of COMMAND, and turn expected failures
    into IPython's one-line UsageError."""
    _, specs = arg_specs.COMMANDS[command]

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: ColabMagic, line: str = "") -> Any:
            # POSIX splitting, so "My Drive/x" arrives without its quotes (IPython's
            # parse_argstring keeps them); the parser is the one @argument built.
            try:
                argv = shlex.split(line)
            except ValueError as error:
                raise UsageError(f"%{command}: {error}") from None
            try:
                return method(self, wrapper.parser.parse_args(argv))
            except ColabMagicError as error:
                raise UsageError(f"%{command}: {error}") from None

        # `argument` decorators are listed bottom-up; apply them in reverse so that
        # the usage line shows them in the order of args.py.
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
    workers = Int(16, help="Reads in flight when copying or packing many files.").tag(config=True)
    progress = Bool(True, help="Show progress bars.").tag(config=True)
    retries = Int(5, help="Re-opens of a Drive file after EIO/ENOTCONN before giving up.").tag(
        config=True
    )

    @validate("workers")
    def _valid_workers(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= 256:
            raise TraitError("ColabMagic.workers must be between 1 and 256")
        return proposal["value"]

    @validate("retries")
    def _valid_retries(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError("ColabMagic.retries must be 0 or more")
        return proposal["value"]

    @observe("drive_root")
    def _drive_root_changed(self, change: Any) -> None:
        drive.use_root(change["new"] or None)

    @observe("mount_point")
    def _mount_point_changed(self, change: Any) -> None:
        drive.use_mount_point(change["new"])

    def _quiet(self, args: Any) -> bool:
        return bool(getattr(args, "quiet", False)) or not self.progress

    def _workers(self, args: Any) -> int:
        return args.workers if args.workers is not None else self.workers

    @line_magic
    @_with_args("stage")
    def stage(self, args: Any) -> Any:
        """Bring SRC from Drive to local disk, once: an archive is unpacked while it
        streams in, a folder is copied with many reads in flight."""
        from .staging import stage

        return stage(
            args.src,
            args.to,
            force=args.force,
            keep_archive=args.keep_archive,
            sha256=args.sha256,
            workers=self._workers(args),
            quiet=self._quiet(args),
            retries=self.retries,
            format=args.format,
            allow_ratio=args.allow_ratio,
        )

    @line_magic
    @_with_args("packdrive")
    def packdrive(self, args: Any) -> Any:
        """Pack a Drive folder of many small files into one archive beside it."""
        from .packing import pack

        return pack(
            args.folder,
            args.archive,
            format=args.format,
            shard_size=args.shard_size,
            compress=args.compress,
            workers=self._workers(args),
            force=args.force,
            quiet=self._quiet(args),
        )

    @line_magic
    @_with_args("ckptlink")
    def ckptlink(self, args: Any) -> Any:
        """Keep LOCAL's checkpoints in DRIVE_DIR: a symlink, or with --mirror a
        background copy, so that a disconnect loses nothing."""
        from . import checkpoints

        if args.stop:
            return checkpoints.stop_mirror(args.local)
        if args.status:
            return checkpoints.mirror_status()
        if args.local is None or args.drive_dir is None:
            raise ColabMagicError("give LOCAL and DRIVE_DIR, or --stop / --status")
        return checkpoints.link_checkpoints(
            args.local,
            args.drive_dir,
            mirror=args.mirror,
            every=args.every,
            keep=args.keep,
            force=args.force,
        )

    @line_magic
    @_with_args("timeread")
    def timeread(self, args: Any) -> Any:
        """Measure what reading PATH costs from Drive, against local disk."""
        from .timeread import timeread

        return timeread(
            args.path,
            files=args.files,
            workers=self._workers(args),
            local=args.local,
            quiet=self._quiet(args),
        )

    @line_magic
    @_with_args("drive")
    def drive(self, args: Any) -> Any:
        """Show where Drive is and how it is doing; --fake DIR mounts a simulated Drive."""
        from . import status

        if args.unmount:
            return status.unmount()
        if args.remount:
            return status.remount()
        if args.fake:
            return status.fake(args.fake, profile=args.profile)
        return status.drive_status()


def load(ip: Any) -> None:
    ip.register_magics(ColabMagic)


def unload(ip: Any) -> None:
    """Remove the magics that `load` registered, so %load_ext can run again."""
    manager = ip.magics_manager
    instance = manager.registry.pop(ColabMagic.__name__, None)
    if instance is None:
        return
    for kind, names in instance.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    from . import checkpoints

    checkpoints.stop_all_mirrors()
