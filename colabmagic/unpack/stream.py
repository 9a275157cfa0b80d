"""An archive's bytes as they arrive: `Stream`, decompression, and the ratio caps.

Readers consume a `Stream`: the archive's bytes front to back, as they arrive from
Drive, so that unpacking overlaps with reading and the archive is never stored.
`decompressed` expands gzip, bzip2, xz or zstd in bounded pieces; `check_ratio` and
`ratio_capped` stop an archive that expands like a bomb (declared, or as counted).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from ..errors import ColabMagicError
from ..results import size
from .members import Refused

MAX_HEADER_READ = 16 << 20  # tar pax/long-name bodies are read whole: bound them
MAX_PIECE = 1 << 20  # most bytes one decompress call may return
MAX_RATIO = 1000  # expanded / compressed, above which a big archive is a bomb
RATIO_FLOOR = 10**9  # ... when it expands to more than this many bytes
ZSTD_MAX_WINDOW = 1 << 31  # the largest window a zstd frame may declare (--long=31)


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

    def peek(self, n: int) -> bytes:
        """Up to N bytes from here (fewer only at the end), without consuming them."""
        while len(self._buf) - self._pos < n:
            before, rest, prev = self._buf[: self._pos], self._buf[self._pos :], self._prev
            if not self._next_chunk():
                break
            # What is left joins the new chunk; what was read stays behind it, so
            # that a seek back (tarfile's) finds it where it would have been.
            self._base -= len(rest)
            self._buf = memoryview(bytes(rest) + bytes(self._buf))
            self._prev = before if len(before) else prev
        return bytes(self._buf[self._pos : self._pos + n])

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
    Data that is plainly another format (a zip named .tar.gz), or that holds one
    (a .zip.bz2), is refused with what it really is.
    """
    pieces = _expanded(chunks, kind)
    try:
        first = next(pieces, None)
        if first is None:
            return
        if (inside := sniff(first)) is not None and not _is_tar_header(first[:512]):
            raise Refused(
                f"the {NAMES[kind]} data holds {article(inside)} archive, not a tar: "
                "decompress it first, then stage what it holds"
            )
        yield first
        yield from pieces
    finally:
        pieces.close()


def _expanded(chunks: Iterator[bytes], kind: str) -> Iterator[bytes]:
    new, expand = _decompressor_factory(kind)
    dec, fed, first = new(), False, True
    for data in chunks:
        if first and data:
            first = False
            if (found := sniff(data)) not in (None, kind):
                raise Refused(
                    f"this is {article(found)} archive, not {NAMES[kind]} data (its first "
                    f"bytes say so): use {FORMAT_OPTION[found]}"
                )
        while data:
            fed = True
            try:
                data = yield from expand(dec, data)
            except Exception as error:  # zlib.error, OSError, LZMAError, ZstdError
                if kind == "zst" and "too much memory" in str(error):
                    raise Refused(
                        "the zstd data declares a window larger than 2 GiB, more than "
                        "zstd itself allows (a corrupt archive)"
                    ) from None
                raise Refused(f"the {NAMES[kind]} data is corrupt: {error}") from None
            if getattr(dec, "eof", False):
                dec, fed = new(), False  # concatenated streams, as gzip -c a b > ab makes
    if fed and getattr(dec, "eof", True) is False:
        raise Refused(f"the {NAMES[kind]} data ends before its end marker (a truncated archive)")


NAMES = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "zst": "zstd", "zip": "zip"}
# What stages each format when its name does not say: --format tar also reads a
# compressed tar (the compression is told by these same magic bytes).
FORMAT_OPTION = {"gz": "--format tar", "bz2": "--format tar", "xz": "--format tar",
                 "zst": "--format tar", "zip": "--format zip"}  # fmt: skip


def sniff(head: bytes | memoryview) -> str | None:
    """The format whose magic bytes HEAD starts with ("gz", "bz2", "xz", "zst", "zip"),
    or None.  Strict enough that no plain tar matches (its first bytes are a name)."""
    head = bytes(head[:10])
    if head.startswith(b"\x1f\x8b\x08"):
        return "gz"
    if (
        head[:3] == b"BZh"
        and head[3:4].isdigit()
        and head[3:4] != b"0"
        and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")  # a block, or the end of an empty one
    ):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zst"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a member, or an empty zip
        return "zip"
    return None


def _is_tar_header(block: bytes | memoryview) -> bool:
    """Whether BLOCK checks out as a tar header (a first member named "BZh91AY&SY")."""
    block = bytes(block)
    if len(block) < 512:
        return False
    try:
        stored = int(block[148:156].split(b"\0")[0].strip() or b"x", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * 0x20 + sum(block[156:])


def article(kind: str) -> str:
    return f"an {NAMES[kind]}" if kind == "xz" else f"a {NAMES[kind]}"


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
        inflater = deflate_module()
        return (lambda: inflater.decompressobj(31)), _inflate
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
        # Frames made with `zstd --long` (or a high level) declare windows past the
        # default limit of 128 MiB; 2 GiB is the largest zstd allows on 64-bit.
        window = ZSTD_MAX_WINDOW
        return (lambda: zstandard.ZstdDecompressor(max_window_size=window).decompressobj()), _unzstd
    raise AssertionError(kind)


@functools.cache
def deflate_module():
    """What inflates gzip and zip deflate data: isal's zlib when it is installed (ISA-L
    inflates these archives' text in about half zlib's CPU time, measured), else zlib.
    Both have the same decompressobj (max_length, unconsumed_tail, eof, unused_data),
    which is all the callers use, and both raise their module's ``error``."""
    try:
        from isal import isal_zlib
    except ImportError:
        import zlib

        return zlib
    return isal_zlib


# --------------------------------------------------------------------------- ratio caps


def check_ratio(declared: int, compressed: int, name: str) -> None:
    """Refuse an archive NAME of COMPRESSED bytes that declares DECLARED expanded bytes
    past MAX_RATIO:1 (and past RATIO_FLOOR in all)."""
    if declared <= RATIO_FLOOR:
        return
    if declared > MAX_RATIO * max(compressed, 1):
        raise Refused(
            f"{name} expands {declared / max(compressed, 1):,.0f}:1 to {size(declared)} "
            "(a zip bomb?); use --allow-ratio if you trust it"
        )


def ratio_capped(chunks: Iterator[bytes], compressed: int, name: str) -> Iterator[bytes]:
    """CHUNKS of a decompressed tar, stopped where check_ratio would stop a zip.

    A tar declares no total, so the bytes are counted as they expand.  The limit is
    against the whole archive's size, not the compressed bytes read so far: a
    legitimate archive may start with a long run of zeros, and is only a bomb if the
    archive as a whole expands more than MAX_RATIO:1.
    """
    limit = max(RATIO_FLOOR, MAX_RATIO * compressed)
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise Refused(
                f"{name} expands more than {MAX_RATIO:,}:1, past {size(limit)} "
                "(a compression bomb?); use --allow-ratio if you trust it"
            )
        yield chunk
