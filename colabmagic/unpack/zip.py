"""Zip: the central directory read and vetted before any data, then the members
streamed front to back.

`read_zip_index` parses the central directory (zip64 and self-extracting stubs
included) and checks every member as a whole (`Plan`) before a byte is written;
`stream_zip` then reads the members in file order from a `Stream`, CRC-checked and
held to their declared sizes.
"""

from __future__ import annotations

import stat
import struct
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from .members import MAX_LINK_TARGET, Member, Plan, Refused, check_symlink, clean_name, shown
from .stream import MAX_PIECE, Stream, deflate_module
from .writer import Writer

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
    flags: int  # of the general-purpose flags, only the UTF-8 one (0x800) is kept
    crc: int
    csize: int
    offset: int  # of the local header, in the file


# What one byte of `ZipEntries.info` says of a member.
_IS_DIR, _IS_LINK, _EXECUTABLE, _UTF8 = 1, 2, 4, 8


class ZipEntries(Sequence):
    """The members of a zip in file order, as columns: one array per field, and the
    raw names in one blob.  A `ZipEntry` is made when one is asked for.

    A million members as ZipEntry and Member objects took about 400 bytes each; as
    columns they take their name's bytes and 30 more.  Names' ends and sizes are
    32-bit until one does not fit.
    """

    def __init__(self) -> None:
        self.blob = bytearray()  # raw names, as the central directory has them
        self.ends = array("I")
        self.offsets = array("Q")
        self.csizes = array("I")
        self.usizes = array("I")
        self.crcs = array("I")
        self.methods = array("B")
        self.info = array("B")
        self.order: array | None = None  # entry numbers by offset, when not already so

    def __len__(self) -> int:
        return len(self.ends)

    def __iter__(self) -> Iterator[ZipEntry]:
        for k in range(len(self.ends)):
            yield self._entry(k if self.order is None else self.order[k])

    def __getitem__(self, k: int) -> ZipEntry:  # type: ignore[override]
        if not 0 <= k < len(self.ends):
            raise IndexError(k)
        return self._entry(k if self.order is None else self.order[k])

    def _entry(self, i: int) -> ZipEntry:
        raw = self.raw_name(i)
        return ZipEntry(
            self.member(i, raw),
            raw,
            self.methods[i],
            0x800 if self.info[i] & _UTF8 else 0,
            self.crcs[i],
            self.csizes[i],
            self.offsets[i],
        )

    def raw_name(self, i: int) -> bytes:
        return bytes(self.blob[self.ends[i - 1] if i else 0 : self.ends[i]])

    def member(self, i: int, raw: bytes | None = None) -> Member:
        """Entry I (in directory order) as a Member; its name was vetted when read."""
        info = self.info[i]
        name = _decoded(self.raw_name(i) if raw is None else raw, info & _UTF8)
        if name.endswith("/") or "//" in name or "/." in name or name.startswith("."):
            name = "/".join(part for part in name.split("/") if part not in ("", "."))
        if info & _IS_DIR:
            return Member(name, "dir")
        if info & _IS_LINK:
            return Member(name, "symlink", size=self.usizes[i], target=None)
        return Member(
            name, "file", size=self.usizes[i], mode=0o755 if info & _EXECUTABLE else 0o644
        )

    def append(self, raw: bytes, method: int, info: int, crc: int, csize: int, usize: int,
               offset: int) -> None:  # fmt: skip
        self.blob += raw
        self.methods.append(method)
        self.info.append(info)
        self.crcs.append(crc)
        self.offsets.append(offset)
        try:
            self.ends.append(len(self.blob))
            self.csizes.append(csize)
            self.usizes.append(usize)
        except OverflowError:  # past 4 GiB: the 32-bit columns are 64-bit from now on
            n = len(self.offsets) - 1
            for attr, value in (("ends", len(self.blob)), ("csizes", csize), ("usizes", usize)):
                column = array("Q", getattr(self, attr)[:n])
                column.append(value)
                setattr(self, attr, column)

    def sort_by_offset(self) -> None:
        offsets = self.offsets
        if any(offsets[i] > offsets[i + 1] for i in range(len(offsets) - 1)):
            self.order = array("I", sorted(range(len(offsets)), key=offsets.__getitem__))

    def offset(self, k: int) -> int:
        """The local header offset of the K-th entry in file order."""
        return self.offsets[k if self.order is None else self.order[k]]


def _decoded(raw: bytes, utf8: int) -> str:
    if utf8:
        return raw.decode("utf-8", "surrogateescape")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.decode("cp437")  # as zipfile and most zip tools do


@dataclass
class ZipIndex:
    entries: ZipEntries  # in file order
    plan: Plan  # the archive's members were added to it
    data_end: int  # where the central directory starts
    cp437_names: int  # names decoded as cp437 (no UTF-8 flag, not ASCII)
    declared: int = 0  # bytes the archive's files declare
    new_top: list[str] = field(default_factory=list)  # top-level names new to the plan


def read_zip_index(
    size: int, pread: Callable[[int, int], bytes], plan: Plan | None = None
) -> ZipIndex:
    """Parse and check the central directory of a zip of SIZE bytes: every member is
    vetted here, before any data is read, and added to PLAN (a new one, or one shared
    with other archives)."""
    if size < _EOCD.size:
        raise Refused("not a zip archive (too short)")
    tail_len = min(size, 65536 + _EOCD.size)
    tail = pread(size - tail_len, tail_len)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0 and at + _EOCD.size > len(tail):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        if pread(0, 4) == b"PK\x03\x04":
            raise Refused(
                "the zip archive looks truncated: it starts with a member but has no "
                "end-of-central-directory record (an upload or copy cut short?)"
            )
        raise Refused("not a zip archive (no end-of-central-directory record)")
    eocd_pos = size - tail_len + at
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
    if disk != 0 or cd_disk != 0:
        raise Refused("zip archives that span several disks are not supported")
    cd_end = eocd_pos
    loc = at - _EOCD64_LOC.size
    if loc >= 0 and tail[loc : loc + 4] == b"PK\x06\x07":
        needed = count == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset)
        zip64 = _zip64_end(pread, eocd_pos - _EOCD64_LOC.size, tail[loc:at], needed)
        if zip64 is not None:  # else the "locator" was a member name's bytes
            cd_end, count, cd_size, cd_offset = zip64
    elif 0xFFFFFFFF in (cd_size, cd_offset):
        raise Refused(
            "the zip end record leaves its directory's place to a zip64 end record, "
            "but there is none before it (a corrupt archive)"
        )
    # Bytes before the archive (a self-extracting stub) shift every offset.
    shift = cd_end - cd_size - cd_offset
    if shift < 0 or cd_size > size:
        raise Refused(
            "the zip central directory is out of bounds: the end record places it "
            "outside the file (a corrupt or truncated archive)"
        )
    if count > cd_size // _CDH.size + 1:
        raise Refused(
            f"the zip end record declares {_entries(count)}, more than its central "
            f"directory of {cd_size:,} bytes can hold (a wrong entry count: a corrupt archive)"
        )
    cd_start = cd_offset + shift
    entries, cp437 = _parse_central_directory(pread, cd_start, cd_size, count, shift)
    plan = Plan() if plan is None else plan
    tops, declared = len(plan.top), plan.declared
    for i in range(len(entries)):
        plan.add(entries.member(i))
    entries.sort_by_offset()
    end = cd_start
    for k in range(len(entries) - 1, -1, -1):
        # Members must not overlap each other or the directory: overlapping entries
        # are how zip bombs multiply a few KB into terabytes.  The local header's own
        # name must be the directory's (stream_zip checks), so this bound is safe.
        i = k if entries.order is None else entries.order[k]
        offset = entries.offsets[i]
        name_len = entries.ends[i] - (entries.ends[i - 1] if i else 0)
        if offset + _LFH.size + name_len + entries.csizes[i] > end:
            _refuse_overlap(entries[k], end, cd_start, pread)
        end = offset
    new_top = list(plan.top)[tops:]
    return ZipIndex(entries, plan, cd_start, cp437, plan.declared - declared, new_top)


def _entries(n: int) -> str:
    return f"{n:,} entry" if n == 1 else f"{n:,} entries"


def _zip64_end(
    pread: Callable[[int, int], bytes], loc_pos: int, locator: bytes, needed: bool
) -> tuple[int, int, int, int] | None:
    """(where the zip64 end record starts, entry count, directory size and offset)
    for the locator at LOC_POS, or None when there is no record and none is NEEDED."""
    _, rec_disk, rec_offset, disks = _EOCD64_LOC.unpack(locator)
    several = "zip archives that span several disks are not supported"
    # As zipfile does, look first just before the locator: the offset the locator
    # stores is wrong when a stub precedes the archive.  Then where the locator says:
    # a record with an extensible data sector is longer than the fixed part.
    for pos in (loc_pos - _EOCD64.size, rec_offset):
        if pos < 0 or pos + _EOCD64.size > loc_pos:
            continue
        rec = pread(pos, _EOCD64.size)
        if len(rec) == _EOCD64.size and rec[:4] == b"PK\x06\x06":
            fields = _EOCD64.unpack(rec)
            if rec_disk != 0 or disks > 1 or fields[4] != 0 or fields[5] != 0:
                raise Refused(several)
            return pos, fields[7], fields[8], fields[9]
    if not needed:
        return None
    if rec_disk != 0 or disks > 1:
        raise Refused(several)
    raise Refused("the zip64 end record is missing or corrupt")


def _refuse_overlap(entry: ZipEntry, end: int, cd_start: int, pread) -> NoReturn:
    """Say what is really wrong with a member whose data does not fit before END (the
    next member, or the central directory at CD_START): one local header is read."""
    name = shown(entry.member.name)
    if entry.offset < 0 or entry.offset >= cd_start:
        raise Refused(
            f"member {name} is said to start at byte {entry.offset:,}, outside the "
            "members' data (a corrupt or truncated archive)"
        )
    header = pread(entry.offset, _LFH.size)
    if len(header) < _LFH.size or header[:4] != b"PK\x03\x04":
        raise Refused(
            f"member {name} has no local header at byte {entry.offset:,} (a corrupt archive)"
        )
    nlen = struct.unpack_from("<H", header, 26)[0]
    local_name = pread(entry.offset + _LFH.size, nlen)
    if local_name != entry.raw_name:
        raise Refused(_mismatch(entry, local_name))
    if end == cd_start:
        raise Refused(
            f"member {name} runs past the start of the central directory "
            "(a corrupt or truncated archive)"
        )
    raise Refused(f"member {name} overlaps the member after it (a zip bomb or a corrupt archive)")


def _mismatch(entry: ZipEntry, local_name: bytes) -> str:
    return (
        f"member {shown(entry.member.name)}: its local header names it "
        f"{shown(local_name.decode('utf-8', 'replace'))} (a mismatched archive)"
    )


# The fields a zip64 extra field may hold, in order, each only when its 32-bit field
# in the central directory holds the marker 0xFFFFFFFF (APPNOTE 4.5.3).  A fourth, the
# disk number, comes last and is not needed here: a zip that spans disks is refused.
_ZIP64_FIELDS = ("uncompressed size", "compressed size", "offset")


def _zip64_extra(name: str, extra: bytes, *fields: int) -> tuple[int, int, int]:
    """The member's (uncompressed size, compressed size, local header offset), those
    marked 0xFFFFFFFF read from its zip64 extra field, which holds only the marked ones:
    a member past 4 GiB in a zip that zipfile or Info-ZIP wrote has just its offset."""
    marked = [value == 0xFFFFFFFF for value in fields]
    if not any(marked):
        return fields
    wanted = " and ".join(what for what, mark in zip(_ZIP64_FIELDS, marked, strict=True) if mark)
    body = _extra_field(extra, 1)
    if body is None:
        raise Refused(
            f"member {shown(name)} marks its {wanted} as kept in a zip64 extra field, "
            "but has no such field (a corrupt archive)"
        )
    if len(body) < 8 * sum(marked):
        raise Refused(
            f"member {shown(name)} has a zip64 extra field of {len(body)} bytes, too short "
            f"to hold its {wanted} ({8 * sum(marked)} bytes; a corrupt archive)"
        )
    values = list(fields)
    pos = 0
    for i, mark in enumerate(marked):
        if mark:
            values[i] = struct.unpack_from("<Q", body, pos)[0]
            pos += 8
    return values[0], values[1], values[2]


def _extra_field(extra: bytes, tag: int) -> bytes | None:
    """The body of the first extra field TAG, or None."""
    pos = 0
    while pos + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, pos)
        if kind == tag:
            return extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return None


_WINDOW = 4 << 20  # the central directory is read this much at a time


def _parse_central_directory(
    pread: Callable[[int, int], bytes], cd_start: int, cd_size: int, count: int, shift: int
) -> tuple[ZipEntries, int]:
    entries = ZipEntries()
    cp437 = 0
    buf, base = b"", 0  # BUF holds the directory's bytes from BASE on
    pos = 0
    records = 0

    def window(need: int) -> tuple[bytes, int]:
        n = min(max(need, _WINDOW), cd_size - pos)
        data = pread(cd_start + pos, n)
        if len(data) != n:
            raise Refused("the zip central directory is truncated")
        return data, pos

    while pos < cd_size:
        records += 1
        if base + len(buf) - pos < _CDH.size:
            buf, base = window(_CDH.size)
        at = pos - base
        if len(buf) - at < _CDH.size or buf[at : at + 4] != b"PK\x01\x02":
            raise Refused("the zip central directory is corrupt (bad magic number)")
        (_, _, made_by, _, _, flags, method, _, _, crc, csize, usize, nlen, elen, clen, _, _,
         ext_attr, offset) = _CDH.unpack_from(buf, at)  # fmt: skip
        length = _CDH.size + nlen + elen + clen
        if pos + length > cd_size:
            raise Refused("the zip central directory is truncated")
        if at + length > len(buf):
            buf, base = window(length)
            at = 0
        raw_name = buf[at + _CDH.size : at + _CDH.size + nlen]
        extra = buf[at + _CDH.size + nlen : at + _CDH.size + nlen + elen]
        pos += length
        name = _decoded(raw_name, flags & 0x800)
        if not flags & 0x800 and not raw_name.isascii():
            cp437 += 1
        if flags & 0x41:
            raise Refused(f"member {shown(name)} is encrypted")
        if method not in _ZIP_METHODS:
            raise Refused(f"member {shown(name)} uses unsupported compression method {method}")
        usize, csize, offset = _zip64_extra(name, extra, usize, csize, offset)
        unix_mode = ext_attr >> 16 if made_by == 3 else 0
        is_dir = name.endswith("/") or stat.S_ISDIR(unix_mode)
        clean = clean_name(name, is_dir=is_dir)
        if clean is None:
            continue
        if is_dir:
            info = _IS_DIR
        elif stat.S_ISLNK(unix_mode):
            if usize > MAX_LINK_TARGET:
                raise Refused(f"member {shown(name)} is a link with an oversized target")
            info = _IS_LINK
        else:
            # Zip mode bits never make devices or FIFOs here: anything else is a file.
            info = _EXECUTABLE if unix_mode & 0o100 else 0
        if method == 0 and csize != usize and not is_dir:
            raise Refused(f"member {shown(name)} is stored but its two sizes differ")
        if flags & 0x800:
            info |= _UTF8
        entries.append(raw_name, method, info, crc, csize, usize, offset + shift)
    if records != count:
        raise Refused(
            f"the zip central directory holds {_entries(records)}, but its end record "
            f"declares {count:,} (a corrupt archive)"
        )
    return entries, cp437


def zip_symlink_target(entry: ZipEntry, data: bytes) -> Member:
    target = data.decode("utf-8", "surrogateescape")
    member = Member(entry.member.name, "symlink", target=target)
    check_symlink(member.name, target)
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
        # The header and the name it should hold, in one view (no copy, no join).
        header = stream.view(_LFH.size + len(entry.raw_name))
        if len(header) < _LFH.size or header[:4] != b"PK\x03\x04":
            raise Refused(f"member {shown(entry.member.name)}: bad local header")
        nlen, elen = struct.unpack_from("<2H", header, 26)
        if nlen != len(entry.raw_name) or header[_LFH.size :] != entry.raw_name:
            local_name = bytes(header[_LFH.size : _LFH.size + nlen])
            raise Refused(_mismatch(entry, local_name + stream.read(nlen - len(local_name))))
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


# zlib.crc32 lets go of the GIL for more than 5 KiB.  For a small member that costs
# more than the sum: the unpacking thread then waits to take the GIL back from the
# writer threads (about 0.1 ms a member on 2 busy cores: 1 s for 10,000 members).
# Summed in steps below that size it keeps the GIL; large pieces still let it go.
_CRC_STEP = 4096
_CRC_HELD = 256 << 10


def _crc32(zlib, data: bytes | memoryview, crc: int) -> int:
    n = len(data)
    if n <= _CRC_STEP or n > _CRC_HELD:
        return zlib.crc32(data, crc)
    view = memoryview(data)
    for at in range(0, n, _CRC_STEP):
        crc = zlib.crc32(view[at : at + _CRC_STEP], crc)
    return crc


def _zip_data(entry: ZipEntry, stream: Stream, zlib) -> Iterator[memoryview | bytes]:
    """The member's uncompressed bytes, CRC-checked, never more than declared + 1."""
    name = entry.member.name
    left = entry.csize
    crc = 0
    inflater = deflate_module()  # zlib, or isal's: the CRC stays zlib's (see _crc32)
    inflate = inflater.decompressobj(-15) if entry.method == 8 else None
    room = entry.member.size + 1  # one byte past the declared size proves a lie

    def expand(data: bytes | memoryview) -> bytes:
        try:
            # Never more than MAX_PIECE at once, nor one byte past the declared size:
            # a bomb stops here.  (room is at least 1: a max_length of 0 is "no limit".)
            return inflate.decompress(data, min(room, MAX_PIECE))
        except inflater.error as error:
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
            crc = _crc32(zlib, out, crc)
            yield out
            if room <= 0:
                return  # past the declared size: Writer refuses it
    while inflate is not None and not inflate.eof:
        out = expand(b"")  # what zlib still holds once the input has run out
        if not out:
            raise Refused(f"member {shown(name)} has truncated deflate data")
        room -= len(out)
        crc = _crc32(zlib, out, crc)
        yield out
        if room <= 0:
            return
    if crc != entry.crc:
        raise Refused(f"member {shown(name)} fails its CRC check (corrupt)")
