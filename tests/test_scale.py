"""Many members: an archive is vetted whole before it is written, in compact tables.

A zip's index and the Plan keep every name (the whole archive is judged before a
byte is written), and the stage's manifest every path it made; at a million members
these must be arrays and name blobs, not a million objects.  The memory bounds here
are per member, measured with tracemalloc, so they fail if the tables go back to
objects (a ZipEntry and a Member took about 600 bytes a member at their peak).
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib

import pytest

from colabmagic.unpack import members
from colabmagic.unpack.members import Member, Plan, Refused
from colabmagic.unpack.place import Manifest
from colabmagic.unpack.zip import read_zip_index
from tests.builders import as_contents, contents, random_bytes, write_zip

N = 20_000
# Names like "d0007/f0001234.bin": 18 bytes.  What a member costs in the index and the
# Plan together: the raw name and the clean one (36), six columns (26), the Plan's end,
# hash and kind (13), two to four hash slots (8-16), array growth (about 12%), and
# the central directory window (its 64 bytes a member, at this size, read at once).
# Measured: about 115 bytes; ZipEntry and Member objects took about 600.
INDEX_BYTES_PER_MEMBER = 200
# A Manifest entry: the name (18), its end, hash and kind (13), size and mtime (16),
# two to four slots (8-16), growth.  Measured: about 64; a dict of lists took 168.
MANIFEST_BYTES_PER_PATH = 110
# The Plan alone, as a tar fills it: the name and 13-29 bytes.  Measured: about 47;
# a dict of Members and a set took 134.
PLAN_BYTES_PER_NAME = 90


def name(i: int) -> str:
    return f"d{i % 100:04d}/f{i:07d}.bin"


def many_files(n: int) -> dict[str, bytes]:
    pool = random_bytes(1 << 14, seed=n)
    return {name(i): pool[i % 9000 : i % 9000 + 20 + i % 50] for i in range(n)}


def fast_zip(files: dict[str, bytes]) -> bytes:
    """A stored zip of FILES, written directly (zipfile takes seconds for 20,000)."""
    local, central = [], []
    offset = 0
    for member, data in files.items():
        raw = member.encode()
        crc = zlib.crc32(data)
        header = struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0x800, 0, 0, 0, crc, len(data), len(data), len(raw), 0
        )
        local += [header, raw, data]
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                0x314,
                20,
                0x800,
                0,
                0,
                0,
                crc,
                len(data),
                len(data),
                len(raw),
                0,
                0,
                0,
                0,
                0o100644 << 16,
                offset,
            )
            + raw  # fmt: skip
        )
        offset += len(header) + len(raw) + len(data)
    directory = b"".join(central)
    count = len(files)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    return b"".join(local) + directory + end


def peak_per(n: int, build) -> float:
    """Peak traced bytes per item while BUILD runs (what it keeps, and its transients)."""
    tracemalloc.start()
    try:
        kept = build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept is not None
    return peak / n


def test_twenty_thousand_members_stage_byte_for_byte_and_skip(ip, drive_root, workdir):
    files = many_files(N)
    (drive_root / "MyDrive" / "many.zip").write_bytes(fast_zip(files))
    assert zipfile.ZipFile(drive_root / "MyDrive" / "many.zip").testzip() is None

    first = ip.run_line_magic("stage", "many.zip --quiet")
    assert (first.action, first.files) == ("staged", N)
    assert contents(workdir) == as_contents(files)
    # The manifest went into the marker and comes back from it: a re-run is a skip,
    # and the marker is still JSON with one record per path.
    marker = next((workdir / ".colabmagic").glob("marker-*.json"))
    recorded = json.loads(marker.read_text())["manifest"]
    assert len(recorded) == N + 100  # the files and their 100 folders
    assert recorded[name(7)] == ["f", len(files[name(7)]), (workdir / name(7)).stat().st_mtime_ns]
    assert ip.run_line_magic("stage", "many.zip --quiet").action == "skipped"
    (workdir / name(5)).write_bytes(b"edited")  # no longer as staged: not a skip
    again = ip.run_line_magic("stage", "many.zip --quiet --force")
    assert again.action == "restaged"
    assert contents(workdir, skip=workdir / "d0005") == {
        k: v for k, v in as_contents(files).items() if not k.startswith("d0005")
    }


def test_the_zip_index_and_plan_take_little_memory_per_member():
    data = fast_zip(many_files(N))

    def pread(at: int, n: int) -> bytes:
        return data[at : at + n]

    per_member = peak_per(N, lambda: read_zip_index(len(data), pread))
    assert per_member < INDEX_BYTES_PER_MEMBER, f"{per_member:.0f} bytes a member"


def test_a_plan_and_a_manifest_take_little_memory_per_name():
    names = [name(i) for i in range(N)]

    def fill_plan():  # as the tar reader does: one Member at a time, then let go
        plan = Plan()
        for n in names:
            plan.add(Member(n, "file", size=10))
        return plan

    def fill_manifest():
        manifest = Manifest()
        for i, rel in enumerate(names):
            manifest.set(rel, ["f", i, 1_700_000_000_000_000_000 + i])
        return manifest

    assert peak_per(N, fill_plan) < PLAN_BYTES_PER_NAME
    assert peak_per(N, fill_manifest) < MANIFEST_BYTES_PER_PATH


@pytest.mark.parametrize("colliding", [lambda s: 7, lambda s: len(s) << 33])
def test_names_whose_hashes_collide_are_still_told_apart(
    ip, drive_root, workdir, monkeypatch, colliding
):
    # Every name hashes alike (or alike in all the bits that pick a slot): the table
    # must compare the names, and stage each of them, refusing only a real duplicate.
    monkeypatch.setattr(members, "_hash", colliding)
    files = {f"set/{c}{i}.txt": f"{c}{i}".encode() for c in "abc" for i in range(40)}
    write_zip(drive_root / "MyDrive" / "same.zip", files)
    result = ip.run_line_magic("stage", "same.zip --quiet")
    assert (result.action, result.files) == ("staged", len(files))
    assert contents(workdir) == as_contents(files)
    assert ip.run_line_magic("stage", "same.zip --quiet").action == "skipped"

    plan = Plan()
    for n in files:
        plan.add(Member(n, "file"))
    with pytest.raises(Refused, match="'set/b7.txt' appears twice"):
        plan.add(Member("set/b7.txt", "file"))
    with pytest.raises(Refused, match="is both a file and a folder"):
        plan.add(Member("set/a1.txt", "dir"))
    with pytest.raises(Refused, match="inside 'set/c3.txt', which is a file"):
        plan.add(Member("set/c3.txt/x", "file"))
    with pytest.raises(Refused, match="not an earlier file"):
        plan.add(Member("set/hard", "hardlink", target="set/nope.txt"))
    plan.add(Member("set/hard", "hardlink", target="set/c39.txt"))


def test_a_duplicate_far_apart_in_a_large_zip_is_refused_and_nothing_is_written(
    ip, drive_root, workdir
):
    files = many_files(5_000)
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(name(3), b"again")
    (drive_root / "MyDrive" / "dup.zip").write_bytes(body.getvalue())
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=f"member '{name(3)}' appears twice"):
        ip.run_line_magic("stage", "dup.zip --quiet")
    assert contents(workdir) == {}
