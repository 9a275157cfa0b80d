"""The member index of an archive read in place: a few arrays and one names blob.

A million members cost about 40 bytes each plus their names, not a Python object
apiece: the names live in one ``bytes`` (UTF-8, undecodable bytes kept as
surrogates), found by binary search over an array sorted by name.  The index is
built by `colabmagic.unpack`'s own readers, so an archive is judged exactly as
``%stage`` judges it (`read_zip_index` and its `Plan`; `tar_members` and a `Plan`),
and saved in a local cache keyed by the archive's path, size and mtime, so that the
next open (another session, a DataLoader worker) reads it back instead of the archive.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import struct
from array import array
from collections.abc import Callable
from pathlib import Path

from ..errors import ColabMagicError
from ..unpack.members import Plan, Refused, shown
from ..unpack.stream import MAX_HEADER_READ  # a pax body is read whole: the same bound

VERSION = 1
_MAGIC = b"colabmagic-index\n"
UTF8 = 0x80  # in `methods`: the zip member's name carries the UTF-8 flag

Pread = Callable[[int, int], bytes]


def encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class MemberIndex:
    """The files of one archive: names, where their bytes are, sizes and CRCs.

    ``kind == "zip"``: ``offsets`` are local-header offsets and ``methods`` the
    compression (0 stored, 8 deflate, UTF8 bit).  ``kind == "tar"``: ``offsets`` are
    data offsets, ``csizes == usizes`` and ``crcs`` are 0 (a tar has none).
    """

    _ARRAYS = (("ends", "Q"), ("offsets", "Q"), ("csizes", "Q"), ("usizes", "Q"),
               ("crcs", "I"), ("methods", "B"), ("order", "I"))  # fmt: skip

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.blob = b""
        self.ends = array("Q")  # end of each name in blob (the start is the one before)
        self.offsets = array("Q")
        self.csizes = array("Q")
        self.usizes = array("Q")
        self.crcs = array("I")
        self.methods = array("B")
        self.order = array("I")  # member numbers sorted by name bytes
        self.warnings: list[str] = []

    def __len__(self) -> int:
        return len(self.ends)

    def name_bytes(self, i: int) -> bytes:
        return self.blob[self.ends[i - 1] if i else 0 : self.ends[i]]

    def name(self, i: int) -> str:
        return self.name_bytes(i).decode("utf-8", "surrogateescape")

    def names(self) -> list[str]:
        blob, ends = self.blob, self.ends
        starts = [0, *ends[:-1]] if ends else []
        pairs = zip(starts, ends, strict=True)
        return [blob[a:b].decode("utf-8", "surrogateescape") for a, b in pairs]

    def find(self, name: str) -> int:
        """The member number of NAME, or -1."""
        key = encode(name)
        at = bisect.bisect_left(self.order, key, key=self.name_bytes)
        if at < len(self.order) and self.name_bytes(self.order[at]) == key:
            return self.order[at]
        return -1

    # ------------------------------------------------------------------ building

    def _finish(self, names: list[bytes]) -> None:
        self.blob = b"".join(names)
        ends = array("Q")
        total = 0
        for n in names:
            total += len(n)
            ends.append(total)
        self.ends = ends
        self.order = array("I", sorted(range(len(names)), key=names.__getitem__))

    # ------------------------------------------------------------------ the cache file

    def save(self, path: Path) -> None:
        from ..fsio import atomic_write, write_all

        arrays = [[attr, len(getattr(self, attr))] for attr, _ in self._ARRAYS]
        header = {"version": VERSION, "kind": self.kind, "blob": len(self.blob),
                  "warnings": self.warnings, "arrays": arrays}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, sync=False) as out:
            write_all(out, _MAGIC + json.dumps(header).encode() + b"\n")
            write_all(out, self.blob)
            for attr, _ in self._ARRAYS:
                write_all(out, memoryview(getattr(self, attr)).cast("B"))

    @classmethod
    def load(cls, path: Path) -> MemberIndex | None:
        """The index saved at PATH, or None if there is none (or it is unreadable)."""
        try:
            with open(path, "rb") as f:
                if f.readline() != _MAGIC:
                    return None
                header = json.loads(f.readline())
                if header.get("version") != VERSION:
                    return None
                index = cls(header["kind"])
                index.warnings = header["warnings"]
                index.blob = f.read(header["blob"])
                lengths = dict(header["arrays"])
                for attr, code in cls._ARRAYS:
                    values = array(code)
                    values.frombytes(f.read(lengths[attr] * values.itemsize))
                    if len(values) != lengths[attr]:
                        return None
                    setattr(index, attr, values)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if len(index.blob) != header["blob"] or len({len(index.ends), len(index.order)}) != 1:
            return None
        return index


def cache_path(cache_dir: Path, source: Path, size: int, mtime_ns: int) -> Path:
    """Where the index of SOURCE at this SIZE and MTIME is kept."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(source))).hexdigest()[:24]
    return cache_dir / "index" / f"{digest}-{size}-{mtime_ns}.idx"


def forget_older(path: Path) -> None:
    """Remove the indexes of earlier versions of the same archive as PATH."""
    prefix = path.name.split("-", 1)[0] + "-"
    with contextlib.suppress(OSError):
        for old in path.parent.iterdir():
            if old.name.startswith(prefix) and old.name != path.name:
                old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- zip


def build_zip(size: int, pread: Pread) -> MemberIndex:
    """The index of a zip: its central directory read once and vetted by `%stage`'s
    own reader (names, duplicates, links, encryption, methods, overlaps)."""
    from ..unpack.zip import read_zip_index, zip_symlink_target

    zindex = read_zip_index(size, pread)
    index = MemberIndex("zip")
    names = []
    for entry in zindex.entries:  # in file order
        if entry.member.kind == "symlink":
            # Its target is its data: judged here, as %stage judges it, though links
            # are not listed (a link is not a sample).
            data = read_zip_member(pread, entry.offset, entry.raw_name, entry.csize,
                                   entry.member.size, entry.crc, entry.method)  # fmt: skip
            zip_symlink_target(entry, data)
        if entry.member.kind != "file":
            continue
        names.append(encode(entry.member.name))
        index.offsets.append(entry.offset)
        index.csizes.append(entry.csize)
        index.usizes.append(entry.member.size)
        index.crcs.append(entry.crc)
        index.methods.append(entry.method | (UTF8 if entry.flags & 0x800 else 0))
    if zindex.cp437_names:
        index.warnings.append(
            f"{zindex.cp437_names} member names had no UTF-8 flag and were decoded as "
            "cp437, as zipfile does"
        )
    index._finish(names)
    return index


_LFH = struct.Struct("<4s2B4HL2L2H")  # zip local file header
_LOCAL_EXTRA_GUESS = 64  # read with the header, so a member usually costs one read


def read_zip_member(
    pread: Pread, at: int, name: bytes, csize: int, usize: int, crc: int, method: int
) -> bytes:
    """The bytes of the zip member whose local header is at AT: one read (usually),
    inflated to no more than its declared size, CRC-checked."""
    import zlib

    def refuse(why: str) -> Refused:
        return Refused(f"member {shown(name.decode('utf-8', 'surrogateescape'))} {why}")

    buf = pread(at, _LFH.size + len(name) + _LOCAL_EXTRA_GUESS + csize)
    if len(buf) < _LFH.size or buf[:4] != b"PK\x03\x04":
        raise refuse("has a bad local header")
    nlen, elen = struct.unpack_from("<2H", buf, 26)
    start = _LFH.size + nlen + elen
    if len(buf) < start + csize:
        buf += pread(at + len(buf), start + csize - len(buf))
        if len(buf) < start + csize:
            raise refuse("is truncated")
    if buf[_LFH.size : _LFH.size + nlen] != name and not _same_name(
        buf[_LFH.size : _LFH.size + nlen], name, method
    ):
        raise refuse("is named otherwise by its local header (a mismatched archive)")
    if method & 0x7F == 8:
        inflate = zlib.decompressobj(-15)
        try:
            # A byte past the declared size proves a lie.
            out = inflate.decompress(memoryview(buf)[start : start + csize], usize + 1)
        except zlib.error as error:
            raise refuse(f"has corrupt deflate data: {error}") from None
        if len(out) != usize or not inflate.eof:
            raise refuse("does not expand to its declared size")
    else:
        out = buf[start : start + csize]
    if zlib.crc32(out) != crc:
        raise refuse("fails its CRC check (corrupt)")
    return out


def _same_name(local: bytes, name: bytes, method: int) -> bool:
    """Whether a local header's raw name is the member the central directory named
    (NAME: the raw name, or the cleaned one the index keeps)."""
    if local == name:
        return True
    from ..unpack.members import clean_name

    if method & UTF8:
        text = local.decode("utf-8", "surrogateescape")
    else:
        try:
            text = local.decode("ascii")
        except UnicodeDecodeError:
            text = local.decode("cp437")
    try:
        return encode(clean_name(text) or "") == name
    except Refused:
        return False


# --------------------------------------------------------------------------- tar


class PreadFile:
    """A read-only file object over PREAD, for tarfile: headers are read, data is
    seeked past (one pass over the headers, not over the bytes)."""

    BUFFER = 1 << 20  # headers of small members lie close: one read serves many

    def __init__(self, size: int, pread: Pread) -> None:
        self.size = size
        self._pread = pread
        self._pos = 0
        self._buf = b""
        self._buf_at = 0
        self.name = None
        self.last_read = b""  # what unpack.tar's end-of-archive check looks at

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > MAX_HEADER_READ:
            raise Refused(f"a header of {n:,} bytes at byte {self._pos:,} (a memory bomb?)")
        n = min(n, max(0, self.size - self._pos))
        at = self._pos - self._buf_at
        if not 0 <= at <= len(self._buf) - n:
            self._buf = self._pread(self._pos, max(n, self.BUFFER))
            self._buf_at, at = self._pos, 0
        data = self._buf[at : at + n]
        self._pos += len(data)
        self.last_read = data
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def build_tar(size: int, pread: Pread) -> MemberIndex:
    """The index of a plain tar: one pass over its headers by `%stage`'s own tar
    reader, every member judged against a `Plan` as staging judges it."""
    from ..unpack.tar import tar_members

    index = MemberIndex("tar")
    plan = Plan()
    names: list[bytes] = []
    links: list[tuple[int, str]] = []  # (member number, target name) of hard links
    for member, offset in tar_members(PreadFile(size, pread)):  # type: ignore[arg-type]
        plan.add(member)
        if member.kind == "file":
            if offset + member.size > size:
                raise Refused(f"member {shown(member.name)} is truncated")
            index.offsets.append(offset)
            index.csizes.append(member.size)
            index.usizes.append(member.size)
        elif member.kind == "hardlink":
            links.append((len(names), member.target or ""))
            for values in (index.offsets, index.csizes, index.usizes):
                values.append(0)  # filled in from the target below
        else:
            continue  # folders; symbolic links are not listed
        index.crcs.append(0)
        index.methods.append(0)
        names.append(encode(member.name))
    index._finish(names)
    for i, target in links:
        # The Plan made sure the target is an earlier file of the archive.
        j = index.find(target)
        if j < 0:
            raise ColabMagicError(f"member {shown(index.name(i))}: hard link target missing")
        index.offsets[i], index.csizes[i], index.usizes[i] = (
            index.offsets[j], index.csizes[j], index.usizes[j])  # fmt: skip
    return index
