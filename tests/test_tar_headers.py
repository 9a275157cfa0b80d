"""The quick tar header parser reads every header exactly as tarfile does.

colabmagic.unpack.tar parses plain ustar headers itself (tarfile's field loops were the
largest cost of unpacking many small members) and hands anything else to tarfile.
These tests hold the two to the same answer: the same fields, or the same error.
"""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colabmagic.unpack.tar import _fast_tarinfo
from tests.builders import SHARED

CORPUS = SHARED / "hostile-archives"
ENCODING, ERRORS = "utf-8", "surrogateescape"  # what TarFile uses here
# Every field frombuf sets, and what the header's neighbours add to it.
FIELDS = ["name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname",
          "uname", "gname", "devmajor", "devminor", "offset", "offset_data", "pax_headers",
          "sparse"]  # fmt: skip


def parsed(info_class: type, block: bytes) -> tuple:
    """The fields INFO_CLASS.frombuf reads from BLOCK, or the error it raises."""
    try:
        info = info_class.frombuf(block, ENCODING, ERRORS)
    except Exception as error:
        return ("error", type(error), str(error))
    own = [f for f in FIELDS if f not in ("offset", "offset_data")]
    return ("ok", *(getattr(info, f) for f in own), getattr(info, "_sparse_structs", None))


def listing(data: bytes, info_class: type) -> tuple:
    """Every member of the tar DATA with all its fields, or the error tarfile gives."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", tarinfo=info_class) as archive:
            return tuple(tuple(getattr(m, f) for f in FIELDS) for m in archive.getmembers())
    except Exception as error:
        return ("error", type(error), str(error))


def corpus_tars() -> list[Path]:
    # Empty (the test skips) in a fresh clone, which has no ../shared.
    return sorted(p for p in CORPUS.iterdir() if ".tar" in p.name) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", corpus_tars(), ids=lambda p: p.name)
def test_every_corpus_tar_lists_the_same(path: Path):
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    fast = listing(data, _fast_tarinfo())
    assert fast == listing(data, tarfile.TarInfo)
    assert fast  # something was compared: members, or an error


def header(name: str, size: int, kind: bytes, link: str, fmt: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime = size, kind, link, mtime
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 1000, 1000, "u", "g"
    return info.tobuf(fmt, ENCODING, ERRORS)[-512:]  # the member's own header block


names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=120)
kinds = st.sampled_from(
    [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
     tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, b"x", b"Z"]
)  # fmt: skip
formats = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A real header from tarfile, then perhaps damaged: bytes overwritten, with or
    without the checksum put right again."""
    try:
        block = header(
            draw(names),
            draw(st.integers(0, 8**11 - 1)),
            draw(kinds),
            draw(names),
            draw(formats),
            draw(st.sampled_from([0, 1_700_000_000, 1_700_000_000.5])),
        )
    except (ValueError, UnicodeError):  # a name ustar cannot hold: build one by hand
        block = bytes(512)
    block = bytearray(block)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, 511))
        block[at] = draw(st.sampled_from([0, 0x20, 0x30, 0x37, 0x38, 0x2F, 0x80, 0xFF, 0x7F]))
    if draw(st.booleans()):
        block[148:156] = b" " * 8
        total = sum(block)
        block[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(block)


@settings(max_examples=1000, deadline=None)
@given(block=headers())
def test_any_header_block_gives_the_same_fields_or_the_same_error(block: bytes):
    fast_class = _fast_tarinfo()
    ours = parsed(fast_class, block)
    theirs = parsed(tarfile.TarInfo, block)
    assert ours == theirs


def test_a_plain_header_takes_the_quick_path():
    # Without this the equality above could hold because everything fell back.
    from colabmagic.unpack import tar

    block = header("cats/0001.jpg", 12_345, tarfile.REGTYPE, "", tarfile.GNU_FORMAT, 1_700_000_000)
    fast = tar._plain_header(_fast_tarinfo(), block, ENCODING, ERRORS)
    assert fast is not None
    assert (fast.name, fast.size, fast.mode, fast.type) == (
        "cats/0001.jpg",
        12_345,
        0o644,
        tarfile.REGTYPE,
    )
