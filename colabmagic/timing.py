"""%timeread: what reading a Drive folder costs, against local disk, measured on a sample.

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

Projections model a file as a fixed cost plus its bytes at the streaming rate, both
fitted to the sample: an epoch is every file of PATH read once by one reader, and
`%stage` is PATH's bytes at Drive's streaming rate plus one open.  On the simulated
Drive's colab profile (0.5 s a cold open) the default measurement of a folder of small
files takes about 20 s, 15 of them in the serial pass.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import drive, interrupts
from .errors import ColabMagicError
from .results import Result, count, duration, size

FIRST_CHUNK = 64 * 1024  # the first read of a streamed file: latency, not bandwidth
CHUNK = 1 << 20
STREAM_MIN_FILE = 256 * 1024
STREAM_MIN_BYTES = 8_000_000  # DESIGN §3: "at least 8 MB read where PATH holds that much"
STREAM_MAX_BYTES = 32_000_000
STREAM_MAX_FILES = 32
STREAM_BUDGET = 8.0
STREAM_MEASURABLE = 1_000_000  # below this after the first reads, no MB/s is given
SAMPLE_MAX_FILE = 16_000_000
SERIAL_MAX = 30
SERIAL_MIN = 10
SERIAL_BUDGET = 15.0
PARALLEL_BUDGET = 10.0
WARM_CHECKS = 8
# Used for the %stage estimate only when PATH has no file large enough to stream.
ASSUMED_DRIVE_BANDWIDTH = 50e6
_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".zip", ".tar", ".tgz")
# Many small files are worth packing into one archive before staging them.
PACK_MIN_FILES = 100
PACK_MAX_MEAN_SIZE = 1_000_000


@dataclass(frozen=True, repr=False)
class TimeReadResult(Result):
    """What `%timeread` measured; times in seconds, rates per second, MB = 10^6 bytes."""

    files_sampled: int
    drive_p50_s: float
    drive_p95_s: float
    drive_mb_s: float | None
    drive_files_s: float | None
    parallel_files_s: float | None
    local_p50_s: float | None
    local_mb_s: float | None
    epoch_drive_s: float
    epoch_local_s: float | None
    stage_estimate_s: float
    advice: str
    path: Path | None = None
    files_total: int = 0
    bytes_total: int = 0
    workers: int = 0  # files in flight in the parallel pass
    serial_files: int = 0
    parallel_files: int = 0
    stream_files: int = 0
    stream_bytes: int = 0  # bytes behind drive_mb_s
    local_files_s: float | None = None
    serial_mb_s: float | None = None  # what the one reader moved, latency included
    parallel_mb_s: float | None = None
    list_s: float | None = None
    already_warm: bool = False
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0

    title = "%timeread"

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("path", str(self.path)),
            ("PATH holds", f"{_files(self.files_total)}, {size(self.bytes_total)}"),
        ]
        if self.list_s is not None:
            rows.append(("listing PATH", _time(self.list_s)))
        parts = [f"{self.serial_files} one at a time"] if self.serial_files else []
        if self.parallel_files:
            parts.append(f"{self.parallel_files} with {self.workers} in flight")
        if self.stream_files:
            parts.append(f"{self.stream_files} largest streamed")
        rows.append(("sample", f"{_files(self.files_sampled)}: " + ", ".join(parts)))
        rows.append(
            (
                "first read p50 / p95",
                f"Drive {_time(self.drive_p50_s)} / {_time(self.drive_p95_s)} · "
                f"local disk {_time(self.local_p50_s)}",
            )
        )
        if self.drive_files_s is not None:
            rows.append(
                (
                    "files/s, one reader",
                    f"Drive {_rate(self.drive_files_s)} ({_rate(self.serial_mb_s)} MB/s) · "
                    f"local disk {_rate(self.local_files_s)}",
                )
            )
        if self.parallel_files_s is not None:
            rows.append(
                (
                    f"files/s, {self.workers} in flight",
                    f"Drive {_rate(self.parallel_files_s)} ({_rate(self.parallel_mb_s)} MB/s)",
                )
            )
        streamed = f" (on {size(self.stream_bytes)})" if self.drive_mb_s is not None else ""
        rows.append(
            (
                "streaming MB/s",
                f"Drive {_rate(self.drive_mb_s)}{streamed} · local disk {_rate(self.local_mb_s)}",
            )
        )
        rows.append(
            (
                "epoch over PATH, one reader",
                f"Drive {_time(self.epoch_drive_s)} · local disk {_time(self.epoch_local_s)}",
            )
        )
        rows.append(("%stage would take", _time(self.stage_estimate_s)))
        rows.append(("measured in", _time(self.seconds)))
        return rows

    def notes(self) -> list[str]:
        return [self.advice, *self.warnings]

    def extra_html(self) -> str:
        return _chart(
            [
                ("first read, p50", self.drive_p50_s, self.local_p50_s, _time),
                ("files/s, one reader", self.drive_files_s, self.local_files_s, _rate),
                ("streaming MB/s", self.drive_mb_s, self.local_mb_s, _rate),
                ("epoch over PATH", self.epoch_drive_s, self.epoch_local_s, _time),
            ]
        )

    # IPython's pretty printer takes the first __repr__ or _repr_pretty_ up the MRO;
    # without this, the __repr__ below would hide Result's text table.
    _repr_pretty_ = Result._repr_pretty_

    def __repr__(self) -> str:
        return (
            f"TimeReadResult(files_sampled={self.files_sampled}, "
            f"drive_p50_s={self.drive_p50_s:.4f}, drive_mb_s={self.drive_mb_s!r}, "
            f"epoch_drive_s={self.epoch_drive_s:.1f}, stage_estimate_s={self.stage_estimate_s:.1f})"
        )


@dataclass(frozen=True)
class Plan:
    """Which files each pass reads: disjoint, so every read is a first read."""

    stream: tuple[Path, ...]
    serial: tuple[Path, ...]
    parallel: tuple[Path, ...]


@dataclass(frozen=True)
class _Read:
    path: Path
    nbytes: int
    seconds: float  # open to last byte
    total_s: float  # open to close: what the file cost the reader
    first_bytes: int
    first_s: float  # open to the end of the first read
    rest_s: float  # the reads after the first: streaming time


def timeread(
    path: str | os.PathLike | None = None,
    *,
    files: int = 100,
    workers: int = 16,
    local: str | os.PathLike | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> TimeReadResult:
    """How long reading PATH (default: all of MyDrive) takes from Drive and from local
    disk, per file and per epoch, what `%stage` would cost, and which to use.

    FILES is the size of the random sample, WORKERS the files in flight in the
    parallel pass, LOCAL the folder on local disk for the cold copies, SEED picks the
    sample (the same seed picks the same files, which are then warm: the result says
    so).  Takes well under a minute even on a slow Drive: see the module docstring.
    """
    if files < 1:
        raise ColabMagicError("--files must be 1 or more")
    if workers < 1:
        raise ColabMagicError("--workers must be 1 or more")
    text = "My Drive" if path is None else os.fspath(path)
    top = drive.resolve(text)
    with interrupts.deferred():  # after resolve: mounting Drive must stay interruptible
        started = time.perf_counter()
        entries = _list_files(top)
        list_s = time.perf_counter() - started
        if not entries:
            raise ColabMagicError(f'"{text}" holds no files to read')
        local_dir = _local_dir(local)
        plan = plan_sample(entries, files, seed=seed)
        warnings: list[str] = []

        from .progress import bar

        with bar(None, "timeread", quiet=quiet) as progress:
            m = _measure(plan, workers, local_dir, progress, warnings)
        seconds = time.perf_counter() - started

        return _summarise(
            m,
            text=text,
            top=top,
            entries=entries,
            workers=workers,
            list_s=list_s if top.is_dir() else None,
            seconds=seconds,
            warnings=warnings,
        )


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
    taken = set(stream)
    pool = sorted(p for p, n in entries if p not in taken and n <= SAMPLE_MAX_FILE)
    chosen = random.Random(seed).sample(pool, min(files, len(pool)))
    serial_n = min(SERIAL_MAX, (len(chosen) + 1) // 2)
    return Plan(tuple(stream), tuple(chosen[:serial_n]), tuple(chosen[serial_n:]))


# --- measuring -----------------------------------------------------------------------


@dataclass
class _Measured:
    stream: list[_Read]
    serial: list[_Read]
    serial_wall: float
    parallel: list[_Read]
    inflight: int
    warm_checked: int
    warm_found: int
    local_serial: list[_Read]
    local_serial_wall: float
    local_stream: list[_Read]
    failed: list[tuple[Path, OSError]]


def _measure(
    plan: Plan, workers: int, local_dir: Path, progress: Any, warnings: list[str]
) -> _Measured:
    failed: list[tuple[Path, OSError]] = []
    buf = bytearray(CHUNK)

    def read(path: Path, limit: int | None = None) -> _Read | None:
        interrupts.check()
        try:
            r = _read_file(path, buf, limit)
        except OSError as error:
            failed.append((path, error))
            return None
        progress.update(r.nbytes)
        return r

    # Streaming first: these files are excluded from the random sample anyway.
    stream: list[_Read] = []
    streamed = 0
    t0 = time.perf_counter()
    for path in plan.stream:
        if streamed >= STREAM_MAX_BYTES:
            break
        if streamed >= STREAM_MIN_BYTES and time.perf_counter() - t0 > STREAM_BUDGET:
            break
        r = read(path, STREAM_MAX_BYTES - streamed)
        if r is not None:
            stream.append(r)
            streamed += r.nbytes
    progress.set_postfix(files=len(stream), refresh=False)

    serial: list[_Read] = []
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

    parallel, inflight, parallel_failed = _read_parallel(plan.parallel, workers, progress)
    failed += parallel_failed
    progress.set_postfix(files=len(stream) + len(serial) + len(parallel), refresh=False)

    # Warm re-reads of files the serial pass has just read: the reference for "warm".
    warm_found = 0
    checks = serial[:WARM_CHECKS]
    for first in checks:
        again = read(first.path)
        if again is not None and first.seconds <= 2 * again.seconds + 0.001:
            warm_found += 1

    local_serial: list[_Read] = []
    local_stream: list[_Read] = []
    local_wall = 0.0
    try:
        local_serial, local_wall, local_stream = _measure_local(serial, stream, local_dir, buf)
    except OSError as error:
        warnings.append(f"local disk not measured: {error.strerror or error} ({local_dir})")
    if failed:
        path, error = failed[0]
        warnings.append(
            f"{len(failed)} files could not be read from Drive, e.g. {path.name}: "
            f"{error.strerror or error}"
        )
    return _Measured(
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
    )


def _read_file(path: Path, buf: bytearray, limit: int | None = None) -> _Read:
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
    return _Read(
        path=path,
        nbytes=total,
        seconds=done - start,
        total_s=closed - start,
        first_bytes=first,
        first_s=first_done - start,
        rest_s=done - first_done,
    )


def _read_parallel(
    paths: tuple[Path, ...], workers: int, progress: Any
) -> tuple[list[_Read], int, list[tuple[Path, OSError]]]:
    """Read PATHS with WORKERS threads; stop taking new files after the budget."""
    if not paths:
        return [], 0, []
    import threading
    from concurrent.futures import ThreadPoolExecutor

    pending = iter(paths)
    lock = threading.Lock()
    start = time.perf_counter()

    def work() -> tuple[list[_Read], list[tuple[Path, OSError]]]:
        buf = bytearray(CHUNK)
        done: list[_Read] = []
        failed: list[tuple[Path, OSError]] = []
        while time.perf_counter() - start < PARALLEL_BUDGET:
            with lock:
                path = next(pending, None)
            if path is None:
                break
            try:
                r = _read_file(path, buf)
            except OSError as error:
                failed.append((path, error))
                continue
            done.append(r)
            progress.update(r.nbytes)
        return done, failed

    inflight = min(workers, len(paths))
    with ThreadPoolExecutor(max_workers=inflight, thread_name_prefix="timeread") as pool:
        results = list(interrupts.results([pool.submit(work) for _ in range(inflight)]))
    reads = [r for done, _ in results for r in done]
    failed = [x for _, bad in results for x in bad]
    return reads, inflight, failed


def _measure_local(
    serial: list[_Read], stream: list[_Read], local_dir: Path, buf: bytearray
) -> tuple[list[_Read], float, list[_Read]]:
    """Copy the bytes that were read from Drive to local disk, evict them from the page
    cache, and read them the same way: serially, and streaming."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="colabmagic-timeread-", dir=local_dir))
    try:
        serial_copies = [_copy_cold(r, work / f"s{i:04d}", buf) for i, r in enumerate(serial)]
        stream_copies = [_copy_cold(r, work / f"b{i:04d}", buf) for i, r in enumerate(stream)]
        # Evict once more right before reading: writing the later copies may have
        # pulled metadata of the earlier ones back in.
        for copy in serial_copies + stream_copies:
            _evict(copy)
        t0 = time.perf_counter()
        local_serial = [_read_file(copy, buf) for copy in serial_copies]
        wall = time.perf_counter() - t0
        local_stream = [_read_file(copy, buf) for copy in stream_copies]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return local_serial, wall, local_stream


def _copy_cold(r: _Read, dest: Path, buf: bytearray) -> Path:
    """Copy the first R.nbytes of R.path to DEST, on disk and out of the page cache."""
    view = memoryview(buf)
    left = r.nbytes
    with open(r.path, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as out:
        while left > 0:
            n = src.readinto(view[: min(CHUNK, left)])
            if not n:
                break
            out.write(view[:n])
            left -= n
        os.fsync(out.fileno())
    _evict(dest)
    return dest


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --- what PATH holds, and where local disk is ------------------------------------------


def _list_files(top: Path) -> list[tuple[Path, int]]:
    """Every regular file under TOP (or TOP itself) with its size, sorted by path."""
    try:
        if not top.is_dir():
            return [(top, top.stat().st_size)] if top.is_file() else []
        found: list[tuple[Path, int]] = []
        folders = [top]
        while folders:
            with os.scandir(folders.pop()) as listing:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        found.append((Path(entry.path), entry.stat(follow_symlinks=False).st_size))
    except OSError as error:
        from .status import oserror_advice

        raise ColabMagicError(oserror_advice(top, error)) from None
    found.sort()
    return found


def _local_dir(local: str | os.PathLike | None) -> Path:
    """Where the local copies go: LOCAL, else the temporary folder unless it is in RAM."""
    from . import status

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


# --- figures -------------------------------------------------------------------------


def _summarise(
    m: _Measured,
    *,
    text: str,
    top: Path,
    entries: list[tuple[Path, int]],
    workers: int,
    list_s: float | None,
    seconds: float,
    warnings: list[str],
) -> TimeReadResult:
    from . import status

    files_total = len(entries)
    bytes_total = sum(nbytes for _, nbytes in entries)
    if not (m.serial or m.stream):
        path, error = m.failed[0] if m.failed else (top, OSError("nothing read"))
        raise ColabMagicError(f"could not read {path}: {error.strerror or error}")

    drive_bw = _stream_rate(m.stream)
    local_bw = _stream_rate(m.local_stream)
    # Latency: the serial files, open to last byte; with none (PATH holds only large
    # files), the streamed files' open and first read.
    if m.serial:
        latencies = [r.seconds for r in m.serial]
        local_latencies = [r.seconds for r in m.local_serial]
    else:
        latencies = [r.first_s for r in m.stream]
        local_latencies = [r.first_s for r in m.local_stream]
        warnings.append(
            "PATH has no file under 16 MB to sample: latency is the large files' open "
            "and first 64 kB"
        )
    p50 = _percentile(latencies, 50)
    p95 = _percentile(latencies, 95)
    local_p50 = _percentile(local_latencies, 50) if local_latencies else None

    drive_files_s = len(m.serial) / m.serial_wall if m.serial and m.serial_wall > 0 else None
    local_files_s = (
        len(m.local_serial) / m.local_serial_wall
        if m.local_serial and m.local_serial_wall > 0
        else None
    )
    serial_mb_s = sum(r.nbytes for r in m.serial) / m.serial_wall / 1e6 if drive_files_s else None
    parallel_files_s = parallel_mb_s = None
    if m.parallel:
        # Little's law: with `inflight` files always open, throughput is inflight over
        # the mean time one file takes; unlike count / wall time, a last half-empty
        # wave of files does not drag it down.
        busy = sum(r.total_s for r in m.parallel)
        if busy > 0:
            parallel_files_s = m.inflight * len(m.parallel) / busy
            parallel_mb_s = m.inflight * sum(r.nbytes for r in m.parallel) / busy / 1e6

    sample = m.serial or m.stream
    local_sample = m.local_serial or m.local_stream
    epoch_drive = _epoch(files_total, bytes_total, sample, drive_bw, first_only=not m.serial)
    epoch_local = (
        _epoch(files_total, bytes_total, local_sample, local_bw, first_only=not m.serial)
        if local_sample
        else None
    )
    stage_bw = drive_bw
    if stage_bw is None:
        stage_bw = ASSUMED_DRIVE_BANDWIDTH
        largest = max(nbytes for _, nbytes in entries)
        warnings.append(
            f"Drive's streaming rate not measured (PATH's largest file is {size(largest)}): "
            f"the %stage estimate assumes {ASSUMED_DRIVE_BANDWIDTH / 1e6:.0f} MB/s, "
            "typical of Colab"
        )
    elif sum(r.nbytes - r.first_bytes for r in m.stream) < STREAM_MIN_BYTES:
        warnings.append(
            f"streaming MB/s measured on only {size(_streamed(m.stream))} "
            "(PATH's largest files): a rough figure"
        )
    stage_estimate = bytes_total / stage_bw + p50
    # %stage of a folder copies it file by file with `workers` in flight: the opens
    # overlap, but each wave of them still costs one latency.
    stage_folder = bytes_total / stage_bw + -(-files_total // workers) * p50

    already_warm = m.warm_checked > 0 and 2 * m.warm_found > m.warm_checked
    fstype = status.mount_type(top) or ""
    on_drive = fstype.startswith(("fuse.drive", "fuse.colabmagic"))
    if not on_drive:
        warnings.append(
            f"PATH is on a plain folder ({fstype or 'local disk'}), not a Drive mount: "
            "these are local disk's figures; %drive --fake DIR rehearses Drive's latency"
        )
    elif already_warm:
        cure = (
            "%drive --remount makes it cold again"
            if fstype.startswith("fuse.colabmagic")
            else "files not read yet this session will be slower"
        )
        warnings.append(
            f"{m.warm_found} of {m.warm_checked} files checked were already in Drive's "
            f"cache (read before), so the first-read figures are optimistic; {cure}"
        )
    if m.serial and len(m.serial) < SERIAL_MIN and len(m.serial) < files_total:
        warnings.append(f"p95 from only {len(m.serial)} files: a rough figure")

    advice = _advice(
        text,
        top,
        entries,
        epoch_drive=epoch_drive,
        epoch_local=epoch_local,
        stage=stage_estimate,
        stage_folder=stage_folder,
    )
    return TimeReadResult(
        files_sampled=len(m.stream) + len(m.serial) + len(m.parallel),
        drive_p50_s=p50,
        drive_p95_s=p95,
        drive_mb_s=drive_bw / 1e6 if drive_bw else None,
        drive_files_s=drive_files_s,
        parallel_files_s=parallel_files_s,
        local_p50_s=local_p50,
        local_mb_s=local_bw / 1e6 if local_bw else None,
        epoch_drive_s=epoch_drive,
        epoch_local_s=epoch_local,
        stage_estimate_s=stage_estimate,
        advice=advice,
        path=top,
        files_total=files_total,
        bytes_total=bytes_total,
        workers=m.inflight,
        serial_files=len(m.serial),
        parallel_files=len(m.parallel),
        stream_files=len(m.stream),
        stream_bytes=_streamed(m.stream) if drive_bw else 0,
        local_files_s=local_files_s,
        serial_mb_s=serial_mb_s,
        parallel_mb_s=parallel_mb_s,
        list_s=list_s,
        already_warm=already_warm,
        warnings=tuple(warnings),
        seconds=seconds,
    )


def _streamed(reads: list[_Read]) -> int:
    return sum(r.nbytes - r.first_bytes for r in reads)


def _stream_rate(reads: list[_Read]) -> float | None:
    """Bytes/s after each file's first read (which carries the latency); None when
    too few bytes came that way to say."""
    nbytes = _streamed(reads)
    seconds = sum(r.rest_s for r in reads)
    if nbytes < STREAM_MEASURABLE or seconds <= 0:
        return None
    return nbytes / seconds


def _epoch(
    files_total: int,
    bytes_total: int,
    sample: list[_Read],
    bandwidth: float | None,
    *,
    first_only: bool = False,
) -> float:
    """Time for one reader to read every file once: a per-file cost fitted to SAMPLE
    plus the bytes at BANDWIDTH (or, with none, the sample's mean time per file)."""
    if first_only:
        costs = [(r.first_s, r.first_bytes) for r in sample]
    else:
        costs = [(r.seconds, r.nbytes) for r in sample]
    if bandwidth is None:
        return files_total * sum(s for s, _ in costs) / len(costs)
    overhead = sum(max(0.0, s - n / bandwidth) for s, n in costs) / len(costs)
    return files_total * overhead + bytes_total / bandwidth


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _advice(
    text: str,
    top: Path,
    entries: list[tuple[Path, int]],
    *,
    epoch_drive: float,
    epoch_local: float | None,
    stage: float,
    stage_folder: float | None = None,
) -> str:
    """One line: stage (and how), or read straight from Drive.  STAGE is what staging
    one archive of PATH takes, STAGE_FOLDER what copying PATH file by file takes."""
    local = epoch_local if epoch_local is not None else 0.0
    saving = epoch_drive - local

    def pays(cost: float) -> bool:
        # Worth it when it saves a noticeable time per epoch and pays for itself
        # within two epochs.
        return saving >= 1.0 and cost <= 2 * saving

    def takes(cost: float) -> str:
        return (
            f"takes about {_time(cost)}; then an epoch reads in {_time(local)}, "
            f"not {_time(epoch_drive)}."
        )

    if not pays(stage):
        return (
            f"Reading straight from Drive is fine here: an epoch reads in "
            f"{_time(epoch_drive)} from Drive and {_time(local)} from local disk, and "
            f"%stage would take {_time(stage)}."
        )
    typed = text.rstrip("/")
    if top.is_file():
        return f'Stage it: %stage "{typed}" {takes(stage)}'
    sibling = _sibling_archive(typed, top)
    if sibling is not None:
        return f'Stage its archive: %stage "{sibling}" {takes(stage)}'
    suffixes = {_archive_suffix(p.name) for p, _ in entries}
    if len(suffixes) == 1 and None not in suffixes and all(p.parent == top for p, _ in entries):
        return f'Stage the archives: %stage "{typed}/*{suffixes.pop()}" {takes(stage)}'
    folder_cost = stage if stage_folder is None else stage_folder
    mean_size = sum(n for _, n in entries) / len(entries)
    many_small = len(entries) >= PACK_MIN_FILES and mean_size < PACK_MAX_MEAN_SIZE
    if many_small or not pays(folder_cost):
        return (
            f'Pack it once, then stage it: %packdrive "{typed}", then %stage "{typed}.zip" '
            f"{takes(stage)}"
        )
    return f'Stage it: %stage "{typed}" copies it file by file and {takes(folder_cost)}'


def _archive_suffix(name: str) -> str | None:
    lowered = name.lower()
    return next((s for s in _ARCHIVE_SUFFIXES if lowered.endswith(s)), None)


def _sibling_archive(typed: str, top: Path) -> str | None:
    """The archive beside folder TOP (as %packdrive writes it), spelled as the user did."""
    for suffix in _ARCHIVE_SUFFIXES:
        if top.with_name(top.name + suffix).is_file():
            return typed + suffix
    return None


def _files(n: int) -> str:
    return f"{count(n)} file" if n == 1 else f"{count(n)} files"


# --- formatting ----------------------------------------------------------------------


def _time(seconds: float | None) -> str:
    if seconds is not None and 0 < seconds < 0.01:
        return f"{seconds * 1000:.2g} ms" if seconds < 0.001 else f"{seconds * 1000:.1f} ms"
    return duration(seconds)


def _rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


_DRIVE_COLOR = "#e8710a"
_LOCAL_COLOR = "#1a73e8"


def _chart(metrics: list[tuple[str, float | None, float | None, Any]]) -> str:
    """A small SVG bar chart, Drive against local disk, one pair of bars per metric."""
    import html

    label_w, bar_w, value_w, bar_h = 150, 240, 90, 13
    width = label_w + bar_w + value_w
    shown = [m for m in metrics if m[1] is not None or m[2] is not None]
    parts = []
    y = 22
    for label, drive_value, local_value, fmt in shown:
        top = max(v for v in (drive_value, local_value) if v is not None) or 1.0
        parts.append(f'<text x="0" y="{y + bar_h}" font-weight="bold">{html.escape(label)}</text>')
        for value, color in ((drive_value, _DRIVE_COLOR), (local_value, _LOCAL_COLOR)):
            w = 0.0 if value is None else max(2.0, bar_w * value / top)
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>'
            )
            parts.append(
                f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 2}">'
                f"{html.escape(fmt(value))}</text>"
            )
            y += bar_h + 2
        y += 10
    legend = (
        f'<rect x="0" y="2" width="12" height="12" fill="{_DRIVE_COLOR}"/>'
        '<text x="16" y="12">Drive</text>'
        f'<rect x="70" y="2" width="12" height="12" fill="{_LOCAL_COLOR}"/>'
        '<text x="86" y="12">local disk (cold)</text>'
    )
    return (
        f'<svg class="colabmagic-chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{y}" viewBox="0 0 {width} {y}" role="img" '
        f'font-family="sans-serif" font-size="12" fill="currentColor">'
        f"<title>{html.escape('Drive against local disk')}</title>"
        f"{legend}{''.join(parts)}</svg>"
    )
