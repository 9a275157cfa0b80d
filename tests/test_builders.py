"""The shared builders build what they say: the other test files rest on them."""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile

import pytest

from tests import builders
from tests.builders import (
    Symlink,
    as_contents,
    contents,
    random_files,
    sample_dataset,
    snapshot,
    tar_contents,
    tree,
    write_files,
    write_tar,
    write_zip,
    zip_contents,
)


def test_random_files_are_seeded_sized_and_named_by_class():
    files = random_files(7, (10, 20), seed=3)
    assert files == random_files(7, (10, 20), seed=3)
    assert files != random_files(7, (10, 20), seed=4)
    assert list(files)[:4] == ["cat/00000.jpg", "dog/00001.jpg", "bird/00002.jpg", "cat/00003.jpg"]
    assert all(10 <= len(data) <= 20 for data in files.values())
    fixed = random_files(3, 5, name="set/{label}/f{i}.bin", labels="ab")
    assert {k: len(v) for k, v in fixed.items()} == {
        "set/a/f0.bin": 5,
        "set/b/f1.bin": 5,
        "set/a/f2.bin": 5,
    }


def test_sample_dataset_is_a_small_training_set():
    files = sample_dataset(10)
    assert sorted(files)[:3] == [
        "train/cat/cat.0001.jpg",
        "train/cat/cat.0003.jpg",
        "train/cat/cat.0005.jpg",
    ]
    assert files["train/empty"] == b"" and files["train/labels.csv"].startswith(b"name,label\n")
    assert len(files) == 12


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_round_trip(tmp_path, mode):
    files = sample_dataset(8)
    path = write_tar(tmp_path / "deep" / "x.tar", files, mode)
    assert tar_contents(path) == files


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_round_trip(tmp_path, method):
    files = sample_dataset(8)
    path = write_zip(tmp_path / "x.zip", files, method)
    assert zip_contents(path) == files
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {method}


def test_archives_hold_folders_and_links_as_members(tmp_path):
    members = {"top": None, "top/a.txt": b"a", "top/link": Symlink("a.txt")}
    with tarfile.open(write_tar(tmp_path / "x.tar.gz", members, "w:gz", mtime=1_700_000_000)) as t:
        kinds = {m.name: (m.type, m.linkname, m.mtime) for m in t.getmembers()}
    assert kinds == {
        "top": (tarfile.DIRTYPE, "", 1_700_000_000),
        "top/a.txt": (tarfile.REGTYPE, "", 1_700_000_000),
        "top/link": (tarfile.SYMTYPE, "a.txt", 1_700_000_000),
    }
    with zipfile.ZipFile(write_zip(tmp_path / "x.zip", members)) as z:
        infos = {i.filename: i for i in z.infolist()}
        assert sorted(infos) == ["top/", "top/a.txt", "top/link"]
        assert infos["top/"].is_dir()
        assert stat.S_ISLNK(infos["top/link"].external_attr >> 16)
        assert z.read("top/link") == b"a.txt"


def test_written_files_are_what_contents_and_tree_show(tmp_path):
    files = random_files(5, 100)
    write_files(tmp_path, files, dirs=["empty"], mtime=1_700_000_000)
    (tmp_path / ".colabmagic").mkdir()
    (tmp_path / ".colabmagic" / "marker").write_bytes(b"m")
    os.symlink("cat/00000.jpg", tmp_path / "link")

    assert contents(tmp_path) == as_contents(files, empty="dir", link="link:cat/00000.jpg")
    assert tree(tmp_path) == {**files, ".colabmagic/marker": b"m", "link": "link:cat/00000.jpg"}
    assert tree(tmp_path, state=False) == {**files, "link": "link:cat/00000.jpg"}
    everything = contents(tmp_path, state=True, skip=tmp_path / "cat")
    assert everything[".colabmagic/marker"] == b"m" and everything[".colabmagic"] == "dir"
    assert not any(name.startswith("cat") for name in everything)
    assert (tmp_path / "cat" / "00000.jpg").stat().st_mtime == 1_700_000_000


def test_snapshot_sees_a_changed_mode_and_unfinished_work(tmp_path):
    write_files(tmp_path, {"a/b": b"1"})
    before = snapshot(tmp_path)
    os.chmod(tmp_path / "a" / "b", 0o600)
    assert snapshot(tmp_path) != before
    assert builders.partials(tmp_path) == [] and builders.unfinished(tmp_path) == []
    (tmp_path / "x.partial").write_bytes(b"")
    (tmp_path / ".colabmagic" / "tmp-1").mkdir(parents=True)
    assert builders.partials(tmp_path) == ["x.partial"]
    assert builders.unfinished(tmp_path) == ["tmp-1"]
