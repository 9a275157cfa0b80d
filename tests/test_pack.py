"""%packdrive: round trips, up-to-date checks, compression choice, shards, failures."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic import fsio, source
from colabmagic.cli import main as cli

# `colabmagic.pack` is the function; the modules behind it are patched in a few tests.
from colabmagic.pack import publish, read, write
from tests.builders import partials, random_files, tree, write_files, zip_contents


def make_folder(folder: Path, n: int, seed: int = 1) -> dict[str, bytes]:
    """N files of random bytes (up to 1.5 kB) in cat/, dog/, bird/, plus one empty folder."""
    return write_files(folder, random_files(n, (0, 1500), seed=seed), dirs=["empty"])


# tarfile's extraction filter, where this Python has it (3.10.12+, 3.11.4+).
SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def test_two_thousand_files_round_trip_through_zip_and_stage(ip, drive_root, workdir):
    folder = drive_root / "MyDrive" / "data sets" / "train"
    files = make_folder(folder, 2000)
    result = ip.run_line_magic("packdrive", '"My Drive/data sets/train"')

    archive = drive_root / "MyDrive" / "data sets" / "train.zip"
    assert result.action == "packed"
    assert result.archives == (archive,)
    assert result.files == 2000
    assert result.bytes == sum(map(len, files.values()))
    assert result.archive_bytes == archive.stat().st_size
    assert result.files_per_s > 0
    assert zip_contents(archive) == {f"train/{k}": v for k, v in files.items()}
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert names == sorted(names)  # sorted member order
    assert "train/empty/" in names  # an empty folder survives
    assert partials(archive.parent) == []
    assert (archive.parent / "train.zip.colabmagic.json").is_file()

    assert result.stage_line == '%stage "My Drive/data sets/train.zip"'
    # Drive paths as the user types them, never the mount's absolute path.
    assert "source         My Drive/data sets/train\n" in str(result)
    assert "archive        My Drive/data sets/train.zip\n" in str(result)
    assert str(drive_root) not in str(result) + result._repr_html_()
    html = result._repr_html_()
    assert "<table>" in html and "files/s" in html
    assert "%stage &quot;My Drive/data sets/train.zip&quot;" in html

    staged = ip.run_line_magic("stage", '"My Drive/data sets/train.zip"')
    assert staged.action == "staged"
    assert tree(workdir / "train") == tree(folder)
    assert (workdir / "train" / "empty").is_dir()


def test_unchanged_folder_is_skipped_without_reading_a_file(ip, drive_root, monkeypatch):
    folder = drive_root / "MyDrive" / "train"
    make_folder(folder, 50)
    first = ip.run_line_magic("packdrive", "train")
    before = first.archives[0].read_bytes()

    def no_reading(*args):
        raise AssertionError("an up-to-date archive must not read the folder's files")

    with monkeypatch.context() as patch:
        patch.setattr(read, "load", no_reading)
        again = ip.run_line_magic("packdrive", "train")
    assert again.action == "skipped"
    assert again.files == 50 and again.archives == first.archives
    assert "--force rebuilds" in str(again)
    assert first.archives[0].read_bytes() == before

    # The manifest is names, sizes and mtimes: a touched file means a rebuild.
    os.utime(folder / "cat" / "00000.jpg", (1, 1))
    (folder / "dog" / "new.jpg").write_bytes(b"new")
    changed = ip.run_line_magic("packdrive", "train")
    assert changed.action == "repacked"
    assert changed.reason == "folder changed: 1 added, 1 changed, 0 removed"
    assert zip_contents(first.archives[0])["train/dog/new.jpg"] == b"new"
    assert ip.run_line_magic("packdrive", "train").action == "skipped"
    forced = ip.run_line_magic("packdrive", "train --force")
    assert forced.action == "repacked" and forced.reason == "--force"


def test_same_folder_gives_the_same_bytes(drive_root):
    folder = drive_root / "MyDrive" / "train"
    make_folder(folder, 300, seed=2)
    for fmt in ("zip", "tar"):
        a = colabmagic.pack("My Drive/train", f"My Drive/a.{fmt}", quiet=True)
        b = colabmagic.pack("My Drive/train", f"My Drive/b.{fmt}", quiet=True)
        assert a.archives[0].read_bytes() == b.archives[0].read_bytes()
    with tarfile.open(drive_root / "MyDrive" / "a.tar") as tf:
        names = tf.getnames()
        assert names == sorted(names)
        got = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    assert got == {f"train/{k}": v for k, v in tree(folder).items()}


def test_auto_stores_what_does_not_shrink_and_deflates_the_rest(ip, drive_root):
    folder = drive_root / "MyDrive" / "mixed"
    folder.mkdir()
    rng = random.Random(3)
    (folder / "noise.bin").write_bytes(rng.randbytes(50_000))
    (folder / "labels.csv").write_bytes(b"file,label\n" + b"img_0001.jpg,cat\n" * 3000)
    (folder / "zeros.jpg").write_bytes(bytes(20_000))  # compressible, but a .jpg
    (folder / "tiny.txt").write_bytes(b"hi")
    (folder / "big.txt").write_bytes(b"the quick brown fox " * 600_000)  # 12 MB: streamed

    def methods(archive: Path) -> dict[str, int]:
        with zipfile.ZipFile(archive) as zf:
            return {i.filename.split("/")[-1]: i.compress_type for i in zf.infolist()}

    result = ip.run_line_magic("packdrive", "mixed")
    stored, deflated = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
    assert methods(result.archives[0]) == {
        "big.txt": deflated,
        "labels.csv": deflated,
        "noise.bin": stored,
        "tiny.txt": stored,
        "zeros.jpg": stored,
    }
    assert (result.deflated, result.stored) == (2, 3)
    assert "2 deflated, 3 stored" in result._repr_html_()
    assert zip_contents(result.archives[0]) == {f"mixed/{k}": v for k, v in tree(folder).items()}

    every = ip.run_line_magic("packdrive", "mixed --compress deflate")
    assert every.action == "repacked" and every.reason == "new compress"
    assert set(methods(every.archives[0]).values()) == {deflated}
    none = ip.run_line_magic("packdrive", "mixed --compress store")
    assert set(methods(none.archives[0]).values()) == {stored}
    assert zip_contents(none.archives[0]) == zip_contents(every.archives[0])


def test_shards_follow_webdataset_naming(ip, drive_root, workdir):
    folder = drive_root / "MyDrive" / "wds"
    rng = random.Random(4)
    files = {}
    for i in range(120):
        files[f"s{i:04d}.jpg"] = rng.randbytes(rng.randint(1000, 3000))
        files[f"s{i:04d}.cls"] = str(i % 2).encode()
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)

    result = ip.run_line_magic("packdrive", '"My Drive/wds" "My Drive/shards/" --shard-size 50KB')
    shards = sorted((drive_root / "MyDrive" / "shards").glob("wds-*.tar"))
    assert len(shards) >= 4
    assert result.archives == tuple(shards)
    assert [p.name for p in shards] == [f"wds-{i:06d}.tar" for i in range(len(shards))]
    assert result.pattern == f"wds-{{000000..{len(shards) - 1:06d}}}.tar"
    assert result.stage_line == '%stage "My Drive/shards/wds-*.tar"'
    members = []
    for shard in shards:
        with tarfile.open(shard) as tf:
            names = tf.getnames()
        keys = {n.rsplit(".", 1)[0] for n in names}
        assert all(f"{k}.jpg" in names and f"{k}.cls" in names for k in keys)  # samples whole
        assert shard.stat().st_size <= 50_000 + 10_240  # + tar's end-of-archive records
        members += names
    assert members == sorted(f"wds/{n}" for n in files)
    for shard in shards:
        with tarfile.open(shard) as tf:
            tf.extractall(workdir / "untarred", **SAFE)
    assert tree(workdir / "untarred" / "wds") == tree(folder)

    # Fewer, larger shards: the extra old shards go, or the glob would stage them too.
    fewer = ip.run_line_magic("packdrive", '"My Drive/wds" "My Drive/shards/" --shard-size 1MiB')
    assert fewer.action == "repacked" and fewer.reason == "new shard size"
    assert sorted(p.name for p in shards[0].parent.glob("wds-*.tar")) == ["wds-000000.tar"]


def test_shards_stage_back_by_their_glob(ip, drive_root, workdir):
    folder = drive_root / "MyDrive" / "wds"
    make_folder(folder, 200, seed=5)
    result = ip.run_line_magic("packdrive", '"My Drive/wds" --shard-size 100KB')
    assert len(result.archives) > 1
    staged = ip.run_line_magic("stage", result.stage_line.split(" ", 1)[1])
    assert staged.files == 200
    assert tree(workdir / "wds") == tree(folder)


def test_sizes_are_read_like_people_write_them():
    assert write.parse_size("500MB") == 500_000_000
    assert write.parse_size("1GB") == 10**9
    assert write.parse_size("1GiB") == 2**30
    assert write.parse_size("1.5 gb") == 1_500_000_000
    assert write.parse_size("4096") == 4096
    with pytest.raises(colabmagic.ColabMagicError, match="write it like 500MB"):
        write.parse_size("lots")


def test_bad_arguments_are_one_line_errors(ip, drive_root):
    make_folder(drive_root / "MyDrive" / "train", 3)
    with pytest.raises(UsageError, match="would be inside the folder it packs"):
        ip.run_line_magic("packdrive", '"My Drive/train" "My Drive/train/train.zip"')
    with pytest.raises(UsageError, match="inside the folder"):
        ip.run_line_magic("packdrive", '"My Drive/train" "My Drive/train/" --shard-size 1MB')
    with pytest.raises(UsageError, match='no such file or folder.*did you mean "train"'):
        ip.run_line_magic("packdrive", '"My Drive/trian"')
    with pytest.raises(UsageError, match="needs --format zip"):
        ip.run_line_magic("packdrive", "train --format tar --compress deflate")
    (drive_root / "MyDrive" / "nothing").mkdir()
    with pytest.raises(UsageError, match="nothing to pack"):
        ip.run_line_magic("packdrive", "nothing")
    assert sorted(os.listdir(drive_root / "MyDrive")) == ["nothing", "train"]


def test_an_archive_packdrive_did_not_make_is_replaced_only_with_force(ip, drive_root):
    make_folder(drive_root / "MyDrive" / "train", 5)
    mine = drive_root / "MyDrive" / "train.zip"
    mine.write_bytes(b"my own zip")
    with pytest.raises(UsageError, match="train.zip exists and was not made by %packdrive"):
        ip.run_line_magic("packdrive", "train")
    assert mine.read_bytes() == b"my own zip"
    assert ip.run_line_magic("packdrive", "train --force").action == "packed"
    assert len(zip_contents(mine)) == 5


def fail_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make fsync of the copy in Drive fail with EIO (Drive dropping the upload)."""
    calls = []

    def broken(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(source, "BACKOFF_FIRST", 0.0)
    monkeypatch.setattr(os, "fsync", broken)
    return calls


def test_a_failed_copy_to_drive_leaves_no_archive_and_no_partial(ip, drive_root, monkeypatch):
    make_folder(drive_root / "MyDrive" / "train", 200)
    calls = fail_fsync(monkeypatch)
    tries = source.retries() + 1  # the one Drive retry policy, the `retries` trait's count
    with pytest.raises(
        UsageError, match=rf"copying to Drive failed: .*after {tries} tries.*nothing was left"
    ):
        ip.run_line_magic("packdrive", "train")
    assert len(calls) == tries
    assert sorted(os.listdir(drive_root / "MyDrive")) == ["train"]


def test_the_retries_trait_is_the_count_of_copy_tries(ip, drive_root, monkeypatch):
    make_folder(drive_root / "MyDrive" / "train", 20)
    calls = fail_fsync(monkeypatch)
    ip.run_line_magic("config", "ColabMagic.retries = 0")
    with pytest.raises(UsageError, match=r"\(after 1 try\): Drive dropped .* --remount; nothing"):
        ip.run_line_magic("packdrive", "train")
    assert len(calls) == 1
    ip.run_line_magic("config", "ColabMagic.retries = 2")
    with pytest.raises(UsageError, match=r"\(after 3 tries\)"):
        ip.run_line_magic("packdrive", "train")
    assert len(calls) == 1 + 3
    assert sorted(os.listdir(drive_root / "MyDrive")) == ["train"]


def test_a_failed_rebuild_keeps_the_previous_archive(ip, drive_root, monkeypatch):
    folder = drive_root / "MyDrive" / "train"
    make_folder(folder, 20)
    first = ip.run_line_magic("packdrive", "train")
    before = first.archives[0].read_bytes()
    sidecar = (drive_root / "MyDrive" / "train.zip.colabmagic.json").read_bytes()
    (folder / "cat" / "more.jpg").write_bytes(b"more")
    with monkeypatch.context() as patch:
        fail_fsync(patch)
        with pytest.raises(UsageError, match="the previous archive is as it was"):
            ip.run_line_magic("packdrive", "train")
    assert first.archives[0].read_bytes() == before
    assert (drive_root / "MyDrive" / "train.zip.colabmagic.json").read_bytes() == sidecar
    assert partials(drive_root / "MyDrive") == []
    assert ip.run_line_magic("packdrive", "train").action == "repacked"


def test_ctrl_c_cleans_up_and_is_raised_again(drive_root, monkeypatch, tmp_path):
    make_folder(drive_root / "MyDrive" / "train", 30)
    local_tmp = tmp_path / "local-tmp"
    local_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(local_tmp))
    seen = []

    def interrupted(path, fmt, members):
        seen.append(path)
        assert path.name == "train.zip.partial" and path.exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        colabmagic.pack("My Drive/train", quiet=True)
    assert seen and sorted(os.listdir(drive_root / "MyDrive")) == ["train"]
    assert os.listdir(local_tmp) == []  # the local build is gone too


def test_free_space_is_checked_first_and_both_numbers_are_said(ip, drive_root, monkeypatch):
    make_folder(drive_root / "MyDrive" / "train", 10)
    monkeypatch.setattr(fsio, "free_bytes", lambda path: 1000)
    with pytest.raises(
        UsageError, match=r"not enough local disk .* needs 1\.\d MB but .* 1\.0 kB free"
    ):
        ip.run_line_magic("packdrive", "train")
    assert sorted(os.listdir(drive_root / "MyDrive")) == ["train"]


def test_a_file_system_that_does_not_say_its_free_space_is_not_refused(ip, drive_root, monkeypatch):
    # A FUSE file system without statfs reports zero blocks: unknown, not full.
    files = make_folder(drive_root / "MyDrive" / "train", 5)
    zeros = os.statvfs_result((4096, 4096, 0, 0, 0, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: zeros)
    result = ip.run_line_magic("packdrive", "train")
    assert result.action == "packed"
    assert zip_contents(result.archives[0]) == {f"train/{k}": v for k, v in files.items()}


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_drive_too_small_is_refused_before_writing(ip, drive_root):
    rng = random.Random(6)
    folder = drive_root / "MyDrive" / "train"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i}.bin").write_bytes(rng.randbytes(100_000))
    small = drive_root / "MyDrive" / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(
            UsageError, match=r"not enough space in Drive .* needs 3\.\d MB but .* free"
        ):
            ip.run_line_magic("packdrive", '"My Drive/train" "My Drive/small/train.zip"')
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def test_cli_twin(drive_root, capsys):
    files = make_folder(drive_root / "MyDrive" / "train", 40)
    code = cli(["--drive", str(drive_root), "pack", "My Drive/train", "--format", "tar", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "packed" in out and '%stage "My Drive/train.tar"' in out
    with tarfile.open(drive_root / "MyDrive" / "train.tar") as tf:
        assert len([m for m in tf.getmembers() if m.isfile()]) == len(files)
    assert cli(["--drive", str(drive_root), "pack", "My Drive/train", "--format", "tar"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert cli(["--drive", str(drive_root), "pack", "My Drive/nope"]) == 2
    assert "colabmagic pack: no such file or folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- simulated Drive

fakedrive = colabmagic.fakedrive
_no_fake = fakedrive.available()


@pytest.fixture
def fake_root(tmp_path):
    """A simulated Drive (profile "fast") over a folder holding MyDrive, as the root."""
    from colabmagic import drive

    src = tmp_path / "drive-src"
    (src / "MyDrive").mkdir(parents=True)
    with fakedrive.mount(src, profile="fast") as root:
        drive.use_root(root)
        try:
            yield root
        finally:
            drive.use_root(None)


@pytest.mark.skipif(_no_fake is not None, reason=f"simulated Drive: {_no_fake}")
def test_over_the_simulated_drive_round_trip_then_a_failed_verify(fake_root, workdir):
    files = make_folder(fake_root / "MyDrive" / "train", 300, seed=9)
    result = colabmagic.pack("My Drive/train", quiet=True)
    assert result.action == "packed"
    assert zip_contents(fake_root / "MyDrive" / "train.zip") == {
        f"train/{k}": v for k, v in files.items()
    }
    assert colabmagic.stage("My Drive/train.zip", quiet=True).files == 300
    assert tree(workdir / "train") == tree(fake_root / "MyDrive" / "train")

    # Drive fails every read of the uploaded copy: the verify step catches it.
    fakedrive.configure(
        fake_root, fail_path="/MyDrive/train.tar.partial", fail_after=0, fail_always=True
    )
    with pytest.raises(colabmagic.ColabMagicError, match="verifying the copy in Drive failed"):
        colabmagic.pack("My Drive/train", "My Drive/train.tar", quiet=True)
    assert not (fake_root / "MyDrive" / "train.tar").exists()
    assert partials(fake_root / "MyDrive") == []


@pytest.mark.skipif(_no_fake is not None, reason=f"simulated Drive: {_no_fake}")
def test_over_the_simulated_drive_a_source_that_keeps_failing(fake_root, monkeypatch):
    make_folder(fake_root / "MyDrive" / "train", 100, seed=10)
    monkeypatch.setattr(source, "BACKOFF_FIRST", 0.0)
    fakedrive.configure(fake_root, fail_rate=1.0, fail_errno="ENOTCONN")
    with pytest.raises(colabmagic.ColabMagicError, match=r"reading failed: train/.*not connected"):
        colabmagic.pack("My Drive/train", quiet=True)
    fakedrive.configure(fake_root, fail_rate=None)
    assert sorted(os.listdir(fake_root / "MyDrive")) == ["train"]


# --------------------------------------------------------------------------- names %stage refuses

# Names a Drive folder can hold that %stage refuses in an archive (issue 10, item 9).
REFUSED = {
    "holiday\\2023.jpg": "has a backslash in its name",
    "bell\x07.txt": "has a control character in its name",
    "two\nlines.txt": "has a control character in its name",
    "\u202egnp.exe": "has a control character in its name",  # a bidi override
    "\uff0e\uff0e": "has a part that reads as '\uff0e\uff0e'",  # fullwidth dots: ".." after NFKC
}


def make_awkward_folder(folder: Path) -> dict[str, bytes]:
    """Good files beside every kind of name %stage refuses; returns the good ones."""
    good = {"ok.jpg": b"fine", "sub/also ok.txt": b"spaces are fine", "caf\u00e9.txt": b"utf-8"}
    for name, data in good.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    for name in REFUSED:
        (folder / name).write_bytes(b"left out")
    (folder / "bad\\dir").mkdir()  # a folder that %stage refuses: left out whole
    (folder / "bad\\dir" / "inside.txt").write_bytes(b"left out with its folder")
    deep = folder.joinpath(*["d"] * 255)  # train/d/.../d/deep.txt: 257 parts, stage takes 256
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_bytes(b"too deep")
    return good


def test_names_stage_would_refuse_are_left_out_and_listed_and_stage_takes_the_rest(
    ip, drive_root, workdir
):
    folder = drive_root / "MyDrive" / "photos"
    folder.mkdir()
    good = make_awkward_folder(folder)
    os.mkfifo(folder / "a pipe")
    result = ip.run_line_magic("packdrive", "photos")

    assert result.action == "packed" and result.files == len(good)
    why = dict(result.left_out)
    for name, reason in REFUSED.items():
        assert why[f"photos/{name}"] == f"%stage refuses a name that {reason}"
    assert why["photos/bad\\dir/"] == (
        "a folder, left out with all it holds: %stage refuses a name that has a backslash "
        "in its name"
    )
    deep_name = "photos/" + "d/" * 255 + "deep.txt"
    assert why[deep_name] == "%stage refuses a name that is more than 256 folders deep"
    assert why["photos/a pipe"] == "neither a file nor a folder"
    assert len(why) == len(REFUSED) + 3
    assert zip_contents(result.archives[0]) == {f"photos/{k}": v for k, v in good.items()}

    # Said once, on one line, escaped: a control character does not reach the output.
    text = str(result)
    assert f"Left out {len(why)} entries: 'photos/a pipe' (neither a file nor a folder), " in text
    assert f"and {len(why) - 5} more (PackResult.left_out lists all)." in text
    line = next(line for line in text.splitlines() if "Left out" in line)
    assert line.endswith("lists all).") and "\x07" not in text
    html = result._repr_html_()
    assert f"Left out {len(why)} entries" in html and "\x07" not in html and "\u202e" not in html

    staged = ip.run_line_magic("stage", '"My Drive/photos.zip"')
    assert staged.action == "staged" and staged.files == len(good)
    assert tree(workdir / "photos") == good

    # Up to date: not rebuilt, and still says what it leaves out.
    again = ip.run_line_magic("packdrive", '"My Drive/photos"')  # ./photos is local now
    assert again.action == "skipped" and dict(again.left_out) == why


def test_a_tar_keeps_names_that_are_not_utf8_and_stage_takes_them_back(ip, drive_root, workdir):
    folder = drive_root / "MyDrive" / "raw"
    folder.mkdir()
    (folder / "ok.bin").write_bytes(b"ok")
    raw = os.fsencode(folder) + b"/caf\xe9.bin"  # Latin-1, as an old camera names files
    with open(raw, "wb") as f:
        f.write(b"latin-1 name")
    (folder / "holiday\\2023.jpg").write_bytes(b"left out")

    zipped = ip.run_line_magic("packdrive", "raw")
    assert dict(zipped.left_out) == {
        "raw/holiday\\2023.jpg": "%stage refuses a name that has a backslash in its name",
        "raw/caf\udce9.bin": (
            "its name is not UTF-8, which a zip cannot hold; --format tar keeps it"
        ),
    }
    tarred = ip.run_line_magic("packdrive", "raw --format tar")
    assert [name for name, _ in tarred.left_out] == ["raw/holiday\\2023.jpg"]
    assert "Left out 1 entry: 'raw/holiday\\\\2023.jpg' (%stage refuses" in str(tarred)
    assert "..." not in str(tarred) and "more (" not in str(tarred)

    staged = ip.run_line_magic("stage", '"My Drive/raw.tar"')
    assert staged.files == 2
    assert sorted(os.listdir(os.fsencode(workdir / "raw"))) == [b"caf\xe9.bin", b"ok.bin"]
    with open(os.fsencode(workdir / "raw") + b"/caf\xe9.bin", "rb") as f:
        assert f.read() == b"latin-1 name"


def test_a_folder_whose_own_name_stage_refuses_is_not_packed(drive_root):
    folder = drive_root / "MyDrive" / "bad\\name"
    make_folder(folder, 3)
    with pytest.raises(colabmagic.ColabMagicError, match=r"cannot pack 'bad\\\\name': every"):
        colabmagic.pack(str(folder), quiet=True)
    assert sorted(os.listdir(drive_root / "MyDrive")) == ["bad\\name"]


def test_a_folder_of_only_refused_names_says_so(ip, drive_root):
    folder = drive_root / "MyDrive" / "odd"
    folder.mkdir()
    (folder / "a\\b.txt").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"nothing to pack: .* left out: 1 entry: 'odd/a"):
        ip.run_line_magic("packdrive", "odd")


@pytest.mark.skipif(_no_fake is not None, reason=f"simulated Drive: {_no_fake}")
def test_over_the_simulated_drive_a_drop_out_mid_file_resumes_at_its_offset(fake_root, monkeypatch):
    folder = fake_root / "MyDrive" / "model"
    folder.mkdir()
    weights = random.Random(11).randbytes(read.SMALL_FILE + 1_500_000)  # streamed, not whole
    (folder / "weights.bin").write_bytes(weights)
    (folder / "config.json").write_bytes(b"{}")
    monkeypatch.setattr(source, "BACKOFF_FIRST", 0.0)
    # Once, past the first read: ESTALE is a drop-out like EIO and ENOTCONN.
    fakedrive.configure(
        fake_root,
        fail_path="/MyDrive/model/weights.bin",
        fail_after=read.SMALL_FILE + 1_000_000,
        fail_errno="ESTALE",
    )
    result = colabmagic.pack("My Drive/model", "My Drive/model.tar", quiet=True)
    assert fakedrive.status(fake_root)["armed"] is False  # the fault did fire
    fakedrive.configure(fake_root, fail_after=None)
    assert result.files == 2
    with tarfile.open(fake_root / "MyDrive" / "model.tar") as tf:
        assert tf.extractfile("model/weights.bin").read() == weights
