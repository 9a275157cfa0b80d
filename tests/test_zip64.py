"""Zip64 archives as zipfile and Info-ZIP write them: an extra field holds only the
fields whose 32-bit value is 0xFFFFFFFF (APPNOTE 4.5.3), so a member past 4 GiB has
just its offset there.  Small archives built by hand cover each combination; one
above 4 GiB, written by zipfile, covers the real thing."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest

import colabmagic
from colabmagic.errors import ColabMagicError
from tests.builders import contents

FULL = 0xFFFFFFFF
USIZE, CSIZE, OFFSET = "usize", "csize", "offset"


def build_zip(
    members: list[tuple[str, bytes, int, tuple[str, ...]]],
    *,
    zip64_end: bool = False,
    extensible: bytes = b"",
    stub: bytes = b"",
    count: int | None = None,
    central_names: dict[str, str] | None = None,
) -> bytes:
    """A zip of MEMBERS (name, data, method, the fields marked 0xFFFFFFFF in the central
    directory and kept in its zip64 extra field, in APPNOTE order), as a writer that
    follows APPNOTE 4.5.3 lays it out.  ZIP64_END adds the zip64 end record (with an
    EXTENSIBLE data sector) and its locator and marks the end record's fields; STUB
    goes before the archive, as a self-extractor's does; COUNT overrides the entry count,
    CENTRAL_NAMES the names the central directory gives (a mismatched archive)."""
    out = bytearray()
    central = bytearray()
    for name, data, method, marked in members:
        raw = name.encode()
        body = zlib.compress(data, 9)[2:-4] if method == 8 else data
        crc = zlib.crc32(data)
        offset = len(out)
        # The local header of a zip64 member holds both sizes (APPNOTE 4.5.3).
        local64 = struct.pack("<2H2Q", 1, 16, len(data), len(body)) if marked else b""
        sizes = (FULL, FULL) if marked else (len(body), len(data))
        out += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 45, 0, method, 0, 0, crc, *sizes, len(raw), len(local64)
        )
        out += raw + local64 + body
        values = {USIZE: len(data), CSIZE: len(body), OFFSET: offset}
        extra = b"".join(
            struct.pack("<Q", values[f]) for f in (USIZE, CSIZE, OFFSET) if f in marked
        )
        extra = struct.pack("<2H", 1, len(extra)) + extra if marked else b""
        shown = {f: FULL if f in marked else values[f] for f in values}
        raw = (central_names or {}).get(name, name).encode()
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 0x031E, 45, 0, method, 0, 0, crc,
            shown[CSIZE], shown[USIZE], len(raw), len(extra), 0, 0, 0, 0o100644 << 16,
            shown[OFFSET],
        )  # fmt: skip
        central += raw + extra
    cd_offset = len(out)
    out += central
    n = len(members) if count is None else count
    if zip64_end:
        record_at = len(out)
        out += struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44 + len(extensible), 45, 45, 0, 0, n, n,
            len(central), cd_offset,
        ) + extensible  # fmt: skip
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
        out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, FULL, FULL, 0)
    else:
        out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_offset, 0)
    return stub + bytes(out)


MEMBERS = {
    "top/stored.bin": (bytes(range(256)) * 40, 0),
    "top/deflated.txt": (b"colabmagic zip64 " * 500, 8),
    "top/empty": (b"", 0),
}


def members_with(marks: dict[str, tuple[str, ...]]) -> list:
    return [(name, data, method, marks.get(name, ())) for name, (data, method) in MEMBERS.items()]


EXPECTED = {"top": "dir", **{name: data for name, (data, _) in MEMBERS.items()}}

# Each way a member may use its zip64 extra field: only the offset (a member past 4 GiB
# in a zip that zipfile or Info-ZIP wrote), only a size, both sizes, sizes and offset,
# and the compressed size with the offset (the uncompressed size fits).
LAYOUTS = {
    "offset-only": {"top/stored.bin": (OFFSET,), "top/deflated.txt": (OFFSET,)},
    "usize-only": {"top/stored.bin": (USIZE,), "top/deflated.txt": (USIZE,)},
    "sizes": {"top/stored.bin": (USIZE, CSIZE), "top/deflated.txt": (USIZE, CSIZE)},
    "sizes+offset": {
        "top/stored.bin": (USIZE, CSIZE, OFFSET),
        "top/deflated.txt": (USIZE, CSIZE, OFFSET),
        "top/empty": (USIZE, CSIZE, OFFSET),
    },
    "csize+offset": {"top/deflated.txt": (CSIZE, OFFSET), "top/empty": (OFFSET,)},
}


@pytest.mark.parametrize("zip64_end", [False, True], ids=["eocd", "zip64-eocd"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_zip64_extra_layout_stages_byte_for_byte(tmp_path, layout, zip64_end):
    archive = tmp_path / f"{layout}.zip"
    archive.write_bytes(build_zip(members_with(LAYOUTS[layout]), zip64_end=zip64_end))
    with zipfile.ZipFile(archive) as z:  # the builder writes what zipfile reads
        assert z.testzip() is None
        assert {i.filename: z.read(i) for i in z.infolist()} == {
            n: d for n, (d, _) in MEMBERS.items()
        }
    target = tmp_path / "out"
    result = colabmagic.stage(archive, target, quiet=True)
    assert result.files == len(MEMBERS)
    assert contents(target) == EXPECTED


def test_a_zip64_end_record_with_an_extensible_data_sector(tmp_path):
    """The record is longer than its fixed part: it is found where the locator says."""
    archive = tmp_path / "ext.zip"
    marks = LAYOUTS["sizes+offset"]
    archive.write_bytes(build_zip(members_with(marks), zip64_end=True, extensible=b"\x99" * 40))
    colabmagic.stage(archive, tmp_path / "out", quiet=True)
    assert contents(tmp_path / "out") == EXPECTED
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-tq", str(archive)], capture_output=True).returncode == 0


def test_a_stub_before_a_zip64_archive_shifts_every_offset(tmp_path):
    """A self-extractor's stub: the locator's offset is then wrong by the stub's size."""
    archive = tmp_path / "sfx"
    stub = b"#!/bin/sh\necho not run\nexit 0\n" + b"#" * 300 + b"\n"
    archive.write_bytes(build_zip(members_with(LAYOUTS["offset-only"]), zip64_end=True, stub=stub))
    colabmagic.stage(archive, tmp_path / "out", quiet=True, format="zip")
    assert contents(tmp_path / "out") == EXPECTED


def test_zip64_markers_in_the_end_record_without_a_zip64_end_record(tmp_path):
    archive = tmp_path / "no-record.zip"
    raw = build_zip(members_with({}), zip64_end=True)
    record = raw.index(b"PK\x06\x06")
    archive.write_bytes(raw[:record] + raw[raw.index(b"PK\x05\x06") :])
    with pytest.raises(ColabMagicError) as caught:
        colabmagic.stage(archive, tmp_path / "out", quiet=True)
    assert str(caught.value) == (
        "the zip end record leaves its directory's place to a zip64 end record, but there "
        "is none before it (a corrupt archive)"
    )


def test_zip64_markers_without_an_extra_field_are_named(tmp_path):
    archive = tmp_path / "nox.zip"
    raw = bytearray(build_zip(members_with({"top/stored.bin": (OFFSET,)})))
    at = raw.index(b"PK\x01\x02")
    (nlen, elen) = struct.unpack_from("<2H", raw, at + 28)
    assert elen == 12
    raw[at + 30 : at + 32] = b"\0\0"  # drop the extra field, keep its marker
    del raw[at + 46 + nlen : at + 46 + nlen + elen]
    end = raw.index(b"PK\x05\x06")
    struct.pack_into("<L", raw, end + 12, struct.unpack_from("<L", raw, end + 12)[0] - elen)
    archive.write_bytes(raw)
    with pytest.raises(ColabMagicError) as caught:
        colabmagic.stage(archive, tmp_path / "out", quiet=True)
    assert str(caught.value) == (
        "member 'top/stored.bin' marks its offset as kept in a zip64 extra field, "
        "but has no such field (a corrupt archive)"
    )
    assert not (tmp_path / "out" / "top").exists()


def test_a_zip64_extra_field_too_short_for_its_markers(tmp_path):
    archive = tmp_path / "short.zip"
    raw = bytearray(build_zip(members_with({"top/stored.bin": (USIZE, CSIZE)})))
    at = raw.index(b"PK\x01\x02")
    nlen = struct.unpack_from("<H", raw, at + 28)[0]
    struct.pack_into("<H", raw, at + 46 + nlen + 2, 8)  # says 8 bytes: one size of two
    archive.write_bytes(raw)
    with pytest.raises(ColabMagicError, match=r"zip64 extra field of 8 bytes, too short to hold "
                       r"its uncompressed size and compressed size \(16 bytes"):  # fmt: skip
        colabmagic.stage(archive, tmp_path / "out", quiet=True)


# --------------------------------------------------------------------------- above 4 GiB

GIB = 1 << 30


def free_disk(path: Path) -> int:
    return shutil.disk_usage(path).free


def write_gapped_zip(path: Path, gap: int) -> None:
    """A zip whose second member starts past 4 GiB, after GAP bytes of nothing (a hole
    in a sparse file; APPNOTE lets bytes lie between members): its offset is in a zip64
    extra field of its own, alone, and the zip64 end record holds the directory's."""
    members = [("first.txt", b"before the gap\n"), ("after-4gib.txt", b"after the gap\n")]
    central = b""
    with path.open("wb") as f:
        for i, (name, data) in enumerate(members):
            if i == 1:
                f.seek(gap, os.SEEK_CUR)
            offset, raw, crc = f.tell(), name.encode(), zlib.crc32(data)
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, 0, 0, 0, crc, len(data),
                                len(data), len(raw), 0) + raw + data)  # fmt: skip
            far = offset >= FULL
            extra = struct.pack("<2HQ", 1, 8, offset) if far else b""
            central += struct.pack(
                "<4s6H3L5H2L", b"PK\x01\x02", 0x031E, 45, 0, 0, 0, 0, crc, len(data),
                len(data), len(raw), len(extra), 0, 0, 0, 0o100644 << 16,
                FULL if far else offset,
            ) + raw + extra  # fmt: skip
        cd_offset = f.tell()
        f.write(central)
        record_at = f.tell()
        f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 2, 2,
                            len(central), cd_offset))  # fmt: skip
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, FULL, FULL, 0))


def test_a_member_past_4_gib_has_only_its_offset_in_zip64(tmp_path):
    """Runs by default: 4 GiB are read (from a hole, so quickly) but only bytes written."""
    if free_disk(tmp_path) < 10 * 10**9:
        pytest.skip("needs 10 GB of free disk")
    archive = tmp_path / "gap.zip"
    write_gapped_zip(archive, 4 * GIB + 4096)
    assert archive.stat().st_size > 4 * GIB
    with zipfile.ZipFile(archive) as z:
        assert z.getinfo("after-4gib.txt").header_offset > 4 * GIB
        assert z.testzip() is None
    if shutil.which("unzip"):
        check = subprocess.run(["unzip", "-tq", str(archive)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    result = colabmagic.stage(archive, tmp_path / "out", quiet=True)
    assert result.files == 2 and result.archive_bytes == archive.stat().st_size
    assert contents(tmp_path / "out") == {
        "first.txt": b"before the gap\n",
        "after-4gib.txt": b"after the gap\n",
    }


class SparseZeros:
    """A file for zipfile to write into, in which the one block of zeros we hand
    zipfile is skipped over instead of written: the archive is byte for byte what
    zipfile makes, and takes no disk space for its zeros."""

    def __init__(self, path: Path, zeros: bytes) -> None:
        self._file = path.open("wb")
        self._zeros = zeros

    def write(self, data) -> int:
        if data is self._zeros:  # zipfile passes our block through unchanged
            self._file.seek(len(data), os.SEEK_CUR)
            return len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


def write_big_zip(path: Path) -> dict[str, int]:
    """A zip above 4 GiB: a 2.25 GiB stored member of zeros (zip64 sizes), one of
    1.9 GiB (zip64 offset only), then a small member past 4 GiB (offset only, and an
    offset that needs all 64 bits).  Returns name -> size."""
    zeros = bytes(64 << 20)
    sizes = {"big/zeros-a.bin": 36 * len(zeros), "big/zeros-b.bin": 30 * len(zeros)}
    out = SparseZeros(path, zeros)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, size in sizes.items():
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.file_size = size
            with z.open(info, "w", force_zip64=True) as member:
                for _ in range(size // len(zeros)):
                    member.write(zeros)
        z.writestr("big/after-4gib.txt", b"past the 32-bit offsets\n")
    out.close()
    sizes["big/after-4gib.txt"] = 24
    return sizes


@pytest.mark.skipif(
    not os.environ.get("COLABMAGIC_BIG_TESTS"),
    reason="writes 4.4 GB to disk and takes minutes; set COLABMAGIC_BIG_TESTS=1 to run it",
)
@pytest.mark.timeout(900)
def test_an_archive_above_4_gib_made_by_zipfile(tmp_path):
    if free_disk(tmp_path) < 10 * 10**9:
        pytest.skip("needs 10 GB of free disk")
    archive = tmp_path / "big.zip"
    target = tmp_path / "out"
    try:
        sizes = write_big_zip(archive)
        assert archive.stat().st_size > 4 * GIB
        with zipfile.ZipFile(archive) as z:
            infos = {i.filename: i for i in z.infolist()}
            assert infos["big/after-4gib.txt"].header_offset > 4 * GIB
            assert z.read("big/after-4gib.txt") == b"past the 32-bit offsets\n"
        extras = central_zip64_extras(archive)  # what zipfile wrote, as the issue saw it
        assert extras == {
            "big/zeros-a.bin": 16,  # both sizes
            "big/zeros-b.bin": 8,  # its offset (above 2 GiB)
            "big/after-4gib.txt": 8,  # its offset (above 4 GiB)
        }
        if shutil.which("unzip"):
            check = subprocess.run(["unzip", "-tq", str(archive)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
        result = colabmagic.stage(archive, target, quiet=True)
        assert result.files == 3 and result.bytes == sum(sizes.values())
        assert contents(target, sizes=True) == {"big": "dir", **sizes}
        assert (target / "big/after-4gib.txt").read_bytes() == b"past the 32-bit offsets\n"
        with (target / "big/zeros-b.bin").open("rb") as f:
            f.seek(sizes["big/zeros-b.bin"] - 4096)
            assert f.read() == bytes(4096)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # pytest keeps old tmp_paths


def central_zip64_extras(archive: Path) -> dict[str, int]:
    """Name -> length of the zip64 extra field, for each central directory entry."""
    with zipfile.ZipFile(archive) as z:
        return {
            i.filename: next((length for tag, length in iter_extra(i.extra) if tag == 1), 0)
            for i in z.infolist()
        }


def iter_extra(extra: bytes):
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, pos)
        yield tag, length
        pos += 4 + length
