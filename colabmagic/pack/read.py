"""Reading the folder to pack: the listing, and the reads kept in flight.

On Drive every listing, stat and cold open is a round trip, so all three run on a
pool of threads; the writer takes the files in sorted order from `Reader`, which
keeps many reads ahead of it and bounds the bytes held.  Every read goes through the
one Drive retry policy (`source.retrying`, `source.SourceFile`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import interrupts, source
from ..errors import ColabMagicError
from ..unpack.members import Member, Plan, Refused, clean_name, shown

# Files up to this size are read whole by a worker thread; larger ones are opened by a
# worker (so that the cold open still overlaps) and streamed by the writer in reads of
# READ_CHUNK: Drive serves a sequential reader best in large reads.
SMALL_FILE = 8 << 20
READ_CHUNK = 8 << 20
# At most this many bytes are read ahead of the writer, whatever the folder holds.
WINDOW_BYTES = 256 << 20


class StepFailed(Exception):
    """A step of the pack failed; the message starts with the step's name."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step} failed: {detail}")


@dataclass(frozen=True)
class Entry:
    arcname: str  # "train/a/1.jpg"; an empty folder ends with "/"
    path: Path
    size: int
    mtime_ns: int
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.arcname.endswith("/")


@dataclass
class Loaded:
    """A file as a worker read it: whole (``data``), or opened (``file`` + ``head``)."""

    data: bytes | None
    file: source.SourceFile | None
    head: bytes
    crc: int | None
    deflate: bool


def scan(
    folder: Path, workers: int, retries: int | None = None, *, fmt: str = "zip"
) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Every file and empty folder under FOLDER, sorted by member name, and the
    entries left out, each with why: sockets, FIFOs, broken links, links to folders,
    and names that %stage would refuse (a folder with such a name is left out whole).

    Folders are listed, and their entries stat'ed, by a pool of threads: on Drive
    every listing is a round trip, and so is every stat (a serial stat of 10,000
    files costs ~1.1 s on the simulated Drive, ~0.25 s with 16 in flight).
    """
    import stat as stat_module

    why = refusal(folder.name + "/", is_dir=True, fmt=fmt)
    if why is not None:
        raise ColabMagicError(
            f"cannot pack {shown(folder.name)}: every member's name would start with it, "
            f"and {why}; rename the folder first"
        )

    def list_dir(folder: Path) -> list[tuple[str, str, bool]]:
        def listing() -> list[tuple[str, str, bool]]:
            with os.scandir(folder) as items:
                return [
                    (item.path, item.name, item.is_dir(follow_symlinks=False)) for item in items
                ]

        return source.retrying(listing, what=f'listing "{folder}"', count=retries)

    def stat_all(chunk: list[tuple[str, str]]) -> list[tuple[str, str, os.stat_result | None]]:
        out = []
        for path, name in chunk:
            try:
                # A link to a file packs the file.
                st = source.retrying(
                    lambda p=path: os.stat(p), what=f'looking up "{path}"', count=retries
                )
            except FileNotFoundError:
                st = None
            out.append((path, name, st))
        return out

    found: list[Entry] = []
    left_out: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    with interrupts.pool(min(workers, source.WORKERS), "colabmagic-scan") as pool:
        level = [(folder, folder.name)]
        while level:
            below = []
            listings = interrupts.results([pool.submit(list_dir, path) for path, _ in level])
            for (path, arc), items in zip(level, listings, strict=True):
                if not items and path != folder:
                    found.append(Entry(arc + "/", path, 0, 0, 0o40755))
                for item_path, name, is_dir in items:
                    if not is_dir:
                        others.append((item_path, f"{arc}/{name}"))
                    elif (why := refusal(f"{arc}/{name}/", is_dir=True, fmt=fmt)) is None:
                        below.append((Path(item_path), f"{arc}/{name}"))
                    else:  # not listed: nothing in it could be staged
                        left_out.append(
                            (f"{arc}/{name}/", f"a folder, left out with all it holds: {why}")
                        )
            level = below
        chunks = [others[i : i + 256] for i in range(0, len(others), 256)]
        for chunk in interrupts.results([pool.submit(stat_all, chunk) for chunk in chunks]):
            for path, name, st in chunk:
                if st is None:
                    left_out.append((name, "vanished, or a broken link"))
                elif stat_module.S_ISREG(st.st_mode):
                    found.append(Entry(name, Path(path), st.st_size, st.st_mtime_ns, st.st_mode))
                elif stat_module.S_ISDIR(st.st_mode):
                    left_out.append((name, "a link to a folder"))
                else:
                    left_out.append((name, "neither a file nor a folder"))
    found.sort(key=lambda e: e.arcname)
    entries = []
    plan = Plan()  # what %stage checks of the archive as a whole, checked here the same way
    for entry in found:
        why = refusal(entry.arcname, is_dir=entry.is_dir, fmt=fmt, plan=plan, size=entry.size)
        if why is None:
            entries.append(entry)
        else:
            left_out.append((entry.arcname, why))
    return entries, sorted(left_out)


def refusal(
    arcname: str, *, is_dir: bool, fmt: str, plan: Plan | None = None, size: int = 0
) -> str | None:
    """Why the archive cannot hold a member named ARCNAME so that %stage accepts it
    (given PLAN: with the members added to it so far), as "%stage refuses a name that
    has a backslash in its name"; None when it can.  The checks are %stage's own
    (`unpack.members`), not a copy."""
    if fmt == "zip":
        try:
            arcname.encode("utf-8")
        except UnicodeEncodeError:
            return "its name is not UTF-8, which a zip cannot hold; --format tar keeps it"
    try:
        name = clean_name(arcname, is_dir=is_dir)
        if plan is not None and name is not None:
            plan.add(Member(name, "dir" if is_dir else "file", size))
    except Refused as error:
        why = str(error)
        for prefix in (f"member {shown(arcname)} ", f"member {shown(arcname.rstrip('/'))} "):
            why = why.removeprefix(prefix)
        return f"%stage refuses a name that {why}"
    return None


@contextmanager
def _reading(entry: Entry, retries: int | None) -> Iterator[None]:
    """Failures of reading ENTRY as one "reading failed: NAME: why" step."""
    try:
        yield
    except source.DriveDropped as dropped:
        raise StepFailed("reading", f"{entry.arcname}: {gave_up(dropped, retries)}") from None
    except (OSError, ColabMagicError) as error:  # gone, unreadable, changed while read
        raise StepFailed("reading", f"{entry.arcname}: {error}") from None


def gave_up(dropped: source.DriveDropped, retries: int | None) -> str:
    """What to say when Drive still drops after every retry the policy allows."""
    tries = source.retries(retries) + 1
    why = os.strerror(dropped.errno) if dropped.errno else str(dropped)
    return (
        f"{why} (after {tries} {'try' if tries == 1 else 'tries'}): Drive dropped the "
        "connection; run it again (it starts over) or %drive --remount"
    )


def _whole(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def load(entry: Entry, deflate: Callable[[str, bytes], bool], retries: int | None) -> Loaded:
    """In a worker: read a small file whole, or open a large one and read its first
    chunk.  DEFLATE(name, first bytes) says whether the writer compresses it."""
    with _reading(entry, retries):
        if entry.size <= SMALL_FILE:
            data = source.retrying(
                lambda: _whole(entry.path), what=f'reading "{entry.path}"', count=retries
            )
            check_size(entry, len(data))
            return Loaded(data, None, b"", zlib.crc32(data), deflate(entry.arcname, data))
        file = source.retrying(
            lambda: source.SourceFile(entry.path, retries=retries),
            what=f'opening "{entry.path}"',
            count=retries,
        )
        try:
            head = file.pread(0, READ_CHUNK)  # the cold open, here in the worker
        except BaseException:
            file.close()
            raise
        return Loaded(None, file, head, None, deflate(entry.arcname, head))


def check_size(entry: Entry, read: int) -> None:
    if read != entry.size:
        raise StepFailed(
            "reading",
            f"{entry.arcname} changed while it was being packed "
            f"({entry.size:,} bytes when listed, {read:,} read); run %packdrive again",
        )


class Feed:
    """``read(n)`` over a large file a worker opened: exactly n bytes until the end,
    in READ_CHUNK reads from Drive (resumed after a drop-out), keeping the CRC;
    checks the size at the end."""

    def __init__(self, entry: Entry, loaded: Loaded, retries: int | None = None) -> None:
        assert loaded.file is not None
        self.entry = entry
        self.retries = retries
        self.file = loaded.file
        self.rest = loaded.file.chunks(start=len(loaded.head), chunk=READ_CHUNK)
        self.buffer = loaded.head
        self.offset = 0
        self.total = len(loaded.head)
        self.crc = zlib.crc32(loaded.head)

    def _refill(self) -> bool:
        with _reading(self.entry, self.retries):
            chunk = next(self.rest, b"")
        if not chunk:
            return False
        self.crc = zlib.crc32(chunk, self.crc)
        self.total += len(chunk)
        self.buffer = (
            self.buffer[self.offset :] + chunk if self.offset < len(self.buffer) else chunk
        )
        self.offset = 0
        return True

    def read(self, n: int) -> bytes:
        while len(self.buffer) - self.offset < n and self._refill():
            pass
        out = self.buffer[self.offset : self.offset + n]
        self.offset += len(out)
        return out

    def chunks(self) -> Iterator[bytes]:
        while True:
            if self.offset < len(self.buffer):
                out = self.buffer[self.offset :]
                self.offset = len(self.buffer)
                yield out
            if not self._refill():
                return

    def close(self) -> None:
        self.file.close()

    def finish(self) -> int:
        """Close the file, insist it had exactly the listed size, return its CRC."""
        try:
            while self._refill():
                pass
        finally:
            self.close()
        check_size(self.entry, self.total)
        return self.crc


class Reader:
    """Yields (entry, loaded) in ENTRIES order while up to WORKERS reads are in flight
    and at most WINDOW_BYTES are read ahead of the writer."""

    def __init__(
        self,
        entries: list[Entry],
        workers: int,
        *,
        deflate: Callable[[str, bytes], bool],
        retries: int | None = None,
    ) -> None:
        from collections import deque

        self.entries = entries
        self.deflate = deflate
        self.retries = retries
        self._stack = ExitStack()
        self.pool = self._stack.enter_context(interrupts.pool(workers, "colabmagic-pack"))
        self.max_ahead = workers * 4
        self.queue: deque = deque()
        self.next = 0
        self.ahead = 0

    def _fill(self) -> None:
        while self.next < len(self.entries) and (
            not self.queue or (len(self.queue) < self.max_ahead and self.ahead < WINDOW_BYTES)
        ):
            entry = self.entries[self.next]
            self.next += 1
            future = None
            if not entry.is_dir:
                self.ahead += min(entry.size, SMALL_FILE)
                future = self.pool.submit(load, entry, self.deflate, self.retries)
            self.queue.append((entry, future))

    def __iter__(self) -> Iterator[tuple[Entry, Loaded | None]]:
        self._fill()
        while self.queue:
            entry, future = self.queue[0]
            loaded = interrupts.result(future) if future is not None else None
            self.queue.popleft()
            if future is not None:
                self.ahead -= min(entry.size, SMALL_FILE)
            self._fill()
            yield entry, loaded

    def close(self) -> None:
        """Stop: cancel reads not started, wait for the others, close their files."""
        for _, future in self.queue:
            if future is not None:
                future.cancel()
        self._stack.close()
        for _, future in self.queue:
            if future is None or future.cancelled() or future.exception() is not None:
                continue
            if future.result().file is not None:
                future.result().file.close()
        self.queue.clear()
