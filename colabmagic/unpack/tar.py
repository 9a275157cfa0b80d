"""Tar: members vetted as they arrive, and the member loop that writes them.

tarfile parses the headers (ustar, GNU, pax), with a faster parser for the plain
ustar header; everything tarfile would do on its own (devices, sparse files,
absolute links) is refused here instead.  A tar has no index: `unpack_tar` checks
each member against the Plan as it arrives and hands it to the Writer, which only
writes under a work folder that is moved into place once the whole archive passed.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator

from ..errors import ColabMagicError
from .members import Member, Plan, Refused, clean_name, shown
from .stream import Stream, article, sniff
from .writer import Writer


def tar_members(stream: Stream) -> Iterator[tuple[Member, int]]:
    """Vetted members of a tar stream with their data offsets, in archive order.

    tarfile parses the headers (ustar, GNU, pax); everything it would do on its own
    (devices, sparse files, absolute links) is refused here instead.  The archive must
    end with its end-of-archive blocks: one that stops after a member was cut short.
    """
    import tarfile

    head = _head(stream)
    try:
        archive = tarfile.TarFile(fileobj=stream, mode="r", tarinfo=_fast_tarinfo())
    except ColabMagicError:
        raise
    except Exception as error:  # ReadError, ValueError, OverflowError, UnicodeError, ...
        raise Refused(_not_a_tar(head) or f"not a valid tar archive: {error}") from None
    last = None
    while True:
        try:
            info = archive.next()
        except ColabMagicError:
            raise
        except Exception as error:
            raise Refused(f"not a valid tar archive: {error}") from None
        # tarfile keeps every TarInfo it read in `members` (a million archive members
        # were most of a gigabyte); the Plan holds what is needed of each, compactly.
        archive.members.clear()
        if info is None:
            break
        last = info.name
        member = _tar_member(info)
        if member is not None:
            yield member, info.offset_data
    _check_tar_end(stream, archive.offset, last)


def _head(stream: Stream) -> bytes:
    """The first bytes of STREAM, left unread (a `Stream` peeks; a file seeks back)."""
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return peek(16)
    head = stream.read(16)
    stream.seek(0)
    return head


def _not_a_tar(head: bytes) -> str | None:
    """What the archive really is, when its first bytes are another format's magic."""
    found = sniff(head)
    if found is None:
        return None
    if found == "zip":
        return "this is a zip archive, not a tar (its first bytes say so): use --format zip"
    return (
        f"this is {article(found)}-compressed archive, not a plain tar (its first bytes "
        "say so): use --format tar, which reads compressed tars too"
    )


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


def _check_tar_end(stream: Stream, offset: int, last: str | None) -> None:
    """Hold the archive to its end: tarfile stops quietly at a corrupt header after the
    first member, and at the end of the data after any member.  Only a zero block at
    OFFSET, and a second one after it, mark a complete archive (POSIX, and what GNU
    tar, bsdtar and tarfile write); an archive cut after member LAST has neither."""
    data = stream.last_read
    if stream.tell() - len(data) == offset:
        block = data[:512]
    else:
        try:
            stream.seek(offset)
        except OSError:  # behind what the stream still holds: not a clean end either
            raise Refused(f"corrupt tar archive near byte {offset:,}") from None
        block = stream.read(512)
    if len(block) == 512 and block.strip(b"\0"):
        raise Refused(f"corrupt tar header at byte {offset:,} (bad checksum or truncated)")
    stream.seek(offset + len(block))
    second = stream.read(512) if len(block) == 512 else b""
    if len(second) < 512:
        where = f"after member {shown(last)}" if last is not None else "before any member"
        blocks = "end-of-archive blocks" if len(block) < 512 else "second end-of-archive block"
        raise Refused(f"the archive ends {where} without its {blocks}: it looks truncated")
    if second.strip(b"\0"):
        raise Refused(
            f"a lone zero block at byte {offset:,} is followed by more data, not by a second "
            "one (a damaged archive, or two joined wrongly)"
        )


def trailing_bytes(stream: Stream) -> int:
    """Count non-zero bytes after the end of a tar archive (hidden data is ignored)."""
    extra = 0
    while True:
        piece = stream.view(1 << 20)
        if not piece:
            return extra
        if bytes(piece).strip(b"\0"):
            extra += len(piece)


def unpack_tar(
    stream: Stream,
    writer: Writer,
    *,
    plan: Plan | None = None,
    on_top: Callable[[str], None] = lambda name: None,
    on_member: Callable[[], None] = lambda: None,
) -> Plan:
    """Unpack the tar in STREAM through WRITER, each member checked against PLAN (a
    new one, or one shared with other archives) first.  ON_TOP(name) runs, before
    anything is written, for each top-level name the first time the plan meets it."""
    plan = Plan() if plan is None else plan
    for member, offset in tar_members(stream):
        first = member.name.split("/", 1)[0]
        if first not in plan.top:
            on_top(first)
        plan.add(member)
        if member.kind == "dir":
            writer.mkdir(member.name)
        elif member.kind == "file":
            stream.seek(offset)
            writer.file(member, _exactly(stream, member.size))
        else:
            writer.link(member)
        on_member()
    return plan


def _exactly(stream: Stream, n: int) -> Iterator[memoryview | bytes]:
    while n > 0:
        piece = stream.view(min(n, 1 << 20))
        if not piece:
            return
        n -= len(piece)
        yield piece
