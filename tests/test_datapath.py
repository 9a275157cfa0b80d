"""The data path of a stage: what it writes, byte for byte, however the disk's
write-back and the local headers go."""

from __future__ import annotations

import errno
import os
import zipfile

import pytest

import colabmagic
from colabmagic import fsio
from colabmagic.errors import ColabMagicError
from colabmagic.unpack import Member, Refused, Writer

from .builders import contents, random_bytes, write_tar, write_zip
from .test_zip64 import build_zip


def _members(n: int = 21) -> dict[str, bytes]:
    # Sizes around the small-member limit and past it, some empty: every write path.
    sizes = [0, 1, 5000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20]
    return {f"top/d{i % 3}/f{i:03d}.bin": random_bytes(sizes[i % len(sizes)], i) for i in range(n)}


def _flushes(monkeypatch, call):
    """Count what the stage asks of syncfs, CALL doing the asking in its place."""
    calls = []

    def counted(fd: int) -> int:
        calls.append(os.fstat(fd).st_dev)
        return call(fd)

    monkeypatch.setattr(fsio, "_syncfs", lambda: counted)
    monkeypatch.setattr(fsio, "WRITEBACK_STEP", 1 << 20)
    return calls


@pytest.mark.parametrize("kind", ["zip-stored", "zip-deflate", "tar.gz"])
def test_write_back_during_a_stage_changes_no_byte(tmp_path, monkeypatch, kind):
    calls = _flushes(monkeypatch, fsio._syncfs() or (lambda fd: 0))
    members = _members()
    if kind == "tar.gz":
        source = write_tar(tmp_path / "a.tar.gz", members, "w:gz")
    else:
        method = zipfile.ZIP_DEFLATED if kind == "zip-deflate" else zipfile.ZIP_STORED
        source = write_zip(tmp_path / "a.zip", members, method)
    result = colabmagic.stage(source, tmp_path / "out", quiet=True)
    assert result.files == len(members)
    found = contents(tmp_path / "out")
    assert {k: v for k, v in found.items() if v != "dir"} == members
    # The write-back was started while the members were written, on their disk (one
    # syncfs at a time: how many depends on how long each takes).
    assert calls
    assert set(calls) == {os.stat(tmp_path).st_dev}


def test_a_disk_that_refuses_write_back_still_gets_every_byte(tmp_path, monkeypatch):
    def refused(fd: int) -> int:
        return -1  # as libc says it, errno set (EIO, say): ignored

    calls = _flushes(monkeypatch, refused)
    members = _members(12)
    source = write_zip(tmp_path / "a.zip", members)
    result = colabmagic.stage(source, tmp_path / "out", quiet=True)
    assert calls
    assert result.files == len(members)
    assert {k: v for k, v in contents(tmp_path / "out").items() if v != "dir"} == members


def test_write_back_where_syncfs_is_missing_or_fails_is_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fsio, "_syncfs", lambda: None)  # not Linux, no libc symbol
    wb = fsio.WriteBack(tmp_path, step=10)
    wb.wrote(100)
    assert wb.started == 0
    # A real syncfs on a folder that is gone, and on one that is there: no error.
    monkeypatch.undo()
    for folder in (tmp_path / "gone", tmp_path):
        wb = fsio.WriteBack(folder, step=10)
        wb.wrote(5)
        assert wb.started == 0  # below the step
        wb.wrote(5)
        assert wb.started == (1 if fsio._syncfs() else 0)
        if wb._thread is not None:
            wb._thread.join()


def test_one_write_back_at_a_time(tmp_path, monkeypatch):
    import threading

    release = threading.Event()
    monkeypatch.setattr(fsio, "_syncfs", lambda: lambda fd: release.wait(10))
    wb = fsio.WriteBack(tmp_path, step=10)
    wb.wrote(10)
    wb.wrote(10)
    wb.wrote(10)
    assert wb.started == 1  # the first still runs: the others wait for a later step
    release.set()
    wb._thread.join()
    wb.wrote(10)
    assert wb.started == 2


def test_small_members_are_held_to_their_declared_size(tmp_path):
    with Writer(tmp_path) as writer:
        with pytest.raises(Refused, match="larger than the 3 bytes it declares"):
            writer.file(Member("a", "file", size=3), iter([b"ab", b"cd"]))
        with pytest.raises(Refused, match="has 2 bytes, not the 3 it declares"):
            writer.file(Member("b", "file", size=3), iter([b"ab"]))
        writer.file(Member("c", "file", size=3), iter([b"a", memoryview(b"bc")]))
        writer.drain()
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert (tmp_path / "c").read_bytes() == b"abc"


def test_small_members_past_the_free_space_are_a_full_disk(tmp_path):
    with Writer(tmp_path, budget=5) as writer:
        writer.file(Member("a", "file", size=3), iter([b"abc"]))
        with pytest.raises(OSError) as caught:
            writer.file(Member("b", "file", size=3), iter([b"abc"]))
        writer.drain()
    assert caught.value.errno == errno.ENOSPC
    assert writer.written == 3
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_a_local_header_with_a_longer_name_than_the_directory_is_named(tmp_path):
    # The local header's name runs past what the directory names: both are shown.
    data = build_zip(
        [("top/a-longer-name.txt", b"a" * 100, 0, ()), ("top/b.txt", b"b" * 100, 0, ())],
        central_names={"top/a-longer-name.txt": "top/a.txt"},
    )
    source = tmp_path / "bad.zip"
    source.write_bytes(data)
    with pytest.raises(ColabMagicError) as caught:
        colabmagic.stage(source, tmp_path / "out", quiet=True)
    assert str(caught.value) == (
        "member 'top/a.txt': its local header names it 'top/a-longer-name.txt' "
        "(a mismatched archive)"
    )
    assert not (tmp_path / "out" / "top").exists()


def _deflated(tmp_path):
    members = {f"top/{i:02d}.xml": b"<a>%d</a>\n" % i * (200 + 500 * i) for i in range(12)}
    members["top/big.xml"] = b"<b>text</b>\n" * 300_000  # past MAX_PIECE when expanded
    zipped = write_zip(tmp_path / "a.zip", members, zipfile.ZIP_DEFLATED)
    tarred = write_tar(tmp_path / "a.tar.gz", members, "w:gz")
    return members, zipped, tarred


def _stage_both(tmp_path, members, zipped, tarred):
    for n, source in enumerate((zipped, tarred)):
        out = tmp_path / f"out{n}"
        colabmagic.stage(source, out, quiet=True)
        assert {k: v for k, v in contents(out).items() if v != "dir"} == members


def test_without_isal_zlib_inflates(tmp_path, monkeypatch):
    import sys
    import zlib

    from colabmagic.unpack import stream

    monkeypatch.setitem(sys.modules, "isal", None)  # an import of it fails
    stream.deflate_module.cache_clear()
    try:
        assert stream.deflate_module() is zlib
        _stage_both(tmp_path, *_deflated(tmp_path))
    finally:
        stream.deflate_module.cache_clear()


def test_with_isal_the_same_bytes_and_the_same_refusals(tmp_path):
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    from colabmagic.unpack import stream

    stream.deflate_module.cache_clear()
    assert stream.deflate_module() is isal_zlib
    members, zipped, tarred = _deflated(tmp_path)
    _stage_both(tmp_path, members, zipped, tarred)
    # A member whose deflate data is damaged is refused, by isal's words.
    data = bytearray(zipped.read_bytes())
    at = data.index(b"top/05.xml") + len(b"top/05.xml") + 3
    data[at : at + 8] = b"\xff" * 8
    zipped.write_bytes(bytes(data))
    with pytest.raises(ColabMagicError, match="top/05.xml"):
        colabmagic.stage(zipped, tmp_path / "bad", quiet=True)
    assert not (tmp_path / "bad" / "top").exists()
