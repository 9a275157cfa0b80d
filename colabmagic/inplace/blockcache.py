"""A local block cache of an archive on Drive, shared by every process that reads it.

The archive is cut into aligned blocks (`BLOCK`, 4 MiB); each block read from Drive is
written at its own offset in one sparse local file, and marked present in a map file
(two bytes per block: present, generation) only after its bytes are written, so a
reader never sees a present block without its data.  Processes (a DataLoader's
workers) share the two files through ``mmap`` and coordinate with ``fcntl`` record
locks on the block's map bytes: a fetcher holds them while it reads the block from
Drive, so one block is fetched once however many workers want it.  A cached block is
read without a lock or a system call besides the ``pread``: the reader checks that
the block was present, with the same generation, before and after it read; an
eviction (a random unlocked block, once the cache reaches its bound `limit`) bumps
the generation and clears the mark before it punches the block out of the file.

Reads from Drive go through `SourceFile`, so a drop-out is retried by the shared
policy and a changed archive is refused.  Read-ahead: when the whole archive fits
the cache, the first miss starts one thread per process that fills the missing
blocks in file order, so that a random-order first epoch still reads Drive front to
back in large reads; otherwise, a miss that follows the previous one starts the next
`AHEAD` blocks in that thread.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import random
import threading
import time
from pathlib import Path

from ..source import SourceFile

log = logging.getLogger(__name__)

BLOCK = 4 << 20
AHEAD = 2  # blocks read ahead of a sequential reader when the archive does not fit
FILLERS = 2  # read-ahead threads per process


_forks = 0  # bumped in a forked child: what this process set up is not its own


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def forks() -> int:
    """How many forks lie between this process and the one that imported this module
    (a cheap test of "am I still the process that opened this?")."""
    return _forks


def default_limit(cache_dir: Path, size: int) -> int:
    """The cache bound when none is given: the whole archive, if it fits in half of
    the free space where the cache lives, else that half."""
    from ..fsio import free_bytes

    free = free_bytes(cache_dir)
    return size if free is None else max(BLOCK, min(size, free // 2))


class BlockCache:
    """PREAD(offset, n) of SOURCE, served from local blocks, fetched once from Drive."""

    def __init__(
        self,
        source: Path,
        cache_dir: Path,
        *,
        limit: int | None = None,
        block: int | None = None,
        retries: int | None = None,
    ) -> None:
        self.path = source
        self.retries = retries
        self._reader = SourceFile(source, retries=retries)  # the version seen now
        self.size = self._reader.size
        self.block = block = block or BLOCK
        self.blocks = max(1, -(-self.size // block))
        self.folder = cache_dir / "blocks"
        self.folder.mkdir(parents=True, exist_ok=True)
        st = os.stat(source)
        digest = hashlib.sha256(os.fsencode(os.path.abspath(source))).hexdigest()[:24]
        self.stem = f"{digest}-{st.st_size}-{st.st_mtime_ns}-{block}"
        self.limit = default_limit(self.folder, self.size) if limit is None else limit
        # The whole archive, if the bound allows it; else whole blocks under the bound.
        self.limit_blocks = self.blocks if self.limit >= self.size else max(1, self.limit // block)
        self._forget_older(digest)
        self._fork = -1
        self._setup()

    # ------------------------------------------------------------------ per process

    def _setup(self) -> None:
        """Descriptors, locks and threads of this process (again after a fork)."""
        self._fork = _forks
        data = self.folder / f"{self.stem}.data"
        marks = self.folder / f"{self.stem}.map"
        self._data = os.open(data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._map = os.open(marks, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self._data).st_size != self.size:
            os.ftruncate(self._data, self.size)  # sparse: blocks take space once written
        if os.fstat(self._map).st_size != 2 * self.blocks:
            os.ftruncate(self._map, 2 * self.blocks)
        self._marks = mmap.mmap(self._map, 2 * self.blocks)
        self._guard = threading.Lock()
        self._room = threading.Lock()
        self._locks: dict[int, threading.Lock] = {}
        self._local = threading.local()
        self._wake = threading.Condition(self._guard)
        self._fillers: list[threading.Thread] = []
        self._running = 0  # read-ahead threads at work
        self._wanted: collections.deque[int] = collections.deque()
        self._fill_all = self.blocks <= self.limit_blocks
        self._last_miss = -2
        self._waiting = 0  # readers of this process fetching a block themselves
        self._stop = False
        self.fetched = 0  # blocks this process read from Drive

    def _check_pid(self) -> None:
        if self._fork != _forks:
            # A forked child: the parent's locks and threads are not ours.  Its
            # descriptors are, but POSIX record locks belong to a process: open anew.
            with contextlib.suppress(OSError, ValueError):
                self._marks.close()
            self._setup()

    def _forget_older(self, digest: str) -> None:
        with contextlib.suppress(OSError):
            for old in self.folder.iterdir():
                if old.name.startswith(digest + "-") and not old.name.startswith(self.stem + "."):
                    old.unlink(missing_ok=True)

    def _source(self) -> SourceFile:
        # One descriptor per thread: a retry closes and re-opens its own only.
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = self._reader.twin()
        return reader

    def _lock(self, b: int) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(b)
            if lock is None:
                lock = self._locks[b] = threading.Lock()
            return lock

    # ------------------------------------------------------------------ reading

    def pread(self, offset: int, n: int) -> bytes:
        if self._fork != _forks:
            self._check_pid()
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        first, last = offset // self.block, (end - 1) // self.block
        if first == last:
            return self._read(first, offset, end)
        pieces = []
        for b in range(first, last + 1):
            lo = max(offset, b * self.block)
            hi = min(end, (b + 1) * self.block)
            pieces.append(self._read(b, lo, hi))
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _read(self, b: int, lo: int, hi: int) -> bytes:
        marks = self._marks
        present, generation = marks[2 * b], marks[2 * b + 1]
        if present:
            data = os.pread(self._data, hi - lo, lo)
            if marks[2 * b] and marks[2 * b + 1] == generation:
                return data  # not evicted while it was read
        with self._lock(b):
            _wait_lock(self._map, 2, 2 * b)
            try:
                if marks[2 * b]:  # another thread or process fetched it meanwhile
                    return os.pread(self._data, hi - lo, lo)
                with self._guard:
                    self._waiting += 1  # the read-ahead holds back: a reader waits
                try:
                    data = self._fetch(b)
                finally:
                    with self._guard:
                        self._waiting -= 1
                        self._wake.notify_all()
            finally:
                fcntl.lockf(self._map, fcntl.LOCK_UN, 2, 2 * b)
        self._after_miss(b)
        start = b * self.block
        return data[lo - start : hi - start]

    def _fetch(self, b: int) -> bytes:
        """Read block B from Drive and keep it (the caller holds its locks)."""
        start = b * self.block
        want = min(self.block, self.size - start)
        data = self._source().pread(start, want)
        if len(data) != want:
            raise OSError(errno.EIO, f'"{self.path}" is shorter than when it was opened')
        # Counting the cached blocks, evicting and storing are one step for all
        # threads and processes (the lock on the map byte past the last block), or
        # two of them could each take the last free place.
        with self._room:
            _wait_lock(self._map, 1, 2 * self.blocks)
            try:
                if self._make_room(b) and os.pwrite(self._data, data, start) == want:
                    self._marks[2 * b] = 1  # data first, then the mark (MAP_SHARED)
            finally:
                fcntl.lockf(self._map, fcntl.LOCK_UN, 1, 2 * self.blocks)
        self.fetched += 1
        return data

    def _make_room(self, keep: int) -> bool:
        """Whether block KEEP may be stored, evicting others to stay under the limit."""
        present = self._marks[0::2]
        over = present.count(1) - self.limit_blocks + 1
        if over <= 0:
            return True
        cached = [i for i, m in enumerate(present) if m and i != keep]
        random.shuffle(cached)
        for victim in cached:
            if over <= 0:
                break
            if self._evict(victim):
                over -= 1
        return over <= 0

    def _evict(self, b: int) -> bool:
        lock = self._lock(b)
        if not lock.acquire(blocking=False):
            return False
        try:
            try:
                fcntl.lockf(self._map, fcntl.LOCK_EX | fcntl.LOCK_NB, 2, 2 * b)
            except OSError:
                return False  # being fetched in another process
            try:
                if not self._marks[2 * b]:
                    return False
                # The generation, then the mark, then the bytes: a reader that read
                # them meanwhile sees the change and reads again.
                self._marks[2 * b + 1] = (self._marks[2 * b + 1] + 1) & 0xFF
                self._marks[2 * b] = 0
                # Without hole punching (an old kernel) the space is not freed.
                return _punch(self._data, b * self.block, self.block)
            finally:
                fcntl.lockf(self._map, fcntl.LOCK_UN, 2, 2 * b)
        finally:
            lock.release()

    # ------------------------------------------------------------------ read-ahead

    def _after_miss(self, b: int) -> None:
        sequential = b == self._last_miss + 1
        self._last_miss = b
        if not (self._fill_all or sequential):
            return
        with self._guard:
            if self._fill_all:
                if self._running and self._wanted:
                    return  # the fill goes on front to back; this block was a detour
                wanted = [*range(b + 1, self.blocks), *range(0, b)]
            else:
                wanted = range(b + 1, min(self.blocks, b + 1 + AHEAD))
            self._wanted = collections.deque(i for i in wanted if not self._marks[2 * i])
            while self._running < FILLERS and self._running < len(self._wanted):
                # Two, so that one thread's write to local disk overlaps the other's
                # read from Drive, and Drive always has a block in flight.
                thread = threading.Thread(target=self._fill, name="colabmagic-readahead")
                thread.daemon = True
                self._running += 1
                self._fillers.append(thread)
                thread.start()
            self._wake.notify_all()

    def _fill(self) -> None:
        try:
            while True:
                with self._guard:
                    while self._waiting and not self._stop:
                        # Drive's bandwidth goes to a reader's miss first: the
                        # read-ahead starts no block while one is being fetched.
                        self._wake.wait(timeout=1)
                    if self._stop or not self._wanted:
                        self._running -= 1  # under the guard: a later miss starts another
                        return
                    b = self._wanted.popleft()
                if not self._marks[2 * b]:
                    self._prefetch(b)
        except Exception as error:  # the reader meets the same error and reports it
            log.debug("read-ahead of %s stopped: %s", self.path, error)
            with self._guard:
                self._running -= 1
        finally:
            reader = getattr(self._local, "reader", None)
            if reader is not None:
                reader.close()

    def wait_readahead(self) -> None:
        """Wait until the read-ahead threads of this process have nothing left to do."""
        for thread in list(self._fillers):
            thread.join()

    def _prefetch(self, b: int) -> None:
        lock = self._lock(b)
        if not lock.acquire(blocking=False):
            return  # a reader of this process is fetching it
        try:
            try:
                fcntl.lockf(self._map, fcntl.LOCK_EX | fcntl.LOCK_NB, 2, 2 * b)
            except OSError:
                return  # another process is fetching it
            try:
                if not self._marks[2 * b]:
                    self._fetch(b)
            finally:
                fcntl.lockf(self._map, fcntl.LOCK_UN, 2, 2 * b)
        finally:
            lock.release()

    def cached_blocks(self) -> int:
        self._check_pid()
        return self._marks[0::2].count(1)

    def close(self) -> None:
        if self._fork != _forks:
            return
        with self._guard:
            self._stop = True
            self._wake.notify_all()
        self.wait_readahead()
        self._reader.close()
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            reader.close()
        with contextlib.suppress(OSError, ValueError, BufferError):
            self._marks.close()
        for fd in (self._data, self._map):
            with contextlib.suppress(OSError):
                os.close(fd)


_FALLOC_FL_KEEP_SIZE = 1
_FALLOC_FL_PUNCH_HOLE = 2
_fallocate = None


def _wait_lock(fd: int, length: int, start: int) -> None:
    """Take the record lock on LENGTH bytes at START, waiting for it.

    The kernel's deadlock check sees a process, not its threads: while one thread of
    process A holds a block and waits for the room lock, and a thread of process B
    that holds the room lock is about to release it, a second thread of B waiting for
    A's block makes a cycle on paper, and the wait fails with EDEADLK.  It is not a
    real deadlock (B's first thread goes on), so wait a moment and ask again.
    """
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, length, start)
            return
        except OSError as error:
            if error.errno != errno.EDEADLK:
                raise
            time.sleep(0.001)


def _punch(fd: int, offset: int, length: int) -> bool:
    """Free LENGTH bytes at OFFSET of FD (they read as zeros); False where unsupported."""
    global _fallocate
    if _fallocate is None:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            func = libc.fallocate
            func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            _fallocate = func
        except (OSError, AttributeError):
            _fallocate = False
    if not _fallocate:
        return False
    return _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0
