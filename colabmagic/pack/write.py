"""Building the archive on local disk: zip or tar members, compression, shards.

The writer takes each file as `read.Reader` hands it over, in sorted order, and
records what went in (name, size, CRC) for the check of the copy in Drive.  Member
metadata is fixed (Unix, uid 0, the file's mtime): the same folder gives the same bytes.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ColabMagicError
from .read import READ_CHUNK, Entry, Feed, Loaded, StepFailed

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


def wants_deflate(name: str, sample: bytes | memoryview, compress: str) -> bool:
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


def deflate_judge(fmt: str, compress: str) -> Callable[[str, bytes], bool]:
    """What the reading threads ask of each file's first bytes: deflate it or not.
    (They ask, not the writer: the trial deflate then runs in parallel.)"""
    if fmt != "zip":
        return lambda name, sample: False
    return lambda name, sample: wants_deflate(name, sample, compress)


def sample_key(arcname: str) -> str:
    """WebDataset's sample key: the path up to the first dot of the file name.
    Files of one sample (cat1.jpg, cat1.cls) must land in the same shard."""
    folder, _, base = arcname.rpartition("/")
    return f"{folder}/{base.split('.', 1)[0]}"


@dataclass(frozen=True)
class Member:
    name: str  # as the archive lists it (tar folders without the trailing "/")
    size: int
    crc: int | None  # None for a folder


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


class ArchiveWriter:
    """Writes members into one local zip or tar file, recording what went in."""

    def __init__(self, path: Path, fmt: str, *, retries: int | None = None) -> None:
        import tarfile
        import zipfile

        self.path = path
        self.fmt = fmt
        self.retries = retries
        self.members: list[Member] = []
        self.stored = self.deflated = 0
        self.last_key: str | None = None
        if fmt == "zip":
            self.archive: Any = zipfile.ZipFile(path, "w", allowZip64=True)
        else:
            self.archive = tarfile.open(  # noqa: SIM115 (closed by close())
                path, "w", format=tarfile.PAX_FORMAT, copybufsize=READ_CHUNK
            )

    def add(self, entry: Entry, loaded: Loaded | None) -> None:
        if self.fmt == "zip":
            self._add_zip(entry, loaded)
        else:
            self._add_tar(entry, loaded)
        self.last_key = sample_key(entry.arcname)

    def size_with(self, entry: Entry) -> int:
        """The tar's size on disk if ENTRY were the last member: its header (two for
        a long or non-ASCII name), its data in 512-byte blocks, the two zero blocks
        that end a tar, all rounded up to tar's 10,240-byte records."""
        header = 512 if len(entry.arcname) < 100 and entry.arcname.isascii() else 1536
        end = self.archive.offset + header + -(-entry.size // 512) * 512 + 1024
        return -(-end // 10240) * 10240

    def _add_zip(self, entry: Entry, loaded: Loaded | None) -> None:
        import zipfile

        zinfo = zipfile.ZipInfo(entry.arcname, date_time=_zip_time(entry.mtime_ns))
        zinfo.create_system = 3  # Unix, wherever it is built: same folder, same bytes
        if loaded is None:
            zinfo.external_attr = (0o40755 << 16) | 0x10
            self.archive.writestr(zinfo, b"")
            self.members.append(Member(entry.arcname, 0, None))
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
            feed = Feed(entry, loaded, self.retries)
            try:
                with self.archive.open(zinfo, "w", force_zip64=entry.size > 2**31) as dest:
                    for chunk in feed.chunks():
                        dest.write(chunk)
            except BaseException:
                feed.close()
                raise
            crc = feed.finish()
        self.members.append(Member(entry.arcname, entry.size, crc))

    def _add_tar(self, entry: Entry, loaded: Loaded | None) -> None:
        import tarfile

        info = tarfile.TarInfo(entry.arcname.rstrip("/"))
        info.mtime = entry.mtime_ns // 10**9
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if loaded is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            self.archive.addfile(info)
            self.members.append(Member(info.name, 0, None))
            return
        info.mode = entry.mode & 0o777
        info.size = entry.size
        self.stored += 1
        if loaded.data is not None:
            self.archive.addfile(info, io.BytesIO(loaded.data))
            crc = loaded.crc
        else:
            feed = Feed(entry, loaded, self.retries)
            try:
                self.archive.addfile(info, feed)
            except OSError as error:  # tarfile's "unexpected end of data": it shrank
                feed.close()
                raise StepFailed("reading", f"{entry.arcname}: {error}") from None
            except BaseException:
                feed.close()
                raise
            crc = feed.finish()
        self.members.append(Member(info.name, entry.size, crc))

    def close(self) -> None:
        self.archive.close()
