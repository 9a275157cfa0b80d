"""Reading one file from Drive: large sequential reads, re-opened on EIO/ENOTCONN.

DriveFS serves a sequential reader at its full bandwidth, and drops with EIO or
ENOTCONN on long reads (colabtools #3441).  `SourceFile` re-opens and resumes at the
same offset a few times with back-off before it gives up with one clear line.
`Prefetch` runs a chunk iterator in a thread so that reading from Drive overlaps
with unpacking in the caller.
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

from . import interrupts
from .errors import ColabMagicError

CHUNK = 1 << 20  # 1 MiB per read(): few syscalls, and the kernel fans it out to FUSE
RETRYABLE = frozenset({errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT, errno.ESTALE})
BACKOFF_FIRST = 0.25  # seconds; doubles each retry, capped at BACKOFF_MAX
BACKOFF_MAX = 5.0


def backoff(attempt: int) -> float:
    return min(BACKOFF_FIRST * 2**attempt, BACKOFF_MAX)


class SourceFile:
    """A file read front to back (or by offset), surviving a few Drive drop-outs."""

    def __init__(self, path: Path, *, retries: int = 5) -> None:
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
            # raw descriptor and leave it open (see archives.create_file).
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
        attempt = 0
        while True:
            try:
                return read(self._open())
            except OSError as error:
                if error.errno not in RETRYABLE:
                    raise
                self.close()
                if attempt >= self.retries:
                    name = errno.errorcode.get(error.errno, str(error.errno))
                    raise ColabMagicError(
                        f'reading "{self.path}" failed at byte {offset:,} with {name} '
                        f"after {self.retries} retries: Drive dropped the connection; "
                        "run it again (it resumes cleanly) or %drive --remount"
                    ) from None
                interrupts.sleep(backoff(attempt))
                attempt += 1

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
