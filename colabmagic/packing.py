"""%packdrive: pack a Drive folder of many small files into one archive beside it.

Reading thousands of files from Drive one at a time is what makes `zip -r` slow there
(every cold open is a round trip), so a pool of threads keeps many reads in flight while
one thread writes the members into the archive in sorted order.  The archive is built
on local disk, copied into Drive as ``ARCHIVE.partial`` with large writes, re-opened
from Drive and verified, and only then renamed into place.

The folder's manifest (names, sizes, mtimes) goes into a sidecar beside the archive,
``ARCHIVE.colabmagic.json``, written last.  A sidecar rather than a zip comment: it
works the same for zip, tar and a set of shards (tar has no comment, and a comment
holds at most 64 KiB, too little for the manifest of 10,000 files); it is read without
opening the archive; and, being written after verification, its presence says the
archive beside it is complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import drive, interrupts
from .errors import ColabMagicError
from .results import Result, count, duration, size

log = logging.getLogger(__name__)

# Files up to this size are read whole by a worker thread; larger ones are opened by a
# worker (so that the cold open still overlaps) and streamed by the writer in CHUNKs.
SMALL_FILE = 8 << 20
CHUNK = 8 << 20
# At most this many bytes are read ahead of the writer, whatever the folder holds.
WINDOW_BYTES = 256 << 20
# zlib level of deflated members.  Measured on this VM class (2 vCPU): level 1 deflates
# CSV at ~90 MB/s to 0.44 of its size and JSON at ~220 MB/s to 0.13; level 6 manages
# 12 and 47 MB/s for 0.39 and 0.11.  Drive moves 50-130 MB/s, so any level above 1
# makes the CPU, not Drive, the bottleneck, for a few percent of size.
DEFLATE_LEVEL = 1
# `auto` deflates a member only when a trial deflate of a sample shrinks it to this
# fraction or less: random bytes deflate at ~40 MB/s to 1.00, float32 arrays at
# ~30 MB/s to 0.92, slower than Drive and for nothing.
SHRINK = 0.9
TRIAL_BYTES = 8 << 10
# Members whose bytes are re-read from the Drive copy and checked against their CRC.
VERIFY_SAMPLE = 16
VERIFY_MAX_MEMBER = 64 << 20
UPLOAD_TRIES = 3
READ_TRIES = 3
BACKOFF = 0.5  # seconds before the first retry; doubles each time
_TRANSIENT = {errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT, errno.ECONNRESET, errno.EAGAIN}

SIDECAR_SUFFIX = ".colabmagic.json"
_SIDECAR_VERSION = 1

# Already-compressed contents: deflating them again costs CPU at both ends, saves nothing.
COMPRESSED_EXTENSIONS = frozenset(
    """
    jpg jpeg png gif webp avif heic heif jp2 jxl
    mp4 m4v m4a mov mkv webm avi mpg mpeg mp3 aac ogg oga opus flac wma
    gz tgz bz2 tbz2 xz txz lz4 lz lzma zst zstd br 7z rar zip jar whl apk cab
    npz parquet pdf docx xlsx pptx odt epub
    """.split()  # noqa: SIM905 (a block of words reads better than 60 quoted strings)
)

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str | int) -> int:
    """Bytes in a size such as ``500MB``, ``1GB``, ``1.5GiB`` or ``1048576``."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ColabMagicError(
                f'cannot read the size "{text}"; write it like 500MB, 1GB or 1GiB'
            )
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ColabMagicError(f'the shard size must be more than 0 bytes, not "{text}"')
    return value


def _quoted(text: str) -> str:
    # Double quotes read best; a name that holds a quote or backslash needs shlex.
    if any(c in text for c in '"\\`'):
        import shlex

        return shlex.quote(text)
    return f'"{text}"'


@dataclass(frozen=True, repr=False)
class PackResult(Result):
    """What %packdrive did: the archive(s) in Drive and what went into them."""

    action: str  # "packed", "skipped" or "repacked"
    source: Path
    archives: tuple[Path, ...]
    files: int
    bytes: int
    archive_bytes: int
    seconds: float
    format: str = "zip"
    pattern: str | None = None  # shards: "train-{000000..000003}.tar"
    stored: int = 0
    deflated: int = 0
    reason: str = ""
    warnings: tuple[str, ...] = ()

    title = "%packdrive"

    @property
    def files_per_s(self) -> float | None:
        return self.files / self.seconds if self.seconds > 0 else None

    @property
    def stage_line(self) -> str:
        """The %stage line that brings the archive (or every shard) to local disk."""
        if not self.archives:
            return ""
        if self.pattern is not None:
            stem = self.archives[0].name[: -len("-000000.tar")]
            target = drive.shown(self.archives[0].parent / f"{stem}-*.tar")
        else:
            target = drive.shown(self.archives[0])
        return f"%stage {_quoted(target)}"

    def rows(self) -> list[tuple[str, str]]:
        if self.pattern is not None and self.archives:
            where = drive.shown(self.archives[0].parent / self.pattern)
            shown = f"{where} ({len(self.archives)} shards)"
        else:
            shown = ", ".join(drive.shown(p) for p in self.archives)
        ratio = f" ({self.archive_bytes / self.bytes:.0%} of the input)" if self.bytes else ""
        rows = [
            ("action", self.action + (f" ({self.reason})" if self.reason else "")),
            ("source", drive.shown(self.source)),
            ("archive" if self.pattern is None else "shards", shown),
            ("files", count(self.files)),
            ("bytes in", size(self.bytes)),
            ("archive bytes", size(self.archive_bytes) + ratio),
            ("time", duration(self.seconds)),
        ]
        if self.action != "skipped" and self.seconds > 0:
            per_second = size(int(self.bytes / self.seconds))
            rows.append(("speed", f"{self.files / self.seconds:,.0f} files/s, {per_second}/s"))
        if self.format == "zip":
            rows.append(("members", f"{self.deflated:,} deflated, {self.stored:,} stored"))
        return rows

    def notes(self) -> list[str]:
        notes = list(self.warnings)
        if self.action == "skipped":
            notes.append(
                "Up to date with the folder (same names, sizes, mtimes); --force rebuilds."
            )
        if self.stage_line:
            notes.append(f"Next, in the training notebook: {self.stage_line}")
        return notes

    def __repr__(self) -> str:
        names = [str(p) for p in self.archives]
        return f"PackResult(action={self.action!r}, archives={names!r}, files={self.files})"


# --------------------------------------------------------------------------- internals


class _StepFailed(Exception):
    """A step of the pack failed; the message starts with the step's name."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step} failed: {detail}")


@dataclass(frozen=True)
class _Entry:
    arcname: str  # "train/a/1.jpg"; an empty folder ends with "/"
    path: Path
    size: int
    mtime_ns: int
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.arcname.endswith("/")


@dataclass
class _Loaded:
    """A file as a worker read it: whole (``data``), or opened (``handle`` + ``head``)."""

    data: bytes | None
    handle: Any
    head: bytes
    crc: int | None
    deflate: bool


@dataclass(frozen=True)
class _Member:
    name: str  # as the archive lists it (tar folders without the trailing "/")
    size: int
    crc: int | None  # None for a folder


@dataclass(frozen=True)
class _Plan:
    fmt: str
    archive: Path | None  # the single archive; None for shards
    shard_base: Path | None  # ".../train" for train-000000.tar, train-000001.tar, ...
    shard_size: int | None
    sidecar: Path

    def shard(self, index: int) -> Path:
        assert self.shard_base is not None
        return self.shard_base.parent / f"{self.shard_base.name}-{index:06d}.tar"

    def pattern(self, shards: int) -> str | None:
        if self.shard_base is None:
            return None
        return f"{self.shard_base.name}-{{000000..{shards - 1:06d}}}.tar"


@dataclass
class _Output:
    """What this run has written to Drive, so that a failure can take it back."""

    partials: list[Path] = field(default_factory=list)
    renamed: list[Path] = field(default_factory=list)
    published: list[tuple[Path, Path, int]] = field(default_factory=list)  # partial, final, bytes
    had_previous: bool = False
    touched_previous: bool = False
    cancel: Any = None  # threading.Event: set when the run is being abandoned


def pack(
    folder: str | os.PathLike,
    archive: str | os.PathLike | None = None,
    *,
    format: str = "zip",
    shard_size: str | int | None = None,
    compress: str = "auto",
    workers: int = 16,
    force: bool = False,
    quiet: bool = False,
) -> PackResult:
    """Pack FOLDER (in Drive) into one archive beside it, or into tar shards, once.

    An archive already up to date with the folder is not rebuilt.  The result's
    ``stage_line`` is the %stage line that brings the archive to local disk.
    """
    started = time.monotonic()
    if format not in ("zip", "tar"):
        raise ColabMagicError(f'--format must be zip or tar, not "{format}"')
    if compress not in ("auto", "store", "deflate"):
        raise ColabMagicError(f'--compress must be auto, store or deflate, not "{compress}"')
    if workers < 1:
        raise ColabMagicError("--workers must be at least 1")
    source = _existing_folder(folder)
    plan = _plan(source, archive, format, None if shard_size is None else parse_size(shard_size))
    if plan.fmt == "tar" and compress == "deflate":
        raise ColabMagicError(
            "--compress deflate needs --format zip: tar stores members as they are"
        )
    return _pack(source, plan, compress, workers, force, quiet, started)


@interrupts.deferred()  # after the paths are resolved: mounting Drive stays interruptible
def _pack(
    source: Path,
    plan: _Plan,
    compress: str,
    workers: int,
    force: bool,
    quiet: bool,
    started: float,
) -> PackResult:
    try:
        entries, odd = _scan(source, workers)
        log.debug("listed %d entries in %.2f s", len(entries), time.monotonic() - started)
    except OSError as error:
        raise ColabMagicError(f"listing {drive.shown(source)} failed: {error}") from None
    files = [e for e in entries if not e.is_dir]
    if not files:
        raise ColabMagicError(f"nothing to pack: {drive.shown(source)} holds no files")
    warnings = []
    if odd:
        warnings.append(
            f"Left out {len(odd)} entries that are neither files nor folders: {odd[0]}, ..."
        )

    settings = {
        "format": plan.fmt,
        "compress": compress,
        "shard_size": plan.shard_size,
        "source_name": source.name,
    }
    manifest = [[e.arcname, e.size, e.mtime_ns] for e in entries]
    total = sum(e.size for e in files)
    previous = _read_sidecar(plan.sidecar)
    reason = ""
    if previous is None:
        _refuse_foreign_archive(plan, force)
    elif not force and _up_to_date(previous, plan.sidecar.parent, settings, manifest):
        return PackResult(
            action="skipped",
            source=source,
            archives=tuple(plan.sidecar.parent / a["name"] for a in previous["archives"]),
            files=len(files),
            bytes=total,
            archive_bytes=sum(a["bytes"] for a in previous["archives"]),
            seconds=time.monotonic() - started,
            format=plan.fmt,
            pattern=previous.get("pattern"),
            stored=previous.get("stored", 0),
            deflated=previous.get("deflated", 0),
            warnings=tuple(warnings),
        )
    else:
        reason = "--force" if force else _what_changed(previous, settings, manifest)

    sidecar = {
        "colabmagic": _SIDECAR_VERSION,
        "made_by": "%packdrive",
        "source": str(source),
        **settings,
        "files": len(files),
        "bytes": total,
        "manifest": manifest,
    }
    built = _build_and_publish(plan, entries, compress, workers, quiet, previous, sidecar)
    return PackResult(
        action="packed" if previous is None else "repacked",
        source=source,
        archives=built["archives"],
        files=len(files),
        bytes=total,
        archive_bytes=built["archive_bytes"],
        seconds=time.monotonic() - started,
        format=plan.fmt,
        pattern=plan.pattern(len(built["archives"])),
        stored=built["stored"],
        deflated=built["deflated"],
        reason=reason,
        warnings=tuple(warnings),
    )


def _existing_folder(text: str | os.PathLike) -> Path:
    path = drive.resolve(text) if isinstance(text, str) else Path(text)
    if not path.exists():
        raise ColabMagicError(f"no such folder: {path}")
    if not path.is_dir():
        raise ColabMagicError(f"{drive.shown(path)} is a file, not a folder: nothing to pack")
    return path


def _plan(
    source: Path, archive: str | os.PathLike | None, fmt: str, shard_size: int | None
) -> _Plan:
    """Where the archive (or the shards) and the sidecar go, and in which format.

    A given ARCHIVE ending in .tar means tar; an existing folder (or a trailing "/")
    means "FOLDER.zip in there"."""
    explicit = archive is not None
    if archive is None:
        target = source.parent / source.name
    else:
        target = drive.to_path(archive) if isinstance(archive, str) else Path(archive)
        if target.is_dir() or str(archive).endswith("/"):
            target, explicit = target / source.name, False
    lower = target.name.lower()
    if explicit and lower.endswith(".tar"):
        fmt = "tar"
    elif explicit and lower.endswith(".zip") and fmt == "tar":
        raise ColabMagicError(f'"{target.name}" ends in .zip but --format is tar')
    elif explicit and lower.endswith((".tgz", ".gz", ".bz2", ".xz", ".zst")):
        raise ColabMagicError(f'"{target.name}": %packdrive writes .zip or .tar archives')

    if shard_size is not None:
        stem = re.sub(r"\.(zip|tar)$", "", target.name, flags=re.IGNORECASE)
        base = target.parent / stem
        plan = _Plan("tar", None, base, shard_size, target.parent / (stem + SIDECAR_SUFFIX))
    else:
        if not lower.endswith("." + fmt):
            target = target.parent / f"{target.name}.{fmt}"
        plan = _Plan(fmt, target, None, None, target.parent / (target.name + SIDECAR_SUFFIX))

    first = plan.archive or plan.shard(0)
    where, inside = first.resolve(), source.resolve()
    if where == inside or inside in where.parents:
        raise ColabMagicError(
            f"the archive {drive.shown(first)} would be inside the folder it packs; "
            "put it beside the folder (the default) or elsewhere"
        )
    return plan


def _refuse_foreign_archive(plan: _Plan, force: bool) -> None:
    """An archive at the target that %packdrive did not make (no sidecar) may be the
    user's own, with other contents: it is replaced only with --force."""
    if force:
        return
    if plan.archive is not None:
        existing = plan.archive if plan.archive.exists() else None
    else:
        assert plan.shard_base is not None
        shards = sorted(plan.shard_base.parent.glob(plan.shard_base.name + "-[0-9]*.tar"))
        existing = shards[0] if shards else None
    if existing is not None:
        raise ColabMagicError(
            f"{drive.shown(existing)} exists and was not made by %packdrive; --force replaces it"
        )


def _scan(source: Path, workers: int) -> tuple[list[_Entry], list[str]]:
    """Every file and empty folder under SOURCE, sorted by member name, and the
    names of entries left out (sockets, FIFOs, broken links, links to folders).

    Folders are listed, and their entries stat'ed, by a pool of threads: on Drive
    every listing is a round trip, and so is every stat (a serial stat of 10,000
    files costs ~1.1 s on the simulated Drive, ~0.25 s with 16 in flight).
    """
    import stat as stat_module
    from concurrent.futures import ThreadPoolExecutor

    def list_dir(folder: tuple[Path, str]) -> list[tuple[str, str, bool]]:
        with os.scandir(folder[0]) as listing:
            return [(item.path, item.name, item.is_dir(follow_symlinks=False)) for item in listing]

    def stat_all(chunk: list[tuple[str, str]]) -> list[tuple[str, str, Any]]:
        out = []
        for path, name in chunk:
            try:
                out.append((path, name, os.stat(path)))  # a link to a file packs the file
            except FileNotFoundError:
                out.append((path, name, None))
        return out

    entries: list[_Entry] = []
    left_out: list[str] = []
    others: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 16))) as pool:
        level = [(source, source.name)]
        while level:
            below = []
            listings = interrupts.results([pool.submit(list_dir, folder) for folder in level])
            for (path, arc), items in zip(level, listings, strict=True):
                if not items and path != source:
                    entries.append(_Entry(arc + "/", path, 0, 0, 0o40755))
                for item_path, name, is_dir in items:
                    if is_dir:
                        below.append((Path(item_path), f"{arc}/{name}"))
                    else:
                        others.append((item_path, f"{arc}/{name}"))
            level = below
        chunks = [others[i : i + 256] for i in range(0, len(others), 256)]
        for chunk in interrupts.results([pool.submit(stat_all, chunk) for chunk in chunks]):
            for path, name, st in chunk:
                if st is None:
                    left_out.append(name + " (vanished, or a broken link)")
                elif stat_module.S_ISREG(st.st_mode):
                    entries.append(_Entry(name, Path(path), st.st_size, st.st_mtime_ns, st.st_mode))
                elif stat_module.S_ISDIR(st.st_mode):
                    left_out.append(name + " (link to a folder)")
                else:
                    left_out.append(name)
    entries.sort(key=lambda e: e.arcname)
    return entries, sorted(left_out)


# --------------------------------------------------------------------------- sidecar


def _read_sidecar(path: Path) -> dict | None:
    import json

    try:
        with open(path, "rb") as f:
            body = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("colabmagic") != _SIDECAR_VERSION:
        return None
    if not isinstance(body.get("archives"), list) or not body["archives"]:
        return None
    return body


def _up_to_date(previous: dict, folder: Path, settings: dict, manifest: list) -> bool:
    """Same settings, same names/sizes/mtimes, and every archive still there whole."""
    if any(previous.get(k) != v for k, v in settings.items()):
        return False
    if previous.get("manifest") != manifest:
        return False
    try:
        return all(os.stat(folder / a["name"]).st_size == a["bytes"] for a in previous["archives"])
    except (OSError, KeyError, TypeError):
        return False


def _what_changed(previous: dict, settings: dict, manifest: list) -> str:
    changed = [k for k, v in settings.items() if previous.get(k) != v]
    if changed:
        return "new " + ", ".join(k.replace("_", " ") for k in changed)
    old = {row[0]: row[1:] for row in previous.get("manifest", [])}
    new = {row[0]: row[1:] for row in manifest}
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    modified = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
    if added or removed or modified:
        return f"folder changed: {added} added, {modified} changed, {removed} removed"
    return "archive missing or changed"


def _write_sidecar(path: Path, body: dict) -> None:
    import json

    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(body, f, separators=(",", ":"))
    os.replace(partial, path)


# --------------------------------------------------------------------------- reading


def _wants_deflate(name: str, sample: bytes | memoryview, compress: str) -> bool:
    if compress != "auto":
        return compress == "deflate"
    base = name.rsplit("/", 1)[-1]
    extension = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    if extension in COMPRESSED_EXTENSIONS or len(sample) < 64:
        return False
    import zlib

    # A sample from the middle: many formats open with a header that compresses well
    # in front of a body that does not.
    if len(sample) > TRIAL_BYTES:
        start = (len(sample) - TRIAL_BYTES) // 2
        sample = memoryview(sample)[start : start + TRIAL_BYTES]
    return len(zlib.compress(sample, 1)) <= SHRINK * len(sample)


def _load(entry: _Entry, compress: str, fmt: str) -> _Loaded:
    """In a worker: read a small file whole, or open a large one and read its first
    chunk.  EIO/ENOTCONN from Drive are retried a few times, with back-off."""
    import zlib

    for attempt in range(READ_TRIES):
        try:
            # Not a `with`: a large file stays open for the writer to stream.
            handle = open(entry.path, "rb")  # noqa: SIM115
            try:
                head = handle.read() if entry.size <= SMALL_FILE else handle.read(CHUNK)
            except BaseException:
                handle.close()
                raise
        except OSError as error:
            if error.errno not in _TRANSIENT or attempt == READ_TRIES - 1:
                raise _StepFailed("reading", f"{entry.arcname}: {error}") from None
            time.sleep(BACKOFF * 2**attempt)
            continue
        deflate = fmt == "zip" and _wants_deflate(entry.arcname, head, compress)
        if entry.size <= SMALL_FILE:
            handle.close()
            _check_size(entry, len(head))
            return _Loaded(head, None, b"", zlib.crc32(head), deflate)
        return _Loaded(None, handle, head, None, deflate)
    raise AssertionError("unreachable")


def _check_size(entry: _Entry, read: int) -> None:
    if read != entry.size:
        raise _StepFailed(
            "reading",
            f"{entry.arcname} changed while it was being packed "
            f"({entry.size:,} bytes when listed, {read:,} read); run %packdrive again",
        )


class _Feed:
    """``read(n)`` over a large file a worker opened: exactly n bytes until the end,
    in CHUNK reads from Drive, keeping the CRC; checks the size at the end."""

    def __init__(self, entry: _Entry, loaded: _Loaded) -> None:
        import zlib

        self.entry = entry
        self.handle = loaded.handle
        self.buffer = loaded.head
        self.offset = 0
        self.total = len(loaded.head)
        self.crc = zlib.crc32(loaded.head)

    def _refill(self) -> bool:
        import zlib

        try:
            chunk = self.handle.read(CHUNK)
        except OSError as error:
            raise _StepFailed("reading", f"{self.entry.arcname}: {error}") from None
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

    def chunks(self):
        while True:
            if self.offset < len(self.buffer):
                out = self.buffer[self.offset :]
                self.offset = len(self.buffer)
                yield out
            if not self._refill():
                return

    def finish(self) -> int:
        """Close the file, insist it had exactly the listed size, return its CRC."""
        try:
            while self._refill():
                pass
        finally:
            self.handle.close()
        _check_size(self.entry, self.total)
        return self.crc


class _Reader:
    """Yields (entry, loaded) in ENTRIES order while up to WORKERS reads are in flight
    and at most WINDOW_BYTES are read ahead of the writer."""

    def __init__(self, entries: list[_Entry], compress: str, fmt: str, workers: int) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.entries = entries
        self.compress = compress
        self.fmt = fmt
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="colabmagic-pack")
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
                future = self.pool.submit(_load, entry, self.compress, self.fmt)
            self.queue.append((entry, future))

    def __iter__(self):
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
        self.pool.shutdown(wait=True)
        for _, future in self.queue:
            if future is None or future.cancelled() or future.exception() is not None:
                continue
            if future.result().handle is not None:
                future.result().handle.close()
        self.queue.clear()


# --------------------------------------------------------------------------- writing


def _zip_time(mtime_ns: int) -> tuple[int, int, int, int, int, int]:
    # Zip cannot store a time before 1980: clamp rather than fail.
    t = time.localtime(mtime_ns // 10**9)
    if t.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _set_level(zinfo: Any, level: int) -> None:
    # ZipFile.open(zinfo, "w") takes the level from the ZipInfo: `compress_level` from
    # Python 3.13 on, `_compresslevel` before (3.13 keeps that name as an alias).
    if hasattr(zinfo, "compress_level"):
        zinfo.compress_level = level
    else:
        zinfo._compresslevel = level


class _ArchiveWriter:
    """Writes members into one local zip or tar file, recording what went in."""

    def __init__(self, path: Path, fmt: str) -> None:
        import tarfile
        import zipfile

        self.path = path
        self.fmt = fmt
        self.members: list[_Member] = []
        self.stored = self.deflated = 0
        self.last_key: str | None = None
        if fmt == "zip":
            self.archive: Any = zipfile.ZipFile(path, "w", allowZip64=True)
        else:
            self.archive = tarfile.open(  # noqa: SIM115 (closed by close())
                path, "w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK
            )

    def add(self, entry: _Entry, loaded: _Loaded | None) -> None:
        if self.fmt == "zip":
            self._add_zip(entry, loaded)
        else:
            self._add_tar(entry, loaded)
        self.last_key = _sample_key(entry.arcname)

    def size_with(self, entry: _Entry) -> int:
        """The tar's size on disk if ENTRY were the last member: its header (two for
        a long or non-ASCII name), its data in 512-byte blocks, the two zero blocks
        that end a tar, all rounded up to tar's 10,240-byte records."""
        header = 512 if len(entry.arcname) < 100 and entry.arcname.isascii() else 1536
        end = self.archive.offset + header + -(-entry.size // 512) * 512 + 1024
        return -(-end // 10240) * 10240

    def _add_zip(self, entry: _Entry, loaded: _Loaded | None) -> None:
        import zipfile

        zinfo = zipfile.ZipInfo(entry.arcname, date_time=_zip_time(entry.mtime_ns))
        zinfo.create_system = 3  # Unix, wherever it is built: same folder, same bytes
        if loaded is None:
            zinfo.external_attr = (0o40755 << 16) | 0x10
            self.archive.writestr(zinfo, b"")
            self.members.append(_Member(entry.arcname, 0, None))
            return
        zinfo.external_attr = (0o100000 | (entry.mode & 0o777)) << 16
        method = zipfile.ZIP_DEFLATED if loaded.deflate else zipfile.ZIP_STORED
        if loaded.deflate:
            self.deflated += 1
        else:
            self.stored += 1
        if loaded.data is not None:
            self.archive.writestr(
                zinfo, loaded.data, compress_type=method, compresslevel=DEFLATE_LEVEL
            )
            crc = loaded.crc
        else:
            zinfo.compress_type = method
            zinfo.file_size = entry.size
            _set_level(zinfo, DEFLATE_LEVEL)
            feed = _Feed(entry, loaded)
            with self.archive.open(zinfo, "w", force_zip64=entry.size > 2**31) as dest:
                for chunk in feed.chunks():
                    dest.write(chunk)
            crc = feed.finish()
        self.members.append(_Member(entry.arcname, entry.size, crc))

    def _add_tar(self, entry: _Entry, loaded: _Loaded | None) -> None:
        import io
        import tarfile

        info = tarfile.TarInfo(entry.arcname.rstrip("/"))
        info.mtime = entry.mtime_ns // 10**9
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if loaded is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            self.archive.addfile(info)
            self.members.append(_Member(info.name, 0, None))
            return
        info.mode = entry.mode & 0o777
        info.size = entry.size
        self.stored += 1
        if loaded.data is not None:
            self.archive.addfile(info, io.BytesIO(loaded.data))
            crc = loaded.crc
        else:
            feed = _Feed(entry, loaded)
            try:
                self.archive.addfile(info, feed)
            except OSError as error:  # tarfile's "unexpected end of data": it shrank
                feed.handle.close()
                raise _StepFailed("reading", f"{entry.arcname}: {error}") from None
            crc = feed.finish()
        self.members.append(_Member(info.name, entry.size, crc))

    def close(self) -> None:
        self.archive.close()


def _sample_key(arcname: str) -> str:
    """WebDataset's sample key: the path up to the first dot of the file name.
    Files of one sample (cat1.jpg, cat1.cls) must land in the same shard."""
    folder, _, base = arcname.rpartition("/")
    return f"{folder}/{base.split('.', 1)[0]}"


def _estimate(entries: list[_Entry], plan: _Plan) -> tuple[int, int]:
    """Bytes the archive(s) take in Drive, and on local disk while building."""
    total = sum(e.size + 1024 + 2 * len(e.arcname) for e in entries) + (1 << 20)
    if plan.shard_size is None:
        return total, total
    largest = max(e.size for e in entries)
    # One shard being built while the previous one is copied to Drive.
    return total, min(total, 2 * (plan.shard_size + largest) + (1 << 20))


def _free_bytes(path: Path) -> int | None:
    """Free bytes where PATH lives; None where the filesystem does not say (FUSE)."""
    st = os.statvfs(path)
    if st.f_blocks == 0:
        return None
    return st.f_bavail * st.f_frsize


def _preflight(plan: _Plan, entries: list[_Entry], tmp: Path) -> None:
    drive_need, local_need = _estimate(entries, plan)
    free = _free_bytes(tmp)
    if free is not None and free < local_need:
        raise ColabMagicError(
            f"not enough local disk to build the archive: it needs about {size(local_need)}, "
            f"{tmp} has {size(free)} free"
        )
    dest = plan.sidecar.parent
    try:
        free = _free_bytes(dest)
    except OSError:
        free = None
    if free is not None and free < drive_need:
        raise ColabMagicError(
            f"not enough space in Drive for the archive: it needs about {size(drive_need)}, "
            f"{drive.shown(dest)} has {size(free)} free"
        )


def _upload(local: Path, partial: Path, out: _Output, quiet: bool) -> None:
    """Copy LOCAL to PARTIAL in Drive with CHUNK-sized writes; EIO/ENOTCONN start the
    copy over, a few times, with back-off."""
    from . import progress

    length = local.stat().st_size
    for attempt in range(UPLOAD_TRIES):
        bar = progress.bar(length, f"to Drive: {partial.name[: -len('.partial')]}", quiet=quiet)
        try:
            if partial not in out.partials:
                out.partials.append(partial)
            with open(local, "rb") as src, open(partial, "wb") as dst:
                while chunk := src.read(CHUNK):
                    if out.cancel is not None and out.cancel.is_set():
                        raise _StepFailed("copying to Drive", "stopped")
                    dst.write(chunk)
                    bar.update(len(chunk))
                dst.flush()
                try:
                    os.fsync(dst.fileno())
                except OSError as error:
                    if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                        raise
            return
        except OSError as error:
            if error.errno not in _TRANSIENT or attempt == UPLOAD_TRIES - 1:
                tries = f" (after {attempt + 1} tries)" if attempt else ""
                raise _StepFailed("copying to Drive", f"{error}{tries}") from None
            time.sleep(2 * BACKOFF * 2**attempt)
        finally:
            bar.close()


def _verify(path: Path, fmt: str, members: list[_Member]) -> None:
    """Re-open the copy in Drive: same member names and sizes in the same order, and
    the bytes of a sample of members match the CRC of what was read from the folder."""
    import tarfile
    import zipfile
    import zlib

    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as archive:
                listed = [(i.filename, i.file_size) for i in archive.infolist()]
                _compare(path, listed, members)
                for m in _sample(members):
                    if zlib.crc32(archive.read(m.name)) != m.crc:
                        raise _StepFailed("verifying the copy in Drive", f"{m.name}: wrong bytes")
        else:
            with tarfile.open(path, "r:") as archive:
                infos = archive.getmembers()
                _compare(path, [(i.name, i.size) for i in infos], members)
                by_name = {i.name: i for i in infos}
                for m in _sample(members):
                    data = archive.extractfile(by_name[m.name]).read()
                    if zlib.crc32(data) != m.crc:
                        raise _StepFailed("verifying the copy in Drive", f"{m.name}: wrong bytes")
    except _StepFailed:
        raise
    except Exception as error:  # OSError, BadZipFile, TarError, EOFError, a missing member
        raise _StepFailed("verifying the copy in Drive", f"{path.name}: {error}") from None


def _compare(path: Path, listed: list[tuple[str, int]], members: list[_Member]) -> None:
    if len(listed) != len(members):
        raise _StepFailed(
            "verifying the copy in Drive",
            f"{path.name} lists {len(listed):,} members, {len(members):,} were written",
        )
    for (name, length), m in zip(listed, members, strict=True):
        if name != m.name or length != m.size:
            raise _StepFailed(
                "verifying the copy in Drive",
                f"{path.name}: {name} ({length:,} bytes) where {m.name} ({m.size:,}) was written",
            )


def _sample(members: list[_Member]) -> list[_Member]:
    """Up to VERIFY_SAMPLE files spread over the archive, first and last included."""
    files = [m for m in members if m.crc is not None and m.size <= VERIFY_MAX_MEMBER]
    if len(files) <= VERIFY_SAMPLE:
        return files
    step = (len(files) - 1) / (VERIFY_SAMPLE - 1)
    return [files[round(i * step)] for i in range(VERIFY_SAMPLE)]


def _build_and_publish(
    plan: _Plan,
    entries: list[_Entry],
    compress: str,
    workers: int,
    quiet: bool,
    previous: dict | None,
    sidecar: dict,
) -> dict:
    """Read, build locally, copy each archive to Drive as .partial, verify, rename,
    write the sidecar.  Any failure (or Ctrl-C) removes what this run wrote to Drive."""
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from . import progress

    tmp = Path(tempfile.gettempdir())
    _preflight(plan, entries, tmp)
    try:
        plan.sidecar.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColabMagicError(
            f"cannot create {drive.shown(plan.sidecar.parent)}: {error}"
        ) from None
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="colabmagic-pack-", dir=tmp))
    out = _Output(had_previous=previous is not None, cancel=threading.Event())
    reader = _Reader(entries, compress, plan.fmt, workers)
    uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="colabmagic-upload")
    n_files = sum(1 for e in entries if not e.is_dir)
    bar = progress.bar(
        sum(e.size for e in entries), f"packing {entries[0].arcname.split('/')[0]}", quiet=quiet
    )
    archives: list[Path] = []
    counts = {"stored": 0, "deflated": 0, "files": 0}
    step = "building the archive on local disk"

    def publish(writer: _ArchiveWriter, final: Path) -> None:
        partial = final.with_name(final.name + ".partial")
        started = time.monotonic()
        _upload(writer.path, partial, out, quiet)
        uploaded = time.monotonic()
        _verify(partial, writer.fmt, writer.members)
        log.debug(
            "%s: copied to Drive in %.2f s, verified in %.2f s",
            final.name,
            uploaded - started,
            time.monotonic() - uploaded,
        )
        out.published.append((partial, final, writer.path.stat().st_size))
        writer.path.unlink()

    def finish(writer: _ArchiveWriter, upload: Any) -> Any:
        writer.close()
        counts["stored"] += writer.stored
        counts["deflated"] += writer.deflated
        if upload is not None:
            interrupts.result(upload)  # one archive in flight to Drive at a time
        final = plan.archive if plan.archive is not None else plan.shard(len(archives))
        archives.append(final)
        return uploader.submit(publish, writer, final)

    try:
        writer = _ArchiveWriter(workdir / "0", plan.fmt)
        upload = None
        for entry, loaded in reader:
            if (
                plan.shard_size is not None
                and writer.members
                and writer.size_with(entry) > plan.shard_size
                and _sample_key(entry.arcname) != writer.last_key
            ):
                upload = finish(writer, upload)
                writer = _ArchiveWriter(workdir / str(len(archives)), plan.fmt)
            writer.add(entry, loaded)
            if not entry.is_dir:
                counts["files"] += 1
                bar.update(entry.size)
                if counts["files"] % 64 == 0 or counts["files"] == n_files:
                    bar.set_postfix(files=f"{counts['files']:,}/{n_files:,}", refresh=False)
        log.debug("read and built %d files in %.2f s", n_files, time.monotonic() - started)
        interrupts.result(finish(writer, upload))

        step = "renaming into place"
        if previous is not None:
            out.touched_previous = True
            plan.sidecar.unlink(missing_ok=True)
        for partial, final, length in out.published:
            os.replace(partial, final)
            out.partials.remove(partial)
            out.renamed.append(final)
            if final.stat().st_size != length:
                raise _StepFailed(step, f"{final.name} has the wrong size after the rename")
        if previous is not None:
            _remove_stale_shards(plan, previous, archives)
        step = "writing the manifest"
        sidecar["archives"] = [{"name": f.name, "bytes": n} for _, f, n in out.published]
        sidecar["pattern"] = plan.pattern(len(archives))
        sidecar["stored"], sidecar["deflated"] = counts["stored"], counts["deflated"]
        _write_sidecar(plan.sidecar, sidecar)
    except BaseException as error:
        # Stop the uploader first, so that nothing reaches Drive after the clean-up.
        out.cancel.set()
        reader.close()
        uploader.shutdown(wait=True)
        left = _take_back(out, plan)
        if isinstance(error, _StepFailed):
            raise ColabMagicError(f"{error}; {left}") from None
        if isinstance(error, OSError):
            raise ColabMagicError(f"{step} failed: {error}; {left}") from None
        raise
    finally:
        bar.close()
        reader.close()
        uploader.shutdown(wait=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "archives": tuple(archives),
        "archive_bytes": sum(n for _, _, n in out.published),
        "stored": counts["stored"],
        "deflated": counts["deflated"],
    }


def _remove_stale_shards(plan: _Plan, previous: dict, archives: list[Path]) -> None:
    """Shards of the previous build beyond the new count would be staged by the glob."""
    keep = {a.name for a in archives}
    for old in previous.get("archives", []):
        name = old.get("name", "")
        if name not in keep and "/" not in name and name.endswith(".tar"):
            with contextlib.suppress(OSError):
                (plan.sidecar.parent / name).unlink(missing_ok=True)


def _take_back(out: _Output, plan: _Plan) -> str:
    """Remove every .partial and every renamed archive of this run; say what was left."""
    if out.renamed:
        plan.sidecar.unlink(missing_ok=True)
    left = []
    for path in out.partials + out.renamed:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            left.append(f"could not remove {drive.shown(path)}: {error}")
    if left:
        return "; ".join(left)
    if out.touched_previous:
        return "nothing of this run was left in Drive, and the previous archive is gone"
    if out.had_previous:
        return "nothing of this run was left in Drive; the previous archive is as it was"
    return "nothing was left in Drive"
