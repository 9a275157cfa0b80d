"""The Writer: members written under a fresh work folder, and nowhere else.

Small members are checked whole by the unpacking thread and written by a few
threads (`interrupts.pool`); links are made last and proven on disk to stay inside.
A local-disk error becomes one line that names the member (`ColabMagicError`);
a full disk is left as OSError for the stage to report as a whole.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NoReturn

from .. import interrupts
from ..errors import ColabMagicError
from ..fsio import WriteBack, create_file, write_all
from .members import PATH_MAX, Member, Refused, shown

# Members up to this size are checked whole (size, CRC) by the unpacking thread and
# then written by WRITE_THREADS threads: creating thousands of small files is where a
# throttled local disk makes the unpacker, and so the read from Drive, wait.  They go
# over in batches: one hand-over per file cost more (futures, locks, thread switches)
# than the file's own bytes.
SMALL_MEMBER = 1 << 20
WRITE_THREADS = 4
BATCH_FILES = 32  # a batch is handed over at this many files...
BATCH_BYTES = 4 << 20  # ...or this many bytes, whichever comes first
MAX_PENDING = 8  # batches handed over and not yet written (at most 32 MiB of memory)


class Writer:
    """Writes members under TOP (a fresh staging folder) and nowhere else.

    Files and folders are written as they stream in; links are created only at the
    end, once every file is on disk, so no member is ever written through a link, and
    each created link is then resolved on disk to prove it stays inside TOP.  Use as a
    context manager: leaving it (also by an exception) stops the writer threads.
    """

    def __init__(self, top: Path, *, budget: int | None = None) -> None:
        self.top = top
        self._prefix = os.path.join(os.fspath(top), "")  # str paths: pathlib costs per member
        self._writeback = WriteBack(top)
        self.budget = budget  # bytes the disk can still take; None = unchecked
        self.written = 0
        self.files = 0
        self._made: set[str] = set()
        self._links: list[Member] = []
        self._pool = None
        self._threads = ExitStack()
        self._pending: deque = deque()
        self._batch: list[tuple[str, list, bool, str]] = []
        self._batch_bytes = 0

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._threads.close()  # cancels what has not started, waits for the rest

    def _path(self, name: str) -> str:
        path = self._prefix + name
        # A str of N characters encodes to at most 4N bytes: most paths need no encoding.
        if len(path) * 4 >= PATH_MAX and len(os.fsencode(path)) >= PATH_MAX:
            raise Refused(f"member {shown(name)} makes a path longer than {PATH_MAX} bytes")
        return path

    def _dir(self, name: str) -> None:
        if name and name not in self._made:
            with _disk(name):
                os.makedirs(self._path(name), exist_ok=True)
            self._made.add(name)

    def mkdir(self, name: str) -> None:
        self._dir(name)

    def file(self, member: Member, data: Iterator[memoryview | bytes]) -> None:
        """Write MEMBER from DATA; stop at one byte past its declared size."""
        interrupts.check()
        path = self._path(member.name)
        self._dir(member.name.rpartition("/")[0])
        executable = bool(member.mode & 0o100)
        if member.size <= SMALL_MEMBER:
            pieces, size = self._gathered(member, data)  # every check passes first
            self._hand_over(path, pieces, size, executable, member.name)
        else:
            _write_member(path, self._counted(member, data), executable, member.name)
        self.files += 1

    def _counted(
        self, member: Member, data: Iterator[memoryview | bytes]
    ) -> Iterator[memoryview | bytes]:
        """DATA, with its size held to what MEMBER declares and to the free disk."""
        size = 0
        for piece in data:
            size += len(piece)
            if size > member.size:
                _too_large(member)
            if self.budget is not None and self.written + len(piece) > self.budget:
                # What the disk would say a little later, said before filling it.
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(piece)
            self._writeback.wrote(len(piece))
            yield piece
        if size != member.size:
            _wrong_size(member, size)

    def _gathered(self, member: Member, data: Iterator[memoryview | bytes]) -> tuple[list, int]:
        """The pieces of a small MEMBER and their size, held to the same limits as
        `_counted` (one loop, not a generator: it runs once per member)."""
        pieces = []
        size = 0
        for piece in data:
            size += len(piece)
            if size > member.size:
                _too_large(member)
            if self.budget is not None and self.written + size > self.budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            pieces.append(piece)
        if size != member.size:
            _wrong_size(member, size)
        self.written += size
        self._writeback.wrote(size)
        return pieces, size

    def _hand_over(self, path: str, pieces: list, size: int, executable: bool, name: str) -> None:
        self._batch.append((path, pieces, executable, name))
        self._batch_bytes += size
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self._send_batch()

    def _send_batch(self) -> None:
        if not self._batch:
            return
        if self._pool is None:
            self._pool = self._threads.enter_context(
                interrupts.pool(WRITE_THREADS, "colabmagic-write")
            )
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._pending.append(self._pool.submit(_write_batch, batch))
        if len(self._pending) >= MAX_PENDING:
            interrupts.result(self._pending.popleft())  # a write's error surfaces here

    def drain(self) -> None:
        """Write what is still batched, wait for every handed-over write; raise the
        first error among them."""
        self._send_batch()
        while self._pending:
            interrupts.result(self._pending.popleft())

    def link(self, member: Member) -> None:
        self._links.append(member)

    def symlinks(self) -> list[tuple[str, str]]:
        """(name, target) of every symbolic link member, for the check against DIR."""
        return [(m.name, m.target or "") for m in self._links if m.kind == "symlink"]

    def finish(self) -> None:
        """Create the links, then prove on disk that each one resolves inside TOP."""
        self.drain()
        top = os.path.realpath(self.top)
        for member in self._links:
            path = self._path(member.name)
            self._dir(member.name.rpartition("/")[0])
            with _disk(member.name):
                if member.kind == "hardlink":
                    os.link(self.top / member.target, path, follow_symlinks=False)
                else:
                    os.symlink(member.target, path)
            self.files += 1
        for member in self._links:
            if member.kind == "symlink":
                real = os.path.realpath(self.top / member.name)
                if real != top and not real.startswith(top + os.sep):
                    raise Refused(
                        f"member {shown(member.name)} links to {shown(member.target)}, "
                        "which resolves outside the target folder"
                    )


def _write_batch(batch: list[tuple[str, list, bool, str]]) -> None:
    for path, pieces, executable, name in batch:
        _write_member(path, pieces, executable, name)


def _write_member(
    path: str, pieces: Iterable[memoryview | bytes], executable: bool, name: str
) -> None:
    try:  # not `with _disk`: a Ctrl-C as it exits would strand the open file
        out = create_file(path, executable=executable)
    except OSError as error:
        _disk_error(name, error)
    with out:
        for piece in pieces:  # (an error of the source, read through PIECES, stays its own)
            try:  # not `with _disk`: a context manager per piece costs more than the write
                write_all(out, piece)
            except OSError as error:
                _disk_error(name, error)


def _too_large(member: Member) -> NoReturn:
    raise Refused(
        f"member {shown(member.name)} is larger than the {member.size:,} bytes it declares"
    )


def _wrong_size(member: Member, size: int) -> NoReturn:
    raise Refused(
        f"member {shown(member.name)} has {size:,} bytes, not the "
        f"{member.size:,} it declares (truncated or corrupt)"
    )


@contextmanager
def _disk(name: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        _disk_error(name, error)


def _disk_error(name: str, error: OSError) -> NoReturn:
    """A local-disk error as one line that names the member.  A full disk is left
    as it is: the caller says so for the whole stage."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise error
    raise ColabMagicError(f"cannot write member {shown(name)}: {error.strerror}") from None
