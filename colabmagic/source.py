"""Reading Drive: the one retry policy, and large sequential reads that survive it.

DriveFS serves a sequential reader at its full bandwidth, and drops with EIO or
ENOTCONN on long reads (colabtools #3441).  Every read and write of Drive that can
meet a drop-out goes through `retrying`: the same errnos, the same back-off, the
same count (the ``ColabMagic.retries`` trait, or a command's ``retries=``), and a
back-off that Ctrl-C interrupts.  `SourceFile` re-opens and resumes at the same
offset; `Prefetch` runs a chunk iterator in a thread so that reading from Drive
overlaps with unpacking in the caller.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from . import interrupts
from .errors import ColabMagicError
from .fsio import CHUNK

T = TypeVar("T")

# The errnos a Drive drop-out shows as; anything else is a real error, raised at once.
TRANSIENT = frozenset({errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT, errno.ESTALE})
RETRIES = 5  # default count; ColabMagic.retries changes it through set_retries()
BACKOFF_FIRST = 0.25  # seconds; doubles each retry, capped at BACKOFF_MAX
BACKOFF_MAX = 5.0
WORKERS = 16  # Drive reads in flight by default, for every command
MAX_WORKERS = 256

_retries = RETRIES


def set_retries(count: int) -> None:
    """Make COUNT the retry count of every command that is not given its own."""
    global _retries
    if count < 0:
        raise ValueError("retries must be 0 or more")
    _retries = count


def retries(count: int | None = None) -> int:
    """COUNT, or the count in force when COUNT is None."""
    return _retries if count is None else count


def workers(count: int | None = None) -> int:
    """COUNT reads in flight (None: WORKERS), checked for every command and twin."""
    if count is None:
        return WORKERS
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_WORKERS:
        raise ColabMagicError(f"--workers must be 1 or more, at most {MAX_WORKERS}; not {count!r}")
    return count


def backoff(attempt: int) -> float:
    return min(BACKOFF_FIRST * 2**attempt, BACKOFF_MAX)


class DriveDropped(ColabMagicError):
    """A Drive operation still failed with a drop-out errno after every retry."""

    def __init__(self, message: str, *, error: OSError) -> None:
        super().__init__(message)
        self.errno = error.errno


def errno_name(error: OSError) -> str:
    return errno.errorcode.get(error.errno, str(error.errno)) if error.errno else "error"


def retrying(
    action: Callable[[], T],
    *,
    what: str,
    count: int | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """ACTION(), tried again after a back-off while it fails with a drop-out errno.

    ON_RETRY runs before each new try (close a descriptor, truncate a partial copy).
    After COUNT retries (default: the count in force) a `DriveDropped` says WHAT
    failed, with which errno, and what to do.  Other errors propagate unchanged.
    """
    count = retries(count)
    attempt = 0
    while True:
        try:
            return action()
        except OSError as error:
            if error.errno not in TRANSIENT:
                raise
            if on_retry is not None:
                on_retry()
            if attempt >= count:
                raise DriveDropped(
                    f"{what} failed with {errno_name(error)} after {count} retries: "
                    "Drive dropped the connection; run it again (it starts over) "
                    "or %drive --remount",
                    error=error,
                ) from None
            interrupts.sleep(backoff(attempt))
            attempt += 1


class SourceFile:
    """A file read front to back (or by offset), surviving a few Drive drop-outs."""

    def __init__(self, path: Path, *, retries: int | None = None) -> None:
        self.path = path
        self.retries = retries
        st = os.stat(path)
        self.size = st.st_size
        self._version = (st.st_size, st.st_mtime_ns)
        self._file: io.FileIO | None = None

    def twin(self) -> SourceFile:
        """Another reader of the same file, with its own descriptor, that refuses the
        file just as this one does if it changes from the version this one saw."""
        other = copy.copy(self)
        other._file = None
        return other

    def _open(self) -> int:
        if self._file is None:
            # A file object, not os.open(): a Ctrl-C as the call returns would drop a
            # raw descriptor and leave it open (see fsio.create_file).
            file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept until close()
            try:
                st = os.fstat(file.fileno())
                if (st.st_size, st.st_mtime_ns) != self._version:
                    # Resuming would splice two versions of the file together.
                    raise ColabMagicError(
                        f'"{self.path}" changed while it was being read; run it again'
                    )
            except BaseException:
                file.close()
                raise
            self._file = file
        return self._file.fileno()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()

    def _retrying(self, offset: int, read: Callable[[int], bytes]) -> bytes:
        return retrying(
            lambda: read(self._open()),
            what=f'reading "{self.path}" at byte {offset:,}',
            count=self.retries,
            on_retry=self.close,
        )

    def pread(self, offset: int, size: int) -> bytes:
        return self._retrying(offset, lambda fd: os.pread(fd, size, offset))

    def chunks(self, start: int = 0, chunk: int = CHUNK) -> Iterator[bytes]:
        """The bytes from START to the end, in reads of CHUNK, resuming after drop-outs."""
        offset = start
        while True:
            data = self._retrying(offset, lambda fd, at=offset: os.pread(fd, chunk, at))
            if not data:
                return
            offset += len(data)
            yield data


class _Done:
    pass


_DONE = _Done()


class Prefetch:
    """Iterate ITEMS in a background thread, at most DEPTH items ahead of the caller.

    The thread starts at once, so reading overlaps with whatever the caller does
    before its first `next()` (reading a zip's index, say).  Exceptions in the thread
    surface in the caller; `close()` (also as a context manager, or via
    `contextlib.closing`) stops the thread and waits for it, however far it got.
    """

    def __init__(self, items: Iterable[bytes], depth: int = 16) -> None:
        import queue

        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._items = items
        self._finished = False
        self._thread = threading.Thread(target=self._work, name="colabmagic-read", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the caller, who re-raises it
            self._put(error)
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> bytes:
        import queue

        while not self._finished:
            try:
                item = self._queue.get(timeout=interrupts.POLL)
            except queue.Empty:
                interrupts.check()
                continue
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            return item
        self._finished = True
        raise StopIteration

    def close(self) -> None:
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
