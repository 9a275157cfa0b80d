"""Archives from strangers: member validation and streaming readers for zip and tar.

Nothing here trusts a header.  Every member name is checked (`clean_name`), the set of
members is checked as a whole (`Plan`: duplicates, file-vs-folder clashes, links
that leave the tree), and sizes are enforced with a running count while the bytes
stream in.  Zip members are all checked from the central directory before the first
byte is written; tar has no index, so its members are checked as they arrive, and
everything is written under a staging folder that is only moved into place once the
whole archive has passed (see staging.py).

Readers consume a `Stream`: the archive's bytes front to back, as they arrive from
Drive, so that unpacking overlaps with reading and the archive is never stored.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import struct
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from . import interrupts
from .errors import ColabMagicError
from .fsio import create_file, write_all

MAX_NAME_BYTES = 4096  # PATH_MAX: longer names are a bomb, not a dataset
MAX_COMPONENT_BYTES = 255  # NAME_MAX on ext4 and DriveFS
# Deeper trees break Python's own recursive os.makedirs and shutil.rmtree (1,000
# frames), and so the user's cleanup; no dataset is this deep.
MAX_DEPTH = 256
MAX_LINK_TARGET = 4096  # PATH_MAX: symlink() refuses longer targets
PATH_MAX = 4096
MAX_HEADER_READ = 16 << 20  # tar pax/long-name bodies are read whole: bound them
MAX_PIECE = 1 << 20  # most bytes one decompress call may return


class Refused(ColabMagicError):
    """An archive that colabmagic will not unpack; nothing of it was put in place."""


def shown(name: str, limit: int = 80) -> str:
    """NAME as a quoted, escaped, bounded string for a one-line message."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


@dataclass
class Member:
    name: str  # normalised: relative, "/"-separated, no "." or ".." parts
    kind: str  # "file", "dir", "symlink" or "hardlink"
    size: int = 0  # declared bytes of a file
    # Link target (symlink: as stored; hardlink: normalised member name).  None for a
    # zip symlink until its data, which holds the target, has arrived.
    target: str | None = ""
    mode: int = 0o644


def clean_name(raw: str, *, is_dir: bool = False) -> str | None:
    """RAW as a safe relative name, None for the archive's own "." entry, or Refused."""
    why = _name_problem(raw)
    if why:
        raise Refused(f"member {shown(raw)} {why}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts:
        if is_dir:
            return None  # "./": the target folder itself; creating it changes nothing
        raise Refused(f"member {shown(raw)} has an empty name")
    if len(parts) > MAX_DEPTH:
        raise Refused(f"member {shown(raw)} is more than {MAX_DEPTH} folders deep")
    for part in parts:
        if unicodedata.normalize("NFKC", part) in (".", ".."):
            raise Refused(f"member {shown(raw)} has a part that reads as {part!r}")
        if len(os.fsencode(part)) > MAX_COMPONENT_BYTES:
            raise Refused(f"member {shown(raw)} has a part longer than 255 bytes")
    return "/".join(parts)


def _name_problem(raw: str) -> str | None:
    if raw == "":
        return "has an empty name"
    if "\x00" in raw:
        return "has a NUL character in its name"
    if _CONTROL.search(raw):
        return "has a control character in its name"
    if "\\" in raw:
        return "has a backslash in its name"
    if len(raw) >= 2 and raw[1] == ":" and raw[0].isalpha():
        return "starts with a drive letter"
    if raw.startswith("/"):
        return "is an absolute path"
    if ".." in raw.split("/"):
        return 'has a ".." segment'
    if len(os.fsencode(raw)) > MAX_NAME_BYTES:
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    return None


# C0 and C1 controls, line separators and bidi overrides: they break one-line messages
# and terminals, and make one name display as another.  One compiled class: a name is
# checked in C, not a character at a time in Python (10,000 members per archive).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _inside(link_name: str, target: str) -> bool:
    """Whether TARGET, read from the folder holding LINK_NAME, stays in the tree."""
    depth = 0
    for part in link_name.split("/")[:-1] + target.split("/"):
        if part in ("", "."):
            continue
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return False
    return True


@dataclass
class Plan:
    """The members of one archive, checked as a whole as they are added."""

    files: dict[str, Member] = field(default_factory=dict)  # files and links
    dirs: set[str] = field(default_factory=set)
    declared: int = 0
    top: dict[str, None] = field(default_factory=dict)  # top-level names, in order

    def add(self, member: Member) -> None:
        name = member.name
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.files:
                raise Refused(f"member {shown(name)} is inside {shown(parent)}, which is a file")
            self.dirs.add(parent)
        if member.kind == "dir":
            if name in self.files:
                raise Refused(f"member {shown(name)} is both a file and a folder")
            self.dirs.add(name)
        else:
            if name in self.dirs:
                raise Refused(f"member {shown(name)} is both a file and a folder")
            if name in self.files:
                raise Refused(f"member {shown(name)} appears twice")
            if member.kind == "symlink" and member.target is not None:
                _check_symlink(name, member.target)
            elif (
                member.kind == "hardlink"
                and getattr(self.files.get(member.target or ""), "kind", None) != "file"
            ):
                raise Refused(
                    f"member {shown(name)} is a hard link to {shown(member.target)}, "
                    "which is not an earlier file of the archive"
                )
            self.files[name] = member
            self.declared += member.size
        self.top.setdefault(parts[0], None)


def _check_symlink(name: str, target: str) -> None:
    if not target:
        raise Refused(f"member {shown(name)} is a link with an empty target")
    if target.startswith("/"):
        raise Refused(f"member {shown(name)} links to {shown(target)}, an absolute path")
    if "\x00" in target or "\\" in target:
        raise Refused(f"member {shown(name)} links to {shown(target)}, with a NUL or backslash")
    if len(os.fsencode(target)) >= MAX_LINK_TARGET:
        raise Refused(f"member {shown(name)} is a link with an oversized target")
    if not _inside(name, target):
        raise Refused(f"member {shown(name)} links to {shown(target)}, outside the target folder")


# --------------------------------------------------------------------------- streams


class Stream:
    """The bytes of an archive in order, from an iterator of chunks.

    `view` hands out slices of the chunks without copying.  Seeking backwards is
    allowed only within the chunks still held (tarfile re-reads a header block).
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self._prev = memoryview(b"")
        self._base = 0  # stream offset of self._buf[0]
        self._pos = 0  # offset within self._buf
        self.name = None  # tarfile looks for it
        self.last_read = b""  # what the last read() returned: the block tarfile gave up on

    def tell(self) -> int:
        return self._base + self._pos

    def _next_chunk(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._base += len(self._buf)
                self._prev, self._buf, self._pos = self._buf, memoryview(chunk), 0
                return True
        return False

    def view(self, n: int) -> memoryview | bytes:
        """Up to N bytes (fewer only at the end), without a copy when one chunk has them."""
        if self._pos == len(self._buf) and not self._next_chunk():
            return b""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        return self.read(n)

    def read(self, n: int = -1) -> bytes:
        # Member data goes through view(); read() serves headers, and tarfile reads a
        # pax or GNU long-name body whole, at whatever size its header declares.
        if n < 0 or n > MAX_HEADER_READ:
            raise Refused(f"a header of {n:,} bytes at byte {self.tell():,} (a memory bomb?)")
        parts: list[memoryview] = []
        while n > 0:
            if self._pos == len(self._buf) and not self._next_chunk():
                break
            take = min(n, len(self._buf) - self._pos)
            parts.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            n -= take
        self.last_read = b"".join(parts)
        return self.last_read

    def skip(self, n: int) -> int:
        skipped = 0
        while n > 0:
            if self._pos == len(self._buf) and not self._next_chunk():
                break
            take = min(n, len(self._buf) - self._pos)
            self._pos += take
            n -= take
            skipped += take
        return skipped

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.tell()
        elif whence != 0:
            raise OSError("archive streams cannot seek from the end")
        here = self.tell()
        if offset >= here:
            self.skip(offset - here)
        elif offset >= self._base:
            self._pos = offset - self._base
        elif offset >= self._base - len(self._prev):
            # step back into the previous chunk: make it current again
            self._buf = memoryview(bytes(self._prev) + bytes(self._buf))
            self._base -= len(self._prev)
            self._prev = memoryview(b"")
            self._pos = offset - self._base
        else:
            raise OSError("archive streams cannot seek that far back")
        return self.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def decompressed(chunks: Iterator[bytes], kind: str) -> Iterator[bytes]:
    """Chunks of the decompressed stream (gzip, bzip2, xz or zstd), all members of it.

    Pieces stay small (MAX_PIECE; a few tens of MB at most for zstd) however much the
    input expands, so that a bomb meets the running counts downstream before it
    exhausts memory.  A stream that stops before its end marker is refused: a
    truncated download is not an archive, and would otherwise be staged in part.
    """
    new, expand = _decompressor_factory(kind)
    dec, fed = new(), False
    for data in chunks:
        while data:
            fed = True
            try:
                data = yield from expand(dec, data)
            except Exception as error:  # zlib.error, OSError, LZMAError, ZstdError
                raise Refused(f"the {kind} data is corrupt: {error}") from None
            if getattr(dec, "eof", False):
                dec, fed = new(), False  # concatenated streams, as gzip -c a b > ab makes
    if fed and getattr(dec, "eof", True) is False:
        raise Refused(f"the {kind} data ends before its end marker (a truncated archive)")


# Each expands DATA in pieces of at most MAX_PIECE and returns the input left over
# after the end of the stream (the start of the next concatenated one).


def _inflate(dec, data: bytes) -> Iterator[bytes]:
    while True:
        out = dec.decompress(data, MAX_PIECE)
        if out:
            yield out
        if dec.eof:
            return dec.unused_data
        data = dec.unconsumed_tail
        if not data and len(out) < MAX_PIECE:
            return b""


def _unbuffer(dec, data: bytes) -> Iterator[bytes]:
    # bz2 and lzma keep input they have not used yet themselves.
    while True:
        out = dec.decompress(data, max_length=MAX_PIECE)
        data = b""
        if out:
            yield out
        if dec.eof:
            return dec.unused_data
        if dec.needs_input:
            return b""


def _unzstd(dec, data: bytes) -> Iterator[bytes]:
    # zstandard's decompressobj has no max_length: feed it little at a time instead
    # (a 4-byte RLE block expands to 128 KB, so 1 KB of input to at most 32 MB).
    step = 1024
    for at in range(0, len(data), step):
        out = dec.decompress(data[at : at + step])
        if out:
            yield out
        if getattr(dec, "eof", False):
            return dec.unused_data + data[at + step :]
    return b""


def _decompressor_factory(kind: str) -> tuple[Callable, Callable]:
    """(a new decompressor, the function that expands data with it)."""
    if kind == "gz":
        import zlib

        return (lambda: zlib.decompressobj(31)), _inflate
    if kind == "bz2":
        import bz2

        return bz2.BZ2Decompressor, _unbuffer
    if kind == "xz":
        import lzma

        return lzma.LZMADecompressor, _unbuffer
    if kind == "zst":
        try:
            import zstandard
        except ImportError:
            raise ColabMagicError(
                ".tar.zst needs the zstandard package: pip install zstandard"
            ) from None
        return (lambda: zstandard.ZstdDecompressor().decompressobj()), _unzstd
    raise AssertionError(kind)


# --------------------------------------------------------------------------- output


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
        self.budget = budget  # bytes the disk can still take; None = unchecked
        self.written = 0
        self.files = 0
        self._made: set[str] = set()
        self._links: list[Member] = []
        self._pool = None
        self._pending: deque = deque()
        self._batch: list[tuple[Path, list, bool, str]] = []
        self._batch_bytes = 0

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _path(self, name: str) -> Path:
        path = self.top / name
        if len(os.fsencode(path)) >= PATH_MAX:
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
            pieces = list(self._counted(member, data))  # every check passes first
            self._hand_over(path, pieces, executable, member.name)
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
                raise Refused(
                    f"member {shown(member.name)} is larger than the "
                    f"{member.size:,} bytes it declares"
                )
            if self.budget is not None and self.written + len(piece) > self.budget:
                # What the disk would say a little later, said before filling it.
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(piece)
            yield piece
        if size != member.size:
            raise Refused(
                f"member {shown(member.name)} has {size:,} bytes, not the "
                f"{member.size:,} it declares (truncated or corrupt)"
            )

    def _hand_over(self, path: Path, pieces: list, executable: bool, name: str) -> None:
        self._batch.append((path, pieces, executable, name))
        self._batch_bytes += sum(len(p) for p in pieces)
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self._send_batch()

    def _send_batch(self) -> None:
        if not self._batch:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="colabmagic-write")
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


def _write_batch(batch: list[tuple[Path, list, bool, str]]) -> None:
    for path, pieces, executable, name in batch:
        _write_member(path, pieces, executable, name)


def _write_member(
    path: Path, pieces: Iterable[memoryview | bytes], executable: bool, name: str
) -> None:
    try:  # not `with _disk`: a Ctrl-C as it exits would strand the open file
        out = create_file(path, executable=executable)
    except OSError as error:
        _disk_error(name, error)
    with out:
        for piece in pieces:
            with _disk(name):
                write_all(out, piece)


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


# --------------------------------------------------------------------------- zip

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_EOCD64_LOC = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CDH = struct.Struct("<4s4B4HL2L5H2L")  # central directory header
_LFH = struct.Struct("<4s2B4HL2L2H")  # local file header
_ZIP_METHODS = {0: "stored", 8: "deflate"}


@dataclass
class ZipEntry:
    member: Member
    raw_name: bytes
    method: int
    flags: int
    crc: int
    csize: int
    offset: int  # of the local header, in the file


@dataclass
class ZipIndex:
    entries: list[ZipEntry]  # in file order
    plan: Plan
    data_end: int  # where the central directory starts
    cp437_names: int  # names decoded as cp437 (no UTF-8 flag, not ASCII)


def read_zip_index(size: int, pread: Callable[[int, int], bytes]) -> ZipIndex:
    """Parse and check the central directory of a zip of SIZE bytes: every member is
    vetted here, before any data is read."""
    if size < _EOCD.size:
        raise Refused("not a zip archive (too short)")
    tail_len = min(size, 65536 + _EOCD.size)
    tail = pread(size - tail_len, tail_len)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0 and at + _EOCD.size > len(tail):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise Refused("not a zip archive (no end-of-central-directory record)")
    eocd_pos = size - tail_len + at
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
    if disk != 0 or cd_disk != 0:
        raise Refused("zip archives that span several disks are not supported")
    loc = at - _EOCD64_LOC.size
    if loc >= 0 and tail[loc : loc + 4] == b"PK\x06\x07":
        # As zipfile does, take the zip64 record from just before its locator: the
        # offset the locator stores is wrong when a stub precedes the archive.
        eocd64_pos = eocd_pos - _EOCD64_LOC.size - _EOCD64.size
        rec = pread(eocd64_pos, _EOCD64.size) if eocd64_pos >= 0 else b""
        needs_zip64 = 0xFFFF in (count,) or 0xFFFFFFFF in (cd_size, cd_offset)
        if len(rec) == _EOCD64.size and rec[:4] == b"PK\x06\x06":
            fields = _EOCD64.unpack(rec)
            count, cd_size, cd_offset = fields[7], fields[8], fields[9]
            cd_end = eocd64_pos
        elif needs_zip64:
            raise Refused("the zip64 end record is missing or corrupt")
        else:
            cd_end = eocd_pos  # the "locator" was a member name's bytes, not a record
    else:
        cd_end = eocd_pos
    # Bytes before the archive (a self-extracting stub) shift every offset.
    shift = cd_end - cd_size - cd_offset
    if shift < 0 or cd_size > size or count > cd_size // _CDH.size + 1:
        raise Refused("the zip central directory is out of bounds")
    cd_start = cd_offset + shift
    cd = pread(cd_start, cd_size)
    if len(cd) != cd_size:
        raise Refused("the zip central directory is truncated")
    entries, cp437 = _parse_central_directory(cd, count, shift)
    plan = Plan()
    for entry in entries:
        plan.add(entry.member)
    entries.sort(key=lambda e: e.offset)
    end = cd_start
    for entry in reversed(entries):
        # Members must not overlap each other or the directory: overlapping entries
        # are how zip bombs multiply a few KB into terabytes.
        data_start = entry.offset + _LFH.size + len(entry.raw_name)
        if entry.offset < 0 or data_start + entry.csize > end:
            raise Refused(
                f"member {shown(entry.member.name)} overlaps another member or runs past "
                "the central directory (a zip bomb or a corrupt archive)"
            )
        end = entry.offset
    return ZipIndex(entries, plan, cd_start, cp437)


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, pos)
        if tag == 1:
            body = extra[pos + 4 : pos + 4 + length]
            values = []
            for want in (usize, csize, offset):
                if want == 0xFFFFFFFF:
                    if len(body) < 8 * (len(values) + 1):
                        raise Refused("a zip64 extra field is truncated")
                    values.append(struct.unpack_from("<Q", body, 8 * len(values))[0])
                else:
                    values.append(None)
            return (
                usize if values[0] is None else values[0],
                csize if values[1] is None else values[1],
                offset if values[2] is None else values[2],
            )
        pos += 4 + length
    return usize, csize, offset


def _parse_central_directory(cd: bytes, count: int, shift: int) -> tuple[list[ZipEntry], int]:
    entries = []
    cp437 = 0
    pos = 0
    records = 0
    while pos < len(cd):
        records += 1
        if len(cd) - pos < _CDH.size or cd[pos : pos + 4] != b"PK\x01\x02":
            raise Refused("the zip central directory is corrupt (bad magic number)")
        (_, _, made_by, _, _, flags, method, _, _, crc, csize, usize, nlen, elen, clen, _, _,
         ext_attr, offset) = _CDH.unpack_from(cd, pos)  # fmt: skip
        raw_name = cd[pos + _CDH.size : pos + _CDH.size + nlen]
        extra = cd[pos + _CDH.size + nlen : pos + _CDH.size + nlen + elen]
        pos += _CDH.size + nlen + elen + clen
        if pos > len(cd):
            raise Refused("the zip central directory is truncated")
        if flags & 0x800:
            name = raw_name.decode("utf-8", "surrogateescape")
        else:
            try:
                name = raw_name.decode("ascii")
            except UnicodeDecodeError:
                name = raw_name.decode("cp437")  # as zipfile and most zip tools do
                cp437 += 1
        if flags & 0x41:
            raise Refused(f"member {shown(name)} is encrypted")
        if method not in _ZIP_METHODS:
            raise Refused(f"member {shown(name)} uses unsupported compression method {method}")
        usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
        unix_mode = ext_attr >> 16 if made_by == 3 else 0
        is_dir = name.endswith("/") or stat.S_ISDIR(unix_mode)
        clean = clean_name(name, is_dir=is_dir)
        if clean is None:
            continue
        if is_dir:
            member = Member(clean, "dir")
        elif stat.S_ISLNK(unix_mode):
            if usize > MAX_LINK_TARGET:
                raise Refused(f"member {shown(name)} is a link with an oversized target")
            member = Member(clean, "symlink", size=usize, target=None)
        else:
            # Zip mode bits never make devices or FIFOs here: anything else is a file.
            mode = 0o755 if unix_mode & 0o100 else 0o644
            member = Member(clean, "file", size=usize, mode=mode)
        if method == 0 and csize != usize and not is_dir:
            raise Refused(f"member {shown(name)} is stored but its two sizes differ")
        entries.append(ZipEntry(member, raw_name, method, flags, crc, csize, offset + shift))
    if records != count:
        raise Refused(f"the zip central directory holds {records} entries but declares {count}")
    return entries, cp437


def zip_symlink_target(entry: ZipEntry, data: bytes) -> Member:
    target = data.decode("utf-8", "surrogateescape")
    member = Member(entry.member.name, "symlink", target=target)
    _check_symlink(member.name, target)
    return member


def stream_zip(
    index: ZipIndex, stream: Stream, writer: Writer, on_member: Callable[[], None] = lambda: None
) -> None:
    """Unpack the members of INDEX from STREAM (the zip's bytes from offset 0)."""
    import zlib

    for entry in index.entries:
        on_member()
        here = stream.tell()
        if here > entry.offset:
            raise Refused(f"member {shown(entry.member.name)} overlaps the member before it")
        stream.skip(entry.offset - here)  # data descriptors and gaps
        header = stream.read(_LFH.size)
        if len(header) < _LFH.size or header[:4] != b"PK\x03\x04":
            raise Refused(f"member {shown(entry.member.name)}: bad local header")
        nlen, elen = struct.unpack_from("<2H", header, 26)
        local_name = stream.read(nlen)
        if local_name != entry.raw_name:
            raise Refused(
                f"member {shown(entry.member.name)}: its local header names it "
                f"{shown(local_name.decode('utf-8', 'replace'))} (a mismatched archive)"
            )
        stream.skip(elen)
        member = entry.member
        if member.kind == "dir":
            stream.skip(entry.csize)
            writer.mkdir(member.name)
            continue
        pieces = _zip_data(entry, stream, zlib)
        if member.kind == "symlink":
            data = b"".join(bytes(p) for p in pieces)
            if len(data) != member.size:
                raise Refused(f"member {shown(member.name)} is a link of the wrong size")
            writer.link(zip_symlink_target(entry, data))
            continue
        writer.file(member, pieces)


def _zip_data(entry: ZipEntry, stream: Stream, zlib) -> Iterator[memoryview | bytes]:
    """The member's uncompressed bytes, CRC-checked, never more than declared + 1."""
    name = entry.member.name
    left = entry.csize
    crc = 0
    inflate = zlib.decompressobj(-15) if entry.method == 8 else None
    room = entry.member.size + 1  # one byte past the declared size proves a lie

    def expand(data: bytes | memoryview) -> bytes:
        try:
            # Never more than MAX_PIECE at once, nor one byte past the declared size:
            # a bomb stops here.  (room is at least 1: a max_length of 0 is "no limit".)
            return inflate.decompress(data, min(room, MAX_PIECE))
        except zlib.error as error:
            raise Refused(f"member {shown(name)} has corrupt deflate data: {error}") from None

    while left > 0:
        piece = stream.view(min(left, 1 << 20))
        if not piece:
            raise Refused(f"member {shown(name)} is truncated")
        left -= len(piece)
        while piece:
            if inflate is None:  # stored: its size was checked against the declared one
                out, piece = piece, b""
            else:
                out = expand(piece)
                piece = inflate.unconsumed_tail
            room -= len(out)
            crc = zlib.crc32(out, crc)
            yield out
            if room <= 0:
                return  # past the declared size: Writer refuses it
    while inflate is not None and not inflate.eof:
        out = expand(b"")  # what zlib still holds once the input has run out
        if not out:
            raise Refused(f"member {shown(name)} has truncated deflate data")
        room -= len(out)
        crc = zlib.crc32(out, crc)
        yield out
        if room <= 0:
            return
    if crc != entry.crc:
        raise Refused(f"member {shown(name)} fails its CRC check (corrupt)")


# --------------------------------------------------------------------------- tar


def tar_members(stream: Stream) -> Iterator[tuple[Member, int]]:
    """Vetted members of a tar stream with their data offsets, in archive order.

    tarfile parses the headers (ustar, GNU, pax); everything it would do on its own
    (devices, sparse files, absolute links) is refused here instead.
    """
    import tarfile

    try:
        archive = tarfile.TarFile(fileobj=stream, mode="r", tarinfo=_fast_tarinfo())
    except ColabMagicError:
        raise
    except Exception as error:  # ReadError, ValueError, OverflowError, UnicodeError, ...
        raise Refused(f"not a valid tar archive: {error}") from None
    iterator = iter(archive)
    while True:
        try:
            info = next(iterator)
        except StopIteration:
            break
        except ColabMagicError:
            raise
        except Exception as error:
            raise Refused(f"not a valid tar archive: {error}") from None
        member = _tar_member(info)
        if member is not None:
            yield member, info.offset_data
    _check_tar_end(stream, archive.offset)


# A ustar header as tarfile.TarInfo.frombuf reads it, in one unpack: name, mode, uid,
# gid, size, mtime, chksum, type, linkname, (magic, version), uname, gname,
# devmajor, devminor, prefix.
_TAR_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s8x32s32s8s8s155s12x")


@functools.cache
def _fast_tarinfo() -> type:
    """tarfile.TarInfo with a quicker frombuf for the plain header.

    tarfile parses every field with a Python loop over its bytes; on 10,000 small
    members that was the unpacking thread's largest cost.  Here one struct unpack and
    int(..., 8) per number do the same.  Anything that is not plain octal ASCII with
    an unsigned checksum (base-256 numbers, signed checksums, GNU sparse headers,
    garbage) goes to tarfile's own frombuf, so the results and errors are tarfile's.
    """
    import tarfile

    class FastTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf, encoding, errors):
            fast = _plain_header(cls, buf, encoding, errors)
            return fast if fast is not None else super().frombuf(buf, encoding, errors)

    return FastTarInfo


def _plain_header(cls, buf: bytes, encoding: str, errors: str):
    import tarfile

    if len(buf) != 512 or buf[156:157] == tarfile.GNUTYPE_SPARSE:
        return None
    (name, mode, uid, gid, size, mtime, chksum, kind, linkname, uname, gname, major, minor,
     prefix) = _TAR_HEADER.unpack(buf)  # fmt: skip
    try:
        numbers = [
            int(field.partition(b"\0")[0].strip() or b"0", 8)
            for field in (mode, uid, gid, size, mtime, chksum, major, minor)
        ]
    except ValueError:  # not octal ASCII: base-256, or garbage for tarfile to judge
        return None
    if numbers[5] != 256 + sum(buf) - sum(buf[148:156]):
        return None  # a signed checksum, an end block, or a bad one: tarfile decides
    obj = cls()
    obj.mode, obj.uid, obj.gid, obj.size, obj.mtime, obj.chksum = numbers[:6]
    obj.devmajor, obj.devminor = numbers[6:]
    obj.name = name.partition(b"\0")[0].decode(encoding, errors)
    obj.type = kind
    obj.linkname = linkname.partition(b"\0")[0].decode(encoding, errors)
    obj.uname = uname.partition(b"\0")[0].decode(encoding, errors)
    obj.gname = gname.partition(b"\0")[0].decode(encoding, errors)
    prefix_text = prefix.partition(b"\0")[0].decode(encoding, errors)
    # The rest as tarfile does it: a V7 directory is a file named with a slash, a
    # directory name loses its slashes, and a ustar prefix joins the name.
    if obj.type == tarfile.AREGTYPE and obj.name.endswith("/"):
        obj.type = tarfile.DIRTYPE
    if obj.isdir():
        obj.name = obj.name.rstrip("/")
    if prefix_text and obj.type not in tarfile.GNU_TYPES:
        obj.name = prefix_text + "/" + obj.name
    return obj


def _tar_member(info) -> Member | None:
    raw = info.name
    if info.isdir():
        clean = clean_name(raw, is_dir=True)
        return None if clean is None else Member(clean, "dir")
    clean = clean_name(raw)
    assert clean is not None
    if info.issparse():
        raise Refused(f"member {shown(raw)} is a sparse file (not supported)")
    if info.isreg():
        mode = 0o755 if info.mode & 0o100 else 0o644
        return Member(clean, "file", size=info.size, mode=mode)
    if info.issym():
        return Member(clean, "symlink", target=info.linkname)
    if info.islnk():
        if not info.linkname:
            raise Refused(f"member {shown(raw)} is a hard link with an empty target")
        if info.linkname.startswith("/"):
            raise Refused(f"member {shown(raw)} is a hard link to an absolute path")
        try:
            target = clean_name(info.linkname)
        except Refused:
            raise Refused(
                f"member {shown(raw)} is a hard link to {shown(info.linkname)}, an unsafe name"
            ) from None
        return Member(clean, "hardlink", target=target or "")
    kind = {b"3": "a character device", b"4": "a block device", b"6": "a FIFO"}
    raise Refused(f"member {shown(raw)} is {kind.get(info.type, 'of an unsupported type')}")


def _check_tar_end(stream: Stream, offset: int) -> None:
    """tarfile stops quietly at a corrupt header after the first member; tell a real
    end-of-archive (zero blocks) from a broken one."""
    last = stream.last_read
    if stream.tell() - len(last) == offset:
        block = last[:512]
    else:
        try:
            stream.seek(offset)
        except OSError:  # behind what the stream still holds: not a clean end either
            raise Refused(f"corrupt tar archive near byte {offset:,}") from None
        block = stream.read(512)
    if block.strip(b"\0"):
        raise Refused(f"corrupt tar header at byte {offset:,} (bad checksum or truncated)")


def trailing_bytes(stream: Stream) -> int:
    """Count non-zero bytes after the end of a tar archive (hidden data is ignored)."""
    extra = 0
    while True:
        piece = stream.view(1 << 20)
        if not piece:
            return extra
        if bytes(piece).strip(b"\0"):
            extra += len(piece)
