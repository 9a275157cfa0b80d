"""Reading one large file with several ranged streams, handed on in order.

One Drive stream may be slower than the link (a `cp` from the mount at ~65 MB/s where
a download reached 130 MB/s; rclone's multi-thread streams and gcsfuse's parallel
downloads use the same effect).  `Ranged` reads a file as SEGMENT-sized pieces, each
claimed by the next free one of N reader threads, every reader with its own
descriptor (`SourceFile.twin`) and so its own stream, and yields the bytes front to
back, in CHUNK-sized reads, to the one sequential unpacker.  Memory stays bounded:
a reader claims a segment only while fewer than N + 2 are claimed and not yet handed
on whole (`peak` counts the most there ever were).

Each read goes through `SourceFile.pread`, so every reader follows the one retry
policy and resumes at its own offset; the first reader that fails for good stops
the others, and its error is raised in the consumer.  `stop()` (Ctrl-C, or any
error on the consumer's side) ends every reader at its next read, and `close()`
waits for them: no reader outlives the `with` block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from . import interrupts
from .errors import ColabMagicError
from .fsio import CHUNK
from .source import WORKERS, SourceFile

SEGMENT = 8 << 20  # bytes one reader claims at a time: 32 readings of a 256 MiB archive
THRESHOLD = 256 << 20  # from this size up, an archive on a FUSE mount gets DEFAULT streams
DEFAULT = 4  # ranged streams when the size and the mount say so (see `chosen`)
MAX_STREAMS = WORKERS  # no more streams than any command's default reads in flight
SPARE = 2  # segments a reader may run ahead of the consumer beyond one per stream
THREAD_NAME = "colabmagic-range"


def valid(count: int | None) -> int | None:
    """COUNT checked as --streams (None: chosen per source by `chosen`)."""
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_STREAMS:
        raise ColabMagicError(f"--streams must be 1 to {MAX_STREAMS}; not {count!r}")
    return count


def chosen(count: int | None, source: SourceFile) -> int:
    """How many streams read SOURCE: COUNT if given, else DEFAULT for a file of
    THRESHOLD bytes or more on a FUSE mount (Drive), else 1.

    No probe: on a cold Drive the first reads of each stream pay the open latency,
    so a probe of a few segments measures that more than the bandwidth, and where one
    stream already fills the link N streams share the same cap and cost nothing but
    N + 2 segments of memory.  On local disk one stream is as fast as the disk.
    """
    if count is not None:
        return count
    if source.size < THRESHOLD:
        return 1
    return DEFAULT if on_fuse(source.path) else 1


def on_fuse(path: Path) -> bool:
    from .status import mount_type

    kind = mount_type(path)
    return kind is not None and kind.startswith("fuse")


class _Stopped(Exception):
    """Raised in a reader (or the consumer) once `stop()` was called."""


class Ranged:
    """The bytes of SOURCE front to back, read by STREAMS ranged readers at once.

    Iterate it once (from any one thread); use it as a context manager, or call
    `close()`, to stop and join the readers however far they got.
    """

    def __init__(self, source: SourceFile, streams: int, *, segment: int | None = None) -> None:
        self.path = source.path
        self.size = source.size
        self.segment = segment or SEGMENT
        self.count = -(-self.size // self.segment)  # segments, the last maybe short
        self.streams = max(1, min(streams, self.count))
        self.window = self.streams + SPARE  # segments in memory at most
        self.peak = 0  # the most segments claimed and not yet handed on whole
        self._cond = threading.Condition()
        self._claimed = 0  # segments claimed by a reader so far (0 .. count)
        self._consumed = 0  # segments handed on whole
        self._slots: dict[int, list[bytes]] = {}  # read, waiting for the consumer
        self._error: BaseException | None = None  # the first reader's failure
        self._stopped = False
        self._threads: list[threading.Thread] = []
        try:
            for _ in range(self.streams):
                thread = threading.Thread(
                    target=self._work, args=(source.twin(),), name=THREAD_NAME, daemon=True
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ readers

    def _claim(self) -> int | None:
        """The next segment for a reader, once the window has room; None: no more."""
        with self._cond:
            while True:
                if self._stopped or self._claimed >= self.count:
                    return None
                if self._claimed - self._consumed < self.window:
                    index = self._claimed
                    self._claimed += 1
                    self.peak = max(self.peak, self._claimed - self._consumed)
                    return index
                self._cond.wait()

    def _work(self, reader: SourceFile) -> None:
        try:
            while (index := self._claim()) is not None:
                parts = self._read(reader, index)
                with self._cond:
                    if self._stopped:  # nobody will take it: let it go now
                        return
                    self._slots[index] = parts
                    self._cond.notify_all()
        except _Stopped:
            pass
        except BaseException as error:  # handed to the consumer, who raises it
            with self._cond:
                if self._error is None:
                    self._error = error
                self._stopped = True  # the other readers stop at their next read
                self._cond.notify_all()
        finally:
            reader.close()

    def _read(self, reader: SourceFile, index: int) -> list[bytes]:
        start = index * self.segment
        end = min(start + self.segment, self.size)
        parts: list[bytes] = []
        offset = start
        while offset < end:
            if self._stopped:
                raise _Stopped
            data = reader.pread(offset, min(CHUNK, end - offset))
            if not data:
                # Shorter than it was when the stage began: resuming would splice two
                # versions of the file, as SourceFile refuses to.
                raise ColabMagicError(
                    f'"{self.path}" changed while it was being read (it ends at byte '
                    f"{offset:,}, not {self.size:,}); run it again"
                )
            parts.append(data)
            offset += len(data)
        return parts

    # ------------------------------------------------------------------ consumer

    def _take(self, index: int) -> list[bytes]:
        while True:
            with self._cond:
                if self._error is not None:
                    raise self._error
                if self._stopped:
                    raise _Stopped("the read was stopped")
                parts = self._slots.pop(index, None)
                if parts is None:
                    self._cond.wait(interrupts.POLL)
            if parts is not None:
                return parts
            interrupts.check()  # a held Ctrl-C, when the consumer is the main thread

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.count):
            parts = self._take(index)
            parts.reverse()
            while parts:
                yield parts.pop()  # the consumer's hold on each read ends with it
            with self._cond:
                self._consumed += 1
                self._cond.notify_all()

    # ------------------------------------------------------------------ shutdown

    def stop(self) -> None:
        """Make every reader stop at its next read, and the consumer at its next wait."""
        with self._cond:
            self._stopped = True
            self._slots.clear()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the readers and wait for them (a read under way finishes first)."""
        self.stop()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> Ranged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
