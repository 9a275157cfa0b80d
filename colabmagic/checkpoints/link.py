"""Link mode: LOCAL becomes a symlink into DRIVE_DIR, after its files are moved there.

Nothing is ever deleted: a name clash stops before anything moves, a move across
file systems copies to ``.partial`` and renames before it removes the source, and
``--force`` relinks a link that points elsewhere without touching its old target.
`link_checkpoints` also checks both paths and hands mirror mode to `mirror`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .. import drive, fsio, interrupts
from ..errors import ColabMagicError
from .mirror import running_mirror, start_mirror
from .names import list_checkpoints, prune
from .report import CheckpointLink


def local_path(text: str | os.PathLike) -> Path:
    """LOCAL as an absolute local path; a Drive path here is a mistake, said so."""
    if isinstance(text, str):
        if drive.split_drive_prefix(text.strip()) is not None:
            raise ColabMagicError(
                "LOCAL is the folder on local disk that training writes to, "
                f'not a Drive path: "{text}"'
            )
        text = os.path.expanduser(text.strip())
    return Path(os.path.abspath(text))


def _drive_path(text: str | os.PathLike) -> Path:
    path = drive.to_path(text) if isinstance(text, str) else Path(text)
    return Path(os.path.abspath(path))


def link_checkpoints(
    local: str | os.PathLike,
    drive_dir: str | os.PathLike,
    *,
    mirror: bool = False,
    every: float = 30,
    keep: int | None = None,
    force: bool = False,
) -> CheckpointLink:
    """Keep LOCAL's checkpoints in DRIVE_DIR: LOCAL becomes a symlink into Drive, or
    with ``mirror=True`` a background thread copies it there every EVERY seconds.

    The result lists the checkpoints newest first, with ``latest`` to resume from.
    """
    if local is None or drive_dir is None:
        raise ColabMagicError("give LOCAL and DRIVE_DIR, or --stop / --status")
    local = local_path(local)
    drive_dir = _drive_path(drive_dir)
    if keep is not None and keep < 1:
        raise ColabMagicError("--keep must be 1 or more")
    if not every > 0:
        raise ColabMagicError("--every must be more than 0 seconds")
    linked_there = local.is_symlink() and Path(os.path.realpath(local)) == Path(
        os.path.realpath(drive_dir)
    )
    if not linked_there:
        here = Path(os.path.realpath(local.parent)) / local.name
        there = Path(os.path.realpath(drive_dir))
        if here == there or here in there.parents or there in here.parents:
            raise ColabMagicError(f"LOCAL ({local}) and DRIVE_DIR ({drive_dir}) overlap")
    if mirror:
        return start_mirror(local, drive_dir, every, keep)
    if running_mirror(local) is not None:
        raise ColabMagicError(f"{local} is being mirrored; %ckptlink --stop first")
    return _link(local, drive_dir, keep, force)


@interrupts.deferred()  # after drive.to_path: mounting Drive must stay interruptible
def _link(local: Path, drive_dir: Path, keep: int | None, force: bool) -> CheckpointLink:
    warnings = []
    moved = 0
    if local.is_symlink():
        target = os.readlink(local)
        if Path(os.path.realpath(local)) == Path(os.path.realpath(drive_dir)):
            make_dir(drive_dir)
            action = "unchanged"
        elif not force:
            raise ColabMagicError(
                f'{local} is a link to "{target}", not to {drive.shown(drive_dir)}; '
                "--force relinks it (nothing is deleted)"
            )
        else:
            make_dir(drive_dir)
            _replace_link(local, drive_dir)
            action = "relinked"
            warnings.append(f'The files in "{target}", the old target, were left where they are.')
    elif local.exists():
        if not local.is_dir():
            raise ColabMagicError(f"{local} is a file; LOCAL must be a folder")
        make_dir(drive_dir)
        moved = _move_into(local, drive_dir)
        local.rmdir()
        os.symlink(drive_dir, local, target_is_directory=True)
        action = "linked"
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        make_dir(drive_dir)
        os.symlink(drive_dir, local, target_is_directory=True)
        action = "linked"
    pruned = prune_or_fail(drive_dir, keep)
    found = tuple(list_checkpoints(local))
    return CheckpointLink(
        mode="link",
        local=local,
        drive_dir=drive_dir,
        checkpoints=found,
        latest=found[0] if found else None,
        action=action,
        moved=moved,
        pruned=tuple(pruned),
        warnings=tuple(warnings),
    )


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColabMagicError(f"cannot create {drive.shown(path)}: {error}") from None


def _replace_link(local: Path, target: Path) -> None:
    """Point the symlink LOCAL at TARGET in one step (a new link renamed over it)."""
    temporary = local.with_name(f".{local.name}.colabmagic-link")
    fsio.remove_quietly(temporary)
    os.symlink(target, temporary, target_is_directory=True)
    os.replace(temporary, local)


def _move_into(local: Path, drive_dir: Path) -> int:
    """Move LOCAL's entries into DRIVE_DIR; on any name clash, move nothing."""
    names = sorted(os.listdir(local))
    clashes = [name for name in names if os.path.lexists(drive_dir / name)]
    if clashes:
        more = f" (and {len(clashes) - 1} more clashes)" if len(clashes) > 1 else ""
        raise ColabMagicError(
            f'"{local / clashes[0]}" and "{drive_dir / clashes[0]}" both exist{more}; '
            "nothing was moved: rename or remove one of them, then run again"
        )
    for done, name in enumerate(names):
        try:
            _move(local / name, drive_dir / name)
        except OSError as error:
            raise ColabMagicError(
                f"moving {local / name} into Drive failed: {error}; {done} of {len(names)} "
                f"entries were moved, the rest are still in {local}: run again to go on"
            ) from None
    return len(names)


def _move(source: Path, target: Path) -> None:
    """Rename when on the same filesystem; else copy to a .partial name, rename, and
    only then remove the source, so that a failure loses nothing."""
    import shutil

    try:
        os.rename(source, target)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    partial = fsio.partial_of(target)
    try:
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, partial, symlinks=True)
        else:
            shutil.copy2(source, partial, follow_symlinks=False)
        os.replace(partial, target)
    except BaseException:
        fsio.remove_quietly(partial)
        raise
    if source.is_dir() and not source.is_symlink():
        shutil.rmtree(source)
    else:
        source.unlink()


def prune_or_fail(drive_dir: Path, keep: int | None) -> list[Path]:
    if keep is None:
        return []
    try:
        return prune(drive_dir, keep)
    except OSError as error:
        raise ColabMagicError(f"pruning old checkpoints in Drive failed: {error}") from None
