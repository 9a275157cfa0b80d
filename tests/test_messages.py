"""Archives %stage refuses say what is really wrong with them, and a tar cut at a
member boundary is refused like any other truncated archive."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic.errors import ColabMagicError
from colabmagic.unpack.stream import Stream
from tests.builders import contents
from tests.test_zip64 import build_zip

FILES = {f"set/part-{i}.txt": f"member {i}\n".encode() * (i + 1) for i in range(10)}


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def end_of_member(data: bytes, name: str) -> int:
    """Where the header after member NAME (or the end-of-archive blocks) starts."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember(name)
        return info.offset_data + -(-info.size // 512) * 512


def zstd(data: bytes, window_log: int | None = None) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log or 0)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return compressor.compress(data) + compressor.flush()


COMPRESS = {
    ".tar": lambda data: data,
    ".tar.gz": lambda data: gzip.compress(data, mtime=0),
    ".tar.bz2": bz2.compress,
    ".tar.xz": lzma.compress,
    ".tar.zst": zstd,
}


def refusal(ip, source: Path, *options: str) -> str:
    """The one line %stage refuses SOURCE with; the target folder is checked unchanged."""
    target = source.parent / "target"
    target.mkdir(exist_ok=True)
    (target / "mine.txt").write_bytes(b"the user's")
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("stage", f'"{source}" --to "{target}" {" ".join(options)}')
    assert contents(target) == {"mine.txt": b"the user's"}
    message = str(caught.value)
    assert message.startswith("%stage: ") and "\n" not in message
    return message.removeprefix("%stage: ")


# --------------------------------------------------------------------------- item 8


@pytest.mark.parametrize("suffix", COMPRESS)
def test_a_tar_cut_at_a_member_boundary_is_refused(ip, tmp_path, suffix):
    whole = tar_bytes(FILES)
    cut = whole[: end_of_member(whole, "set/part-2.txt")]  # 3 members of 10, then nothing
    source = tmp_path / f"cut{suffix}"
    source.write_bytes(COMPRESS[suffix](cut))
    assert refusal(ip, source) == (
        "the archive ends after member 'set/part-2.txt' without its end-of-archive "
        "blocks: it looks truncated"
    )


def test_a_tar_cut_between_its_two_end_blocks_is_refused(ip, tmp_path):
    whole = tar_bytes(FILES)
    end = end_of_member(whole, "set/part-9.txt")
    source = tmp_path / "half-end.tar"
    source.write_bytes(whole[: end + 512])
    assert refusal(ip, source) == (
        "the archive ends after member 'set/part-9.txt' without its second "
        "end-of-archive block: it looks truncated"
    )
    lone = tmp_path / "lone.tar"  # one zero block, then another tar's members
    lone.write_bytes(whole[: end + 512] + tar_bytes({"more.txt": b"x"}))
    assert refusal(ip, lone).startswith(
        f"a lone zero block at byte {end:,} is followed by more data"
    )


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_tar_with_just_its_two_end_blocks_stages(ip, tmp_path, suffix):
    """The control: no record padding after the two zero blocks is still complete."""
    whole = tar_bytes(FILES)
    source = tmp_path / f"tight{suffix}"
    source.write_bytes(COMPRESS[suffix](whole[: end_of_member(whole, "set/part-9.txt") + 1024]))
    colabmagic.stage(source, tmp_path / "out", quiet=True)
    assert contents(tmp_path / "out") == {"set": "dir", **FILES}


def test_an_empty_file_named_tar_is_not_staged_as_an_empty_archive(ip, tmp_path):
    source = tmp_path / "empty.tar"
    source.write_bytes(b"")
    assert "not a valid tar archive" in refusal(ip, source)


# --------------------------------------------------------------------------- misleading


@pytest.mark.parametrize(
    ("inner", "said"),
    [(".tar.gz", "gzip"), (".tar.bz2", "bzip2"), (".tar.xz", "xz"), (".tar.zst", "zstd")],
)
def test_a_compressed_tar_named_tar_says_what_it_is(ip, tmp_path, inner, said):
    source = tmp_path / "data.tar"
    source.write_bytes(COMPRESS[inner](tar_bytes(FILES)))
    article = "an" if said == "xz" else "a"
    assert refusal(ip, source) == (
        f"this is {article} {said}-compressed archive, not a plain tar (its first bytes "
        "say so): use --format tar, which reads compressed tars too"
    )
    # ...and what it says works
    ip.run_line_magic("stage", f'"{source}" --to "{tmp_path / "out"}" --format tar -q')
    assert contents(tmp_path / "out") == {"set": "dir", **FILES}


def test_a_zip_named_tar_says_what_it_is(ip, tmp_path):
    source = tmp_path / "data.tar"
    with zipfile.ZipFile(source, "w") as z:
        for name, data in FILES.items():
            z.writestr(name, data)
    assert refusal(ip, source) == (
        "this is a zip archive, not a tar (its first bytes say so): use --format zip"
    )
    ip.run_line_magic("stage", f'"{source}" --to "{tmp_path / "out"}" --format zip -q')
    assert contents(tmp_path / "out") == {"set": "dir", **FILES}


def test_a_zip_named_tar_gz_and_a_zip_inside_gzip(ip, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("a.txt", b"a")
    source = tmp_path / "data.tar.gz"
    source.write_bytes(buffer.getvalue())
    assert refusal(ip, source) == (
        "this is a zip archive, not gzip data (its first bytes say so): use --format zip"
    )
    wrapped = tmp_path / "zip-inside.tar.gz"
    wrapped.write_bytes(gzip.compress(buffer.getvalue()))
    assert refusal(ip, wrapped) == (
        "the gzip data holds a zip archive, not a tar: decompress it first, then stage what "
        "it holds"
    )


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_tar_whose_first_name_spells_a_magic_is_still_a_tar(ip, tmp_path, suffix):
    files = {"BZh91AY&SY.txt": b"not bzip2", "PK-notes.txt": b"not a zip"}
    source = tmp_path / f"names{suffix}"
    source.write_bytes(COMPRESS[suffix](tar_bytes(files)))
    colabmagic.stage(source, tmp_path / "out", quiet=True)
    assert contents(tmp_path / "out") == files


def test_a_zstd_frame_with_a_large_window_stages(tmp_path):
    """zstd --long=28 (and up to 31) declares a window past zstandard's 128 MiB default."""
    source = tmp_path / "long.tar.zst"
    source.write_bytes(zstd(tar_bytes(FILES), window_log=28))
    zstandard = pytest.importorskip("zstandard")
    assert zstandard.get_frame_parameters(source.read_bytes()).window_size == 1 << 28
    colabmagic.stage(source, tmp_path / "out", quiet=True)
    assert contents(tmp_path / "out") == {"set": "dir", **FILES}


ZIP_MEMBERS = [("top/a.txt", b"a" * 100, 0, ()), ("top/b.txt", b"b" * 100, 0, ())]


def zip_refusal(tmp_path: Path, data: bytes) -> str:
    source = tmp_path / "bad.zip"
    source.write_bytes(data)
    with pytest.raises(ColabMagicError) as caught:
        colabmagic.stage(source, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out" / "top").exists()
    return str(caught.value)


def test_a_mismatched_local_header_name_is_called_so(tmp_path):
    # The directory's name is longer than the local header's: its data would seem to
    # run into the next member, which is not what is wrong.
    data = build_zip(ZIP_MEMBERS, central_names={"top/a.txt": "top/a-much-longer-name.txt"})
    assert zip_refusal(tmp_path, data) == (
        "member 'top/a-much-longer-name.txt': its local header names it 'top/a.txt' "
        "(a mismatched archive)"
    )


def test_a_wrong_entry_count_is_called_so(tmp_path):
    assert zip_refusal(tmp_path, build_zip(ZIP_MEMBERS, count=1000)).startswith(
        "the zip end record declares 1,000 entries, more than its central directory of "
    )
    assert zip_refusal(tmp_path, build_zip(ZIP_MEMBERS[:1], count=2)) == (
        "the zip central directory holds 1 entry, but its end record declares 2 (a corrupt archive)"
    )


def test_a_truncated_zip_is_called_truncated(tmp_path):
    whole = build_zip(ZIP_MEMBERS)
    assert zip_refusal(tmp_path, whole[: len(whole) // 2]) == (
        "the zip archive looks truncated: it starts with a member but has no "
        "end-of-central-directory record (an upload or copy cut short?)"
    )
    assert zip_refusal(tmp_path, b"just some text, not an archive at all").startswith(
        "not a zip archive"
    )


def test_a_real_overlap_is_still_called_a_zip_bomb(tmp_path):
    # The first member claims to be longer than the room before the second.
    data = bytearray(build_zip(ZIP_MEMBERS))
    at = data.index(b"PK\x01\x02")
    data[at + 20 : at + 28] = (300).to_bytes(4, "little") * 2  # both sizes
    assert zip_refusal(tmp_path, bytes(data)) == (
        "member 'top/a.txt' overlaps the member after it (a zip bomb or a corrupt archive)"
    )


@pytest.mark.parametrize("step", [1, 3, 512, 4096])
def test_peeking_leaves_the_stream_as_it_was(step):
    """tar.py peeks at the first bytes before tarfile reads them: whatever the chunks,
    reads and seeks back after a peek see the same bytes as without it."""
    data = bytes(range(256)) * 16
    stream = Stream(iter([data[i : i + step] for i in range(0, len(data), step)]))
    assert stream.peek(16) == data[:16] and stream.tell() == 0
    assert stream.read(20) == data[:20]
    if step >= 20:  # a seek back stays possible within the chunk already read from
        assert stream.peek(1500) == data[20:1520]
        stream.seek(10)
        assert stream.read(10) == data[10:20]
    stream.skip(1000)
    assert stream.peek(700) == data[1020:1720] and stream.tell() == 1020
    assert stream.read(10) == data[1020:1030]
    stream.seek(1025)
    assert stream.read(600) == data[1025:1625]
    assert stream.peek(len(data)) == data[1625:]  # fewer at the end
    assert bytes(stream.view(len(data))) == data[1625:] and stream.view(1) == b""
