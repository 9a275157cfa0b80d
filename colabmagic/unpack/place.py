"""Moving a finished work folder into DIR: one transaction, checked at each rename.

The work folder (``DIR/.colabmagic/tmp-*``) holds everything a stage produced.  It is
merged into DIR as ``unzip -o`` / ``tar -x`` merge: a path of the work folder that DIR
does not have is renamed in whole; a folder on both sides is merged, child by child;
anything else in the way is *displaced*: moved aside, never deleted, and only when it
may be replaced (`Claims`).  Every rename into DIR is ``renameat2(RENAME_NOREPLACE)``
relative to a descriptor of a folder opened without following links, so that

- nothing is written through a link (a user's link to ``/etc`` is an entry in the
  way, never a folder to merge into), and
- the "is this mine to replace" check holds at the moment of the rename: an entry
  the user creates meanwhile makes the rename fail, and the transaction is undone.

A failure, or Ctrl-C, undoes every rename done so far, in reverse, so that DIR is as
it was.  Displaced entries that were exactly what the previous stage created go to a
trash folder that is removed; anything else displaced goes to
``DIR/.colabmagic/replaced/<time>/`` and is kept for the user.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import interrupts
from ..errors import ColabMagicError
from .members import NameTable, shown

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_HOPS = 40  # links followed resolving one path, as Linux allows (ELOOP)

_renameat2 = None  # the libc function, or False where there is none


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
            function.argtypes += [ctypes.c_uint]
            function.restype = ctypes.c_int
            _renameat2 = function
        except (AttributeError, OSError):
            _renameat2 = False
    return _renameat2


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename SRC (in folder SRC_FD) to DST (in DST_FD); FileExistsError if DST exists,
    decided by the kernel at the moment of the rename.

    Where renameat2 or its flag is missing (old kernels, some FUSE file systems) a
    file or link is hard-linked then unlinked (link() never replaces either), and a
    folder is renamed after a check: that last window is covered by the stage lock.
    """
    function = _libc_renameat2()
    if function:
        if function(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), dst)
    if not stat.S_ISDIR(os.lstat(src, dir_fd=src_fd).st_mode):
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        os.unlink(src, dir_fd=src_fd)
        return
    try:
        os.lstat(dst, dir_fd=dst_fd)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


def exchange(src_fd: int, src: str, dst_fd: int, dst: str) -> bool:
    """Swap SRC and DST in one step (renameat2 RENAME_EXCHANGE); False where the
    kernel or file system cannot, and nothing was done."""
    function = _libc_renameat2()
    if not function:
        return False
    if function(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), dst)


class Conflict(ColabMagicError):
    """An entry of DIR is in the way and may not be replaced; nothing was staged."""


@dataclass
class Claims:
    """What a stage may replace in DIR.

    OURS maps each path the previous stage of this source created to its
    (kind, size, mtime_ns); FORCE replaces anything in the way.  TOPS are the
    top-level names a stage without a manifest (an older marker) created: anything
    under them may be replaced, but is kept.
    """

    ours: Mapping[str, list] = field(default_factory=dict)  # a dict or a Manifest
    tops: set[str] = field(default_factory=set)
    force: bool = False

    def exactly_ours(self, rel: str, st: os.stat_result) -> bool:
        """Whether REL, as it is now, is what the previous stage left there."""
        return self.ours.get(rel) == describe(st)

    def may_replace(self, rel: str, st: os.stat_result) -> bool:
        return self.force or rel in self.ours or rel.split("/", 1)[0] in self.tops

    def may_merge_top(self, name: str) -> bool:
        """Whether an existing top-level folder NAME may be merged into."""
        return self.force or name in self.ours or name in self.tops


def describe(st: os.stat_result) -> list:
    """What a manifest records of one entry: kind, size, mtime (ns)."""
    if stat.S_ISDIR(st.st_mode):
        return ["d", 0, 0]
    kind = "l" if stat.S_ISLNK(st.st_mode) else "f"
    return [kind, st.st_size, st.st_mtime_ns]


class Manifest:
    """Path -> [kind, size, mtime_ns] of every path a stage made, as `describe`
    records them, in flat arrays: a stage of a million files keeps a million of
    these, which as a dict of lists took about 250 bytes each."""

    def __init__(self) -> None:
        self.names = NameTable()  # its kind byte holds "d", "f" or "l"
        self.sizes = array("Q")
        self.mtimes = array("q")

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return map(self.names.name, range(len(self.names)))

    def __contains__(self, rel: object) -> bool:
        return isinstance(rel, str) and self.names.find(rel) >= 0

    def _record(self, i: int) -> list:
        return [chr(self.names.kinds[i]), self.sizes[i], self.mtimes[i]]

    def get(self, rel: str, default=None):
        i = self.names.find(rel)
        return default if i < 0 else self._record(i)

    def items(self) -> Iterator[tuple[str, list]]:
        for i in range(len(self.names)):
            yield self.names.name(i), self._record(i)

    def set(self, rel: str, record: list) -> None:
        kind, size, mtime = record
        i = self.names.find(rel)
        if i < 0:
            self.names.add(rel, ord(kind))
            self.sizes.append(size)
            self.mtimes.append(mtime)
        else:
            self.names.kinds[i], self.sizes[i], self.mtimes[i] = ord(kind), size, mtime

    @classmethod
    def of(cls, recorded: Mapping[str, list]) -> Manifest:
        """RECORDED (a dict read from a marker) as a Manifest."""
        if isinstance(recorded, Manifest):
            return recorded
        found = cls()
        for rel, record in recorded.items():
            found.set(rel, record)
        return found

    def json_chunks(self, skip: Mapping[str, list] | None = None) -> Iterator[str]:
        """The members of a JSON object of these records, a few thousand at a time,
        to be joined with commas and put in braces; paths in SKIP are left out."""
        import json

        dumps = json.dumps
        names, kinds, sizes, mtimes = self.names, self.names.kinds, self.sizes, self.mtimes
        for start in range(0, len(names), 4096):
            part = []
            for i in range(start, min(start + 4096, len(names))):
                rel = names.name(i)
                if skip is None or rel not in skip:
                    part.append(f'{dumps(rel)}:["{chr(kinds[i])}",{sizes[i]},{mtimes[i]}]')
            if part:
                yield ",".join(part)


def manifest(work: Path, names: list[str]) -> Manifest:
    """Every path under WORK's top-level NAMES, as `describe` records it."""
    found = Manifest()
    base = os.fspath(work) + os.sep  # strings, not Paths: a million of them
    for name in names:
        st = os.lstat(base + name)
        found.set(name, describe(st))
        if not stat.S_ISDIR(st.st_mode):
            continue
        for dirpath, dirnames, filenames in os.walk(base + name):
            rel = dirpath[len(base) :]
            for child in dirnames + filenames:
                found.set(f"{rel}/{child}", describe(os.lstat(f"{dirpath}/{child}")))
    return found


@dataclass
class Placed:
    """What a transaction did, once it is committed."""

    displaced: int = 0  # entries moved to the replaced folder (kept)
    replaced_to: Path | None = None
    removed: int = 0  # entries of the previous stage replaced or no longer staged


class Transaction:
    """Merge WORK's top-level NAMES into DEST; undo everything on failure.

    Use as a context manager around `place()`: leaving it by an exception undoes
    the renames; `commit()` makes them final (the trash is removed).
    """

    def __init__(self, work: Path, dest: Path, state: Path, claims: Claims) -> None:
        self.work, self.dest, self.state, self.claims = work, dest, state, claims
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self._journal: list[tuple[str, str, Path | None]] = []
        self._trash: Path | None = None
        self._replaced: Path | None = None
        self.result = Placed()
        # The work folder's paths: an undo leaves in place a folder the user has
        # written into since it was moved there (undoing it would take their file).
        self.expected: Manifest | set[str] | None = None
        self._made_dirs: set[Path] = set()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is not None:
            self._undo()

    # ----------------------------------------------------------------- placing

    def place(self, names: list[str]) -> None:
        work_fd = os.open(self.work, _DIR_FLAGS)
        dest_fd = os.open(self.dest, _DIR_FLAGS)
        try:
            for name in names:
                self._place(work_fd, dest_fd, name, name)
        finally:
            os.close(work_fd)
            os.close(dest_fd)

    def _place(self, work_fd: int, dest_fd: int, name: str, rel: str) -> None:
        interrupts.check()
        there = _lstat(name, dest_fd)
        if there is None:
            try:
                rename_noreplace(work_fd, name, dest_fd, name)
                self._journal.append(("placed", rel, None))
                return
            except FileExistsError:
                there = _lstat(name, dest_fd)  # made while we looked: judge it
                if there is None:
                    raise
        mine = os.lstat(name, dir_fd=work_fd)
        if stat.S_ISDIR(mine.st_mode) and stat.S_ISDIR(there.st_mode):
            if "/" not in rel and not self.claims.may_merge_top(rel):
                raise self._conflict(rel)
            if not self._swap_whole(work_fd, dest_fd, name, rel, there):
                self._merge(work_fd, dest_fd, name, rel, there)
            return
        if not self.claims.may_replace(rel, there):
            raise self._conflict(rel)
        self._displace(dest_fd, name, rel, there)
        try:
            rename_noreplace(work_fd, name, dest_fd, name)
        except FileExistsError:
            raise self._conflict(rel) from None  # made again between the two renames
        self._journal.append(("placed", rel, None))

    def _swap_whole(self, work_fd: int, dest_fd: int, name: str, rel: str, there) -> bool:
        """A folder that is exactly what the previous stage made (nothing added,
        nothing changed) is swapped for the new one in one rename, instead of being
        merged file by file.  The old one is checked again once it is out of the way:
        if the user wrote into it meanwhile, it is swapped back and merged instead."""
        if self.claims.ours.get(rel) != ["d", 0, 0] or not self._all_ours(self.dest, rel):
            return False
        if not exchange(work_fd, name, dest_fd, name):
            return False
        old = os.lstat(name, dir_fd=work_fd)
        same = (old.st_dev, old.st_ino) == (there.st_dev, there.st_ino)
        if not same or not self._all_ours(self.work, rel):
            exchange(work_fd, name, dest_fd, name)  # put it back as it was, then merge
            return False
        self._journal.append(("exchanged", rel, None))  # the old one goes with WORK
        return True

    def _all_ours(self, base: Path, rel: str) -> bool:
        """Whether every path under BASE/REL is exactly what the previous stage made."""
        ours = self.claims.ours
        for dirpath, dirnames, filenames in os.walk(base / rel):
            prefix = os.path.relpath(dirpath, base)
            for child in dirnames + filenames:
                seen = ours.get(f"{prefix}/{child}")
                if seen is None or seen != describe(os.lstat(os.path.join(dirpath, child))):
                    return False
        return True

    def _merge(self, work_fd: int, dest_fd: int, name: str, rel: str, there) -> None:
        sub_work = os.open(name, _DIR_FLAGS, dir_fd=work_fd)
        try:
            try:
                sub_dest = os.open(name, _DIR_FLAGS, dir_fd=dest_fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    raise self._conflict(rel) from None  # swapped for a link or file just now
                raise
            try:
                opened = os.fstat(sub_dest)
                if (opened.st_dev, opened.st_ino) != (there.st_dev, there.st_ino):
                    raise self._conflict(rel)
                for child in sorted(os.listdir(sub_work)):
                    self._place(sub_work, sub_dest, child, f"{rel}/{child}")
            finally:
                os.close(sub_dest)
        finally:
            os.close(sub_work)

    def _displace(self, dest_fd: int, name: str, rel: str, there) -> None:
        """Move REL out of the way: to the trash if it is exactly the previous stage's,
        else to the replaced folder, where it is kept."""
        ours = self.claims.exactly_ours(rel, there) and not stat.S_ISDIR(there.st_mode)
        aside = self._aside(rel, ours)
        os.rename(name, aside, src_dir_fd=dest_fd)
        moved = os.lstat(aside)
        if ours and (moved.st_dev, moved.st_ino) != (there.st_dev, there.st_ino):
            # Another entry took its place between the look and the rename: keep it.
            kept = self._aside(rel, False)
            os.rename(aside, kept)
            aside, ours = kept, False
        self._journal.append(("displaced", rel, aside))

    def _aside(self, rel: str, ours: bool) -> Path:
        if ours:
            if self._trash is None:
                import tempfile

                self._trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.state))
            folder = self._trash
        else:
            if self._replaced is None:
                base = self.state / "replaced"
                base.mkdir(exist_ok=True)
                self._replaced = _fresh(base / self.stamp)
            folder = self._replaced
        path = folder / rel
        if path.parent not in self._made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(path.parent)
        return path

    def _conflict(self, rel: str) -> Conflict:
        return Conflict(
            f'"{self.dest / rel}" already exists and was not staged from this source; '
            "nothing was staged: move it away, or use --force to replace it (what is "
            f"replaced is kept in {self.dest.name}/.colabmagic/replaced/)"
        )

    def _written_into(self, rel: str) -> bool:
        path = self.dest / rel
        if self.expected is None or not path.is_dir() or path.is_symlink():
            return False
        for dirpath, dirnames, filenames in os.walk(path):
            base = os.path.relpath(dirpath, self.dest)
            for child in dirnames + filenames:
                if f"{base}/{child}" not in self.expected:
                    return True
        return False

    # ----------------------------------------------------------------- ending

    def remove_stale(self, new: Manifest | set[str]) -> None:
        """Remove what the previous stage created and this one (whose paths are NEW)
        did not: only entries exactly as that stage left them (an edited file is the
        user's now), and folders once they are empty."""
        for rel in sorted(self.claims.ours, key=lambda r: -r.count("/")):
            if rel in new:
                continue
            path = self.dest / rel
            st = _lstat_path(path)
            if st is None or not _real_parents(self.dest, rel):
                continue
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # only when empty: user files inside keep it
            elif self.claims.exactly_ours(rel, st):
                interrupts.check()
                aside = self._aside(rel, True)
                os.rename(path, aside)
                self._journal.append(("displaced", rel, aside))

    def commit(self) -> Placed:
        import shutil

        for action, _rel, aside in self._journal:
            if action != "displaced":
                continue
            if self._trash is not None and aside is not None and aside.is_relative_to(self._trash):
                self.result.removed += 1
            else:
                self.result.displaced += 1
        if self._trash is not None:
            shutil.rmtree(self._trash, ignore_errors=True)
        self.result.replaced_to = self._replaced if self.result.displaced else None
        self._journal = []
        return self.result

    def _undo(self) -> None:
        """Put everything back, last move first.  Runs on errors and Ctrl-C alike; a
        step that cannot be undone leaves its entry in the replaced folder."""
        import shutil

        for action, rel, aside in reversed(self._journal):
            try:
                if action == "placed":
                    if self._written_into(rel):
                        continue
                    os.rename(self.dest / rel, self.work / rel)
                elif action == "exchanged":
                    if self._written_into(rel):
                        continue
                    exchange(_AT_FDCWD, str(self.work / rel), _AT_FDCWD, str(self.dest / rel))
                else:
                    assert aside is not None
                    if _lstat_path(self.dest / rel) is None:
                        os.rename(aside, self.dest / rel)
            except OSError:
                continue
        self._journal = []
        if self._trash is not None:
            shutil.rmtree(self._trash, ignore_errors=True)  # empty unless undo failed
        if self._replaced is not None:
            _prune_empty(self._replaced)


def _real_parents(dest: Path, rel: str) -> bool:
    """Whether every folder above REL in DEST is a real folder (no link on the way)."""
    path = dest
    for part in rel.split("/")[:-1]:
        path = path / part
        st = _lstat_path(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return False
    return True


def _prune_empty(folder: Path) -> None:
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
    with contextlib.suppress(OSError):
        os.rmdir(folder.parent)  # replaced/ itself, when nothing was ever kept


def _fresh(path: Path) -> Path:
    """PATH, or PATH-2, PATH-3, ... : the first that did not exist, now created."""
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _lstat_path(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


# --------------------------------------------------------------------------- links


def check_links(
    work: Path, dest: Path, links: list[tuple[str, str]], on_escape: Callable[[str, str], None]
) -> None:
    """Judge each member link (name, target) as it will resolve once WORK is merged
    into DEST: through the archive's own members and through what DEST already holds,
    the user's own links included.  ON_ESCAPE(name, target) is called (and should
    raise) for a link whose real location would leave DEST."""
    real_dest = os.path.realpath(dest)
    for name, target in links:
        if not _stays_inside(work, dest, real_dest, name, target):
            on_escape(name, target)


def _stays_inside(work: Path, dest: Path, real_dest: str, name: str, target: str) -> bool:
    from collections import deque

    position = name.split("/")[:-1]
    todo = deque(target.split("/"))
    hops = 0
    while todo:
        part = todo.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not position:
                return False
            position.pop()
            continue
        position.append(part)
        kind, link = _lookup(work, dest, position)
        if kind is None or kind == "file":
            if kind == "file" and todo:
                return True  # a file in the middle: the link dangles, nothing is reached
            continue  # missing: what follows is judged by its names alone
        if kind == "link":
            hops += 1
            if hops > MAX_HOPS:
                return False
            position.pop()
            if link.startswith("/"):
                real = os.path.realpath(link)
                if real != real_dest and not real.startswith(real_dest + os.sep):
                    return False
                position = [p for p in os.path.relpath(real, real_dest).split("/") if p != "."]
            else:
                todo.extendleft(reversed(link.split("/")))
    return True


def _lookup(work: Path, dest: Path, parts: list[str]) -> tuple[str | None, str]:
    """What PARTS will be once WORK is merged into DEST: the work folder's entry where
    it has one, else DEST's (read from disk, links not followed)."""
    rel = "/".join(parts)
    for base in (work, dest):
        if base is dest and not _real_parents(dest, rel):
            break  # DEST's folder above is a link or a file: the work folder's replaces it
        st = _lstat_path(base / rel)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            return "link", os.readlink(base / rel)
        return ("dir" if stat.S_ISDIR(st.st_mode) else "file"), ""
    return None, ""


__all__ = [
    "Claims",
    "Conflict",
    "Manifest",
    "Placed",
    "Transaction",
    "check_links",
    "manifest",
    "shown",
]
