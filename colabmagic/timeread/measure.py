"""Reading a sample of PATH's files, each once and cold, and timing every read.

How the sample is drawn, so that every figure comes from files read cold, once:

1. **Streaming** takes PATH's largest files (largest first, each at least 256 kB, up
   to 32 of them and 32 MB in all) and reads them front to back after a first small
   read, which carries the open and fetch latency and is left out of the rate.  It
   stops once 32 MB are read, or after 8 s with at least 8 MB.
2. **Latency and files/s** draw a seeded random sample of FILES from the other files
   (those up to 16 MB: larger ones are streaming's business).  Its first part is read
   one file at a time: per-file latency (open to last byte, p50/p95) and files/s with
   one reader.  The rest is read with WORKERS files in flight.  The two parts do not
   overlap, so neither finds files the other warmed.

   The serial part needs far fewer files than the parallel one: a median is stable at
   ten or twenty files, and a serial pass costs one latency per file (0.5 s on Colab,
   so 100 files would be 50 s).  It takes half the sample, at most 30 files, and stops
   after 15 s once it has 10 (after 30 s in any case).  The parallel part takes the
   rest (70 of the default 100), cheap because WORKERS latencies overlap, and stops
   taking new files after 10 s.
3. A few files of the serial part are read once more: if their first read was not
   clearly slower than that warm re-read (at most twice as long, plus 1 ms) for most
   of them, the sample was already in Drive's cache.  A minority says nothing: one
   re-read slowed by a busy machine looks just like a warm first read.
4. The serial and streaming files are copied to local disk (LOCAL, or a temporary
   folder on disk, never tmpfs), fsynced and evicted from the page cache with
   ``posix_fadvise(DONTNEED)``, then read the same two ways.

A file that cannot be read from Drive is counted and named in a warning, not retried:
a retry's back-off inside a timed read would be measured as Drive's latency.  Only the
copies to local disk, which time nothing on Drive's side, go through the retry policy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .. import fsio, interrupts, source
from ..errors import ColabMagicError

FIRST_CHUNK = 64 * 1024  # the first read of a streamed file: latency, not bandwidth
CHUNK = fsio.CHUNK
STREAM_MIN_FILE = 256 * 1024
STREAM_MIN_BYTES = 8_000_000  # DESIGN §3: "at least 8 MB read where PATH holds that much"
STREAM_MAX_BYTES = 32_000_000
STREAM_MAX_FILES = 32
STREAM_BUDGET = 8.0
RANGED_STREAMS = 4
RANGED_MIN_FILE = 8_000_000  # 4 quarters of at least 1 MB, and as much for one stream
RANGED_MAX_BYTES = 16_000_000
RANGED_BUDGET = 4.0  # each of the 4 stops reading after this long
SAMPLE_MAX_FILE = 16_000_000
SERIAL_MAX = 30
SERIAL_MIN = 10
SERIAL_BUDGET = 15.0
PARALLEL_BUDGET = 10.0
WARM_CHECKS = 8


@dataclass(frozen=True)
class Plan:
    """Which files each pass reads: disjoint, so every read is a first read."""

    stream: tuple[Path, ...]
    serial: tuple[Path, ...]
    parallel: tuple[Path, ...]
    # The bytes at the end of the largest file (stream[0]) that the 4 ranged streams
    # read, (offset, length); None when that file is too small to compare.
    ranged: tuple[int, int] | None = None


@dataclass(frozen=True)
class Read:
    """One file read front to back, with its clock readings."""

    path: Path
    nbytes: int
    seconds: float  # open to last byte
    total_s: float  # open to close: what the file cost the reader
    first_bytes: int
    first_s: float  # open to the end of the first read
    rest_s: float  # the reads after the first: streaming time


@dataclass(frozen=True)
class Ranged:
    """The largest file's end read by several streams at once, each its own open."""

    path: Path
    streams: int
    nbytes: int  # after each stream's first read
    seconds: float  # from the first stream's start to the last one's end


@dataclass
class Measured:
    """Every read of one measurement, by pass, and what went wrong."""

    stream: list[Read]
    serial: list[Read]
    serial_wall: float
    parallel: list[Read]
    inflight: int
    warm_checked: int
    warm_found: int
    local_serial: list[Read]
    local_serial_wall: float
    local_stream: list[Read]
    failed: list[tuple[Path, OSError]]
    ranged: Ranged | None = None


def plan_sample(entries: list[tuple[Path, int]], files: int, *, seed: int = 0) -> Plan:
    """The files each pass reads, from (path, size) ENTRIES; the same for the same seed."""
    import random

    by_size = sorted(entries, key=lambda e: (-e[1], str(e[0])))
    stream: list[Path] = []
    planned = 0
    for path, nbytes in by_size:
        if nbytes < STREAM_MIN_FILE or planned >= STREAM_MAX_BYTES:
            break
        if len(stream) >= STREAM_MAX_FILES:
            break
        stream.append(path)
        planned += nbytes
    ranged = None
    if stream:
        largest = by_size[0][1]
        if largest >= RANGED_MIN_FILE:
            length = min(largest // 2, RANGED_MAX_BYTES)
            ranged = (largest - length, length)
    taken = set(stream)
    pool = sorted(p for p, n in entries if p not in taken and n <= SAMPLE_MAX_FILE)
    chosen = random.Random(seed).sample(pool, min(files, len(pool)))
    serial_n = min(SERIAL_MAX, (len(chosen) + 1) // 2)
    return Plan(tuple(stream), tuple(chosen[:serial_n]), tuple(chosen[serial_n:]), ranged)


def measure(
    plan: Plan, workers: int, local_dir: Path, progress: Any, warnings: list[str]
) -> Measured:
    """Read PLAN's files from Drive pass by pass, then their copies on local disk."""
    failed: list[tuple[Path, OSError]] = []
    buf = bytearray(CHUNK)

    def read(path: Path, limit: int | None = None) -> Read | None:
        interrupts.check()
        try:
            r = read_file(path, buf, limit)
        except OSError as error:
            failed.append((path, error))
            return None
        progress.update(r.nbytes)
        return r

    # Streaming first: these files are excluded from the random sample anyway.
    stream: list[Read] = []
    streamed = 0
    t0 = time.perf_counter()
    for path in plan.stream:
        if streamed >= STREAM_MAX_BYTES:
            break
        if streamed >= STREAM_MIN_BYTES and time.perf_counter() - t0 > STREAM_BUDGET:
            break
        limit = STREAM_MAX_BYTES - streamed
        if plan.ranged is not None and path == plan.stream[0]:
            limit = min(limit, plan.ranged[0])  # the end is for the ranged streams
        r = read(path, limit)
        if r is not None:
            stream.append(r)
            streamed += r.nbytes
    ranged = None
    if plan.ranged is not None and stream and stream[0].path == plan.stream[0]:
        try:
            ranged = read_ranged(plan.stream[0], *plan.ranged, progress)
        except OSError as error:
            # Not a file left out of the figures: only the comparison is.
            warnings.append(
                f"{RANGED_STREAMS} ranged streams not measured: reading "
                f"{plan.stream[0].name} failed ({error.strerror or error})"
            )
    progress.set_postfix(files=len(stream), refresh=False)

    serial: list[Read] = []
    t0 = time.perf_counter()
    for path in plan.serial:
        elapsed = time.perf_counter() - t0
        if elapsed > 2 * SERIAL_BUDGET or len(serial) >= SERIAL_MIN and elapsed > SERIAL_BUDGET:
            break
        r = read(path)
        if r is not None:
            serial.append(r)
    serial_wall = time.perf_counter() - t0
    progress.set_postfix(files=len(stream) + len(serial), refresh=False)

    parallel, inflight, parallel_failed = read_parallel(plan.parallel, workers, progress)
    failed += parallel_failed
    progress.set_postfix(files=len(stream) + len(serial) + len(parallel), refresh=False)

    # Warm re-reads of files the serial pass has just read: the reference for "warm".
    warm_found = 0
    checks = serial[:WARM_CHECKS]
    for first in checks:
        again = read(first.path)
        if again is not None and first.seconds <= 2 * again.seconds + 0.001:
            warm_found += 1

    local_serial: list[Read] = []
    local_stream: list[Read] = []
    local_wall = 0.0
    try:
        local_serial, local_wall, local_stream = measure_local(serial, stream, local_dir, buf)
    except OSError as error:
        warnings.append(f"local disk not measured: {error.strerror or error} ({local_dir})")
    except source.DriveDropped as error:
        warnings.append(f"local disk not measured: {error}")
    if failed:
        path, error = failed[0]
        files = "1 file" if len(failed) == 1 else f"{len(failed):,} files"
        warnings.append(
            f"{files} could not be read from Drive (left out of the figures), e.g. "
            f"{path.name}: {error.strerror or error}"
        )
    return Measured(
        stream=stream,
        serial=serial,
        serial_wall=serial_wall,
        parallel=parallel,
        inflight=inflight,
        warm_checked=len(checks),
        warm_found=warm_found,
        local_serial=local_serial,
        local_serial_wall=local_wall,
        local_stream=local_stream,
        failed=failed,
        ranged=ranged,
    )


def read_file(path: Path, buf: bytearray, limit: int | None = None) -> Read:
    """Read PATH front to back (at most LIMIT bytes), timing the open and first read
    apart from the rest."""
    view = memoryview(buf)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        first = f.readinto(view[: min(FIRST_CHUNK, limit or FIRST_CHUNK)]) or 0
        first_done = time.perf_counter()
        total = first
        while first and (limit is None or total < limit):
            n = f.readinto(view if limit is None else view[: min(CHUNK, limit - total)])
            if not n:
                break
            total += n
        done = time.perf_counter()
    closed = time.perf_counter()
    return Read(
        path=path,
        nbytes=total,
        seconds=done - start,
        total_s=closed - start,
        first_bytes=first,
        first_s=first_done - start,
        rest_s=done - first_done,
    )


def read_ranged(
    path: Path, offset: int, length: int, progress: Any, streams: int = RANGED_STREAMS
) -> Ranged:
    """Read LENGTH bytes of PATH from OFFSET with STREAMS threads at once, each one
    part through its own open file, timing them after each one's first small read."""
    parts = []
    step = length // streams
    for i in range(streams):
        start = offset + i * step
        parts.append((start, step if i < streams - 1 else offset + length - start))
    fds: list[int] = []
    try:
        for _ in parts:
            fds.append(os.open(path, os.O_RDONLY))
        # Untimed, one after the other: each stream's first read, which carries the
        # latency of starting a transfer at a new offset, as the single stream's does.
        firsts = []
        for fd, (start, size) in zip(fds, parts, strict=True):
            interrupts.check()
            firsts.append(len(os.pread(fd, min(FIRST_CHUNK, size), start)))
        begun = time.perf_counter()

        def rest(i: int) -> int:
            (start, size), fd = parts[i], fds[i]
            view = memoryview(bytearray(CHUNK))
            done = firsts[i]
            while done < size and time.perf_counter() - begun < RANGED_BUDGET:
                n = os.preadv(fd, [view[: min(CHUNK, size - done)]], start + done)
                if not n:
                    break
                done += n
                progress.update(n)
            return done - firsts[i]

        got = list(interrupts.run_all(rest, range(streams), workers=streams, name="timeread"))
        seconds = time.perf_counter() - begun
    finally:
        for fd in fds:
            os.close(fd)
    return Ranged(path=path, streams=streams, nbytes=sum(got), seconds=seconds)


def read_parallel(
    paths: tuple[Path, ...], workers: int, progress: Any
) -> tuple[list[Read], int, list[tuple[Path, OSError]]]:
    """Read PATHS with WORKERS threads; stop taking new files after the budget."""
    if not paths:
        return [], 0, []
    import threading

    pending = iter(paths)
    lock = threading.Lock()
    start = time.perf_counter()

    # Each thread takes the next file as it finishes one (not one job per file), so
    # that exactly WORKERS files are open at every moment until the budget runs out.
    def work(_: int) -> tuple[list[Read], list[tuple[Path, OSError]]]:
        buf = bytearray(CHUNK)
        done: list[Read] = []
        failed: list[tuple[Path, OSError]] = []
        while time.perf_counter() - start < PARALLEL_BUDGET:
            with lock:
                path = next(pending, None)
            if path is None:
                break
            try:
                r = read_file(path, buf)
            except OSError as error:
                failed.append((path, error))
                continue
            done.append(r)
            progress.update(r.nbytes)
        return done, failed

    inflight = min(workers, len(paths))
    results = list(interrupts.run_all(work, range(inflight), workers=inflight, name="timeread"))
    reads = [r for done, _ in results for r in done]
    failed = [x for _, bad in results for x in bad]
    return reads, inflight, failed


def measure_local(
    serial: list[Read], stream: list[Read], local_dir: Path, buf: bytearray
) -> tuple[list[Read], float, list[Read]]:
    """Copy the bytes that were read from Drive to local disk, evict them from the page
    cache, and read them the same way: serially, and streaming."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="colabmagic-timeread-", dir=local_dir))
    try:
        serial_copies = [copy_cold(r, work / f"s{i:04d}", buf) for i, r in enumerate(serial)]
        stream_copies = [copy_cold(r, work / f"b{i:04d}", buf) for i, r in enumerate(stream)]
        # Evict once more right before reading: writing the later copies may have
        # pulled metadata of the earlier ones back in.
        for copy in serial_copies + stream_copies:
            evict(copy)
        t0 = time.perf_counter()
        local_serial = [read_file(copy, buf) for copy in serial_copies]
        wall = time.perf_counter() - t0
        local_stream = [read_file(copy, buf) for copy in stream_copies]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return local_serial, wall, local_stream


def copy_cold(r: Read, dest: Path, buf: bytearray) -> Path:
    """Copy the first R.nbytes of R.path to DEST, on disk and out of the page cache.
    A Drive drop-out starts the copy over (this read is not timed)."""

    def chunks(src: Any) -> Iterator[memoryview]:
        view = memoryview(buf)
        left = r.nbytes
        while left > 0:
            n = src.readinto(view[: min(CHUNK, left)])
            if not n:
                break
            yield view[:n]  # written before the next readinto reuses BUF
            left -= n

    def copy() -> None:
        with open(r.path, "rb", buffering=0) as src, fsio.create_file(dest) as out:
            fsio.copy_chunks(chunks(src), out)
            fsio.fsync(out)

    source.retrying(
        copy,
        what=f"copying {r.path.name} to local disk",
        on_retry=lambda: fsio.remove_quietly(dest),
    )
    evict(dest)
    return dest


def evict(path: Path) -> None:
    """Drop PATH's pages from the page cache, so that the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --- what PATH holds, and where local disk is ------------------------------------------


def list_files(top: Path) -> list[tuple[Path, int]]:
    """Every regular file under TOP (or TOP itself) with its size, sorted by path.
    A folder whose listing meets a Drive drop-out is listed again (`source.retrying`)."""
    try:
        if not top.is_dir():
            return [(top, top.stat().st_size)] if top.is_file() else []
        found: list[tuple[Path, int]] = []
        folders = [top]
        while folders:
            folder = folders.pop()
            listed = source.retrying(partial(_scan, folder), what=f"listing {folder}")
            for path, nbytes in listed:
                if nbytes is None:
                    folders.append(path)
                else:
                    found.append((path, nbytes))
    except OSError as error:
        from ..status import oserror_advice

        raise ColabMagicError(oserror_advice(top, error)) from None
    found.sort()
    return found


def _scan(folder: Path) -> list[tuple[Path, int | None]]:
    """FOLDER's sub-folders (size None) and regular files, read whole: a retry starts
    the listing over rather than keep half of it."""
    listed: list[tuple[Path, int | None]] = []
    with os.scandir(folder) as listing:
        for entry in listing:
            if entry.is_dir(follow_symlinks=False):
                listed.append((Path(entry.path), None))
            elif entry.is_file(follow_symlinks=False):
                listed.append((Path(entry.path), entry.stat(follow_symlinks=False).st_size))
    return listed


def local_dir(local: str | os.PathLike | None) -> Path:
    """Where the local copies go: LOCAL, else the temporary folder unless it is in RAM."""
    from .. import status

    if local is not None:
        folder = Path(local).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ColabMagicError(f"cannot create --local {folder}: {error.strerror}") from None
    else:
        import tempfile

        folder = Path(tempfile.gettempdir())
        if status.mount_type(folder) in ("tmpfs", "ramfs"):
            # A cold read from RAM is no cold read; /var/tmp is on disk by convention.
            folder = Path("/var/tmp") if os.path.isdir("/var/tmp") else Path.cwd()
    fstype = status.mount_type(folder) or ""
    if fstype.startswith(("fuse.drive", "fuse.colabmagic")):
        raise ColabMagicError(f"--local must be on local disk, not in Drive ({folder})")
    return folder
