"""Reading archives in place: open_archive, ArchiveDataset, the index cache and the
block cache of an archive on Drive (plain folder and simulated Drive)."""

from __future__ import annotations

import csv
import importlib
import io
import multiprocessing
import os
import pickle
import random
import tarfile
import zipfile
from pathlib import Path

import pytest

import colabmagic
from colabmagic import fakedrive
from colabmagic.errors import ColabMagicError
from tests.builders import SHARED, write_tar, write_zip

inplace = importlib.import_module("colabmagic.inplace")
index_module = importlib.import_module("colabmagic.inplace.index")
blockcache = importlib.import_module("colabmagic.inplace.blockcache")
source_module = importlib.import_module("colabmagic.source")

no_fakedrive = fakedrive.available()
CORPUS = SHARED / "hostile-archives"
ROWS = (
    list(csv.DictReader((CORPUS / "MANIFEST.tsv").open(), delimiter="\t"))
    if CORPUS.is_dir()
    else []
)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Indexes and block caches of this test only."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("COLABMAGIC_CACHE", str(folder))
    return folder


def sample_files(n: int = 300, seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        ext = (".jpg", ".cls", ".txt")[i % 3]
        # Some compress (repeated text), some do not (random bytes), some are empty.
        body = rng.randbytes(rng.randint(0, 6000)) if i % 3 else b"label %d\n" % i * (i % 50)
        files[f"train/{i % 4}/s{i // 3:05d}{ext}"] = body
    return files


def write_mixed_zip(path: Path, files: dict[str, bytes]) -> Path:
    """A zip whose members are stored and deflated by turns."""
    with zipfile.ZipFile(path, "w") as z:
        for i, (name, data) in enumerate(files.items()):
            z.writestr(name, data, zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED)
    return path


# --------------------------------------------------------------------------- the API


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_members_read_by_name_as_written(tmp_path, kind):
    files = sample_files()
    path = (write_mixed_zip if kind == "zip" else write_tar)(tmp_path / f"a.{kind}", files)
    with colabmagic.open_archive(path) as a:
        assert a.kind == kind and not a.cached  # local: no block cache
        assert len(a) == len(files)
        assert a.names() == list(files)
        assert "train/1/s00000.cls" in a and "train/1/nope" not in a and 3 not in a
        for name, data in files.items():
            assert a.read(name) == data
        with a.open("train/2/s00000.txt") as f:
            assert f.read() == files["train/2/s00000.txt"]
        with pytest.raises(KeyError, match="nope"):
            a.read("nope")


def test_folders_are_not_members_and_hard_links_read_as_their_target(tmp_path):
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as t:
        folder = tarfile.TarInfo("top")
        folder.type = tarfile.DIRTYPE
        t.addfile(folder)
        info = tarfile.TarInfo("top/a.bin")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
        link = tarfile.TarInfo("top/b.bin")
        link.type = tarfile.LNKTYPE
        link.linkname = "top/a.bin"
        t.addfile(link)
    a = colabmagic.open_archive(path)
    assert a.names() == ["top/a.bin", "top/b.bin"]
    assert a.read("top/b.bin") == b"hello"


def test_a_corrupt_zip_member_fails_its_crc_and_a_cut_tar_is_refused(tmp_path):
    path = write_zip(tmp_path / "c.zip", {"a.bin": b"x" * 1000, "b.bin": bytes(range(200))})
    raw = bytearray(path.read_bytes())
    at = raw.index(bytes(range(200)))  # b.bin is stored: flip one of its bytes
    raw[at + 10] ^= 0xFF
    path.write_bytes(raw)
    a = colabmagic.open_archive(path)
    assert a.read("a.bin") == b"x" * 1000
    with pytest.raises(ColabMagicError, match="'b.bin' fails its CRC check"):
        a.read("b.bin")

    tar = write_tar(tmp_path / "t.tar", {"a.bin": b"a" * 3000, "b.bin": b"b" * 3000})
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[: 512 * 9])  # b.bin's data stops half way
    with pytest.raises(ColabMagicError, match="'b.bin'.*truncated|corrupt tar"):
        colabmagic.open_archive(cut)


@pytest.mark.parametrize(
    ("name", "mode", "said"),
    [("d.tar.gz", "w:gz", "gzip"), ("d.tar.xz", "w:xz", "xz"), ("hidden.tar", "w:gz", "gzip")],
)
def test_compressed_tar_refused_with_what_to_do(tmp_path, name, mode, said):
    path = write_tar(tmp_path / name, {"a": b"1"}, mode)
    with pytest.raises(ColabMagicError) as caught:
        colabmagic.open_archive(path)
    message = str(caught.value)
    assert f"{said}-compressed tar" in message
    assert "%packdrive --format tar" in message and "\n" not in message


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ({"../evil": b"x"}, 'has a ".." segment'),
        ({"/abs": b"x"}, "is an absolute path"),
        ({"a\\b": b"x"}, "backslash"),
        ({"a": b"1", "a/b": b"2"}, "inside 'a', which is a file"),
    ],
)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_names_stage_refuses_refuse_the_archive(tmp_path, kind, members, why):
    if kind == "zip":
        path = tmp_path / "bad.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name as given
    else:
        path = write_tar(tmp_path / "bad.tar", members)
    with pytest.raises(ColabMagicError, match=why):
        colabmagic.open_archive(path)
    with pytest.raises(ColabMagicError, match=why):
        colabmagic.stage(path, tmp_path / "out", quiet=True)
    assert not (index_module.cache_path(inplace.default_cache_dir(), path, 0, 0).parent).exists()


@pytest.mark.skipif(not ROWS, reason="../shared/hostile-archives not found")
@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_hostile_corpus_reads_in_place_as_stage_unpacks(tmp_path, row):
    """Each archive of the shared corpus: what %stage refuses is refused (when opened,
    or when the offending member is read); what it unpacks reads the same bytes."""
    path = CORPUS / row["file"]
    if path.name.endswith((".bz2", ".tar.xz")):
        with pytest.raises(ColabMagicError):
            colabmagic.open_archive(path)
        return
    try:
        with colabmagic.open_archive(path) as a:
            got = {name: a.read(name) for name in a.names()}
    except ColabMagicError as error:
        assert row["outcome"] == "refuse", f"{row['file']} refused: {error}"
        assert "\n" not in str(error)
        return
    assert row["outcome"] == "extract", f"{row['file']} should have been refused"
    out = tmp_path / "out"
    fmt = "auto" if path.suffix in (".zip", ".tar") else "zip"
    colabmagic.stage(path, out, quiet=True, format=fmt)
    staged = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and not p.is_symlink() and ".colabmagic" not in p.parts
    }
    assert got == staged


# --------------------------------------------------------------------------- the index


def test_index_built_once_then_read_from_the_cache(tmp_path, monkeypatch, cache):
    path = write_tar(tmp_path / "big.tar", sample_files(500))
    first = colabmagic.open_archive(path)
    saved = list(cache.glob("index/*.idx"))
    assert len(saved) == 1

    def no_build(*args):
        raise AssertionError("the index was built again")

    monkeypatch.setattr(index_module, "build_tar", no_build)
    again = colabmagic.open_archive(path)
    assert again.names() == first.names()
    name = first.names()[5]
    assert again.read(name) == first.read(name) == sample_files(500)[name]

    # A new version of the archive (another size and mtime) is indexed anew, and the
    # index of the old version goes.
    monkeypatch.undo()
    monkeypatch.setenv("COLABMAGIC_CACHE", str(cache))
    files = sample_files(10, seed=99)
    write_tar(path, files)
    os.utime(path, ns=(1, 1))
    fresh = colabmagic.open_archive(path)
    assert fresh.names() == list(files)
    assert len(list(cache.glob("index/*.idx"))) == 1


def test_index_is_arrays_and_one_blob_not_an_object_per_member(tmp_path):
    n = 20_000
    files = {f"d/{i:06d}.bin": b"" for i in range(n)}
    a = colabmagic.open_archive(write_tar(tmp_path / "many.tar", files))
    index = a.index
    assert isinstance(index.blob, bytes) and len(index.blob) == sum(map(len, files))
    held = len(index.blob) + sum(
        len(getattr(index, attr)) * getattr(index, attr).itemsize for attr, _ in index._ARRAYS
    )
    assert held <= n * (41 + 12)  # 41 bytes of arrays per member, plus its name
    assert a.read("d/019999.bin") == b"" and "d/020000.bin" not in a


# --------------------------------------------------------------------------- datasets


def test_dataset_selects_by_suffix_and_pickles_without_open_files(tmp_path):
    files = sample_files()
    path = write_mixed_zip(tmp_path / "a.zip", files)
    ds = colabmagic.ArchiveDataset(path, suffixes=(".jpg", ".txt"))
    wanted = [n for n in files if n.endswith((".jpg", ".txt"))]
    assert len(ds) == len(wanted) and ds.names() == wanted
    assert ds[0] == (wanted[0], files[wanted[0]])
    assert ds[-1] == (wanted[-1], files[wanted[-1]])
    with pytest.raises(IndexError):
        ds[len(ds)]
    blob = pickle.dumps(ds)
    assert len(blob) < 4096  # the path and the selection, not the index or the bytes
    clone = pickle.loads(blob)
    assert [clone[i] for i in range(len(clone))] == [(n, files[n]) for n in wanted]


def _sum_items(ds, numbers):
    return [(ds[i][0], sum(ds[i][1])) for i in numbers]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dataset_read_in_worker_processes(tmp_path, method):
    files = sample_files(120)
    ds = colabmagic.ArchiveDataset(write_tar(tmp_path / "a.tar", files))
    ds[0]  # the parent has its file open before the fork
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        halves = pool.starmap(_sum_items, [(ds, range(0, 60)), (ds, range(60, 120))])
    assert halves[0] + halves[1] == [(n, sum(d)) for n, d in files.items()]


def test_torch_dataloader_with_two_workers(tmp_path):
    torch_data = pytest.importorskip("torch.utils.data")
    files = sample_files(64)
    ds = colabmagic.ArchiveDataset(write_mixed_zip(tmp_path / "a.zip", files), suffixes=".jpg")
    loader = torch_data.DataLoader(ds, batch_size=None, num_workers=2, shuffle=True)
    got = dict(loader)
    assert got == {n: d for n, d in files.items() if n.endswith(".jpg")}


# --------------------------------------------------------------------------- on Drive


def test_drive_path_read_through_the_block_cache(drive_root, cache, monkeypatch):
    monkeypatch.setattr(blockcache, "BLOCK", 64 << 10)
    files = sample_files(400)
    write_mixed_zip(drive_root / "MyDrive" / "train.zip", files)
    a = colabmagic.open_archive("My Drive/train.zip")
    assert a.cached
    assert {n: a.read(n) for n in random.Random(3).sample(list(files), len(files))} == files
    a._reader.wait_readahead()  # the read-ahead has filled every block by now
    reader = a._reader
    assert reader.cached_blocks() == reader.blocks
    data = next(cache.glob("blocks/*.data"))
    assert data.read_bytes() == (drive_root / "MyDrive" / "train.zip").read_bytes()
    a.close()

    # A second open (a later epoch, another process) reads no block from Drive.
    again = colabmagic.open_archive("MyDrive/train.zip")
    assert [again.read(n) for n in files] == list(files.values())
    assert again._reader.fetched == 0


def test_block_cache_stays_under_its_bound(drive_root, cache, monkeypatch):
    monkeypatch.setattr(blockcache, "BLOCK", 16 << 10)
    rng = random.Random(5)
    files = {f"f{i:03d}": rng.randbytes(3000) for i in range(200)}  # ~600 KB, 37 blocks
    write_tar(drive_root / "MyDrive" / "big.tar", files)
    a = colabmagic.open_archive("My Drive/big.tar", cache_bytes=4 * (16 << 10))
    for _ in range(2):
        for name in rng.sample(list(files), len(files)):
            assert a.read(name) == files[name]
            assert a._reader.cached_blocks() <= 4
    data = next(cache.glob("blocks/*.data"))
    assert os.stat(data).st_blocks * 512 <= 5 * (16 << 10)  # holes punched, not just unmarked


def test_drive_read_directly_when_the_cache_folder_is_unusable(drive_root, tmp_path):
    files = sample_files(30)
    write_mixed_zip(drive_root / "MyDrive" / "train.zip", files)
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")  # nothing can be made under a file
    a = colabmagic.open_archive("My Drive/train.zip", cache_dir=blocked)
    assert not a.cached and a.warnings and "no block cache" in a.warnings[0]
    assert {n: a.read(n) for n in files} == files
    assert isinstance(a._reader, source_module.SourceFile)  # Drive's retry policy still


def _read_all(path: str, names: list[str]) -> tuple[int, list[int]]:
    a = colabmagic.open_archive(path)
    sums = [sum(a.read(n)) for n in names]
    a._reader.wait_readahead()
    return a._reader.fetched, sums


def test_worker_processes_share_one_cache_and_fetch_each_block_once(drive_root, cache, monkeypatch):
    monkeypatch.setattr(blockcache, "BLOCK", 32 << 10)
    files = sample_files(600)
    path = write_tar(drive_root / "MyDrive" / "shared.tar", files)
    a = colabmagic.open_archive(path)  # indexes it (this fetches the blocks too)
    blocks = a._reader.blocks
    for f in cache.glob("blocks/*"):
        f.unlink()  # start from an empty block cache
    a.close()
    names = list(files)
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        results = pool.starmap(_read_all, [(str(path), names[i::3]) for i in range(3)])
    assert sum(fetched for fetched, _ in results) == blocks
    for i, (_, sums) in enumerate(results):
        assert sums == [sum(files[n]) for n in names[i::3]]


@pytest.fixture(scope="module")
def fake_drive():
    if no_fakedrive is not None:
        pytest.skip(f"fake Drive unavailable: {no_fakedrive}")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="colabmagic-inplace-") as tmp:
        src = Path(tmp) / "src"
        (src / "MyDrive").mkdir(parents=True)
        with fakedrive.mount(src, profile="fast") as root:
            yield src, root


def test_drive_drop_outs_are_retried(fake_drive, monkeypatch):
    from colabmagic import drive

    src, root = fake_drive
    monkeypatch.setattr(source_module, "BACKOFF_FIRST", 0.001)
    monkeypatch.setattr(blockcache, "BLOCK", 256 << 10)
    rng = random.Random(11)
    files = {f"x/{i:03d}.bin": rng.randbytes(20_000) for i in range(100)}  # 2 MB
    write_mixed_zip(src / "MyDrive" / "drops.zip", files)
    drive.use_root(root)
    try:
        fakedrive.configure(root, fail_after=700_000, fail_errno="ENOTCONN")
        a = colabmagic.open_archive("My Drive/drops.zip")
        assert a.cached
        assert {n: a.read(n) for n in files} == files
        assert fakedrive.status(root)["armed"] is False  # the drop-out did happen
    finally:
        fakedrive.configure(root, fail_after=None, fail_errno=None)
        drive.use_root(None)


def test_drive_that_keeps_dropping_fails_in_one_line(fake_drive, monkeypatch, cache):
    from colabmagic import drive

    src, root = fake_drive
    monkeypatch.setattr(source_module, "BACKOFF_FIRST", 0.001)
    monkeypatch.setattr(blockcache, "BLOCK", 64 << 10)
    files = {f"{i}.bin": bytes([i]) * 10_000 for i in range(50)}
    write_tar(src / "MyDrive" / "dead.tar", files)
    drive.use_root(root)
    try:
        a = colabmagic.open_archive("My Drive/dead.tar", retries=2)
        for f in cache.glob("blocks/*"):
            f.unlink()
        a.close()
        b = colabmagic.open_archive("My Drive/dead.tar", retries=2)
        fakedrive.configure(root, fail_after=0, fail_always=True, fail_errno="EIO")
        with pytest.raises(source_module.DriveDropped, match="EIO after 2 retries"):
            b.read("7.bin")
    finally:
        fakedrive.configure(root, fail_after=None, fail_errno=None, fail_always=None)
        drive.use_root(None)
