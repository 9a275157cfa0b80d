"""A stage is one transaction: what it may replace, checked at the moment of each move.

Each test here is one broken promise of issue 10 (items 1-6 and 10) reproduced as a
user or an attacker would meet it, plus the glob and --to messages.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

import colabmagic
from colabmagic.cli import main as cli
from colabmagic.errors import ColabMagicError
from tests.builders import contents


def write_tar(path: Path, entries: dict[str, bytes | str | None]) -> Path:
    """ENTRIES: name -> bytes (a file), "->target" (a symlink) or None (a folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, value in entries.items():
            info = tarfile.TarInfo(name)
            if value is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            elif isinstance(value, str):
                info.type = tarfile.SYMTYPE
                info.linkname = value[2:]
                tf.addfile(info)
            else:
                info.size = len(value)
                tf.addfile(info, io.BytesIO(value))
    return path


def write_zip(path: Path, entries: dict[str, bytes | str]) -> Path:
    """ENTRIES: name -> bytes (a file) or "->target" (a symlink)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in entries.items():
            if isinstance(value, str):
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, value[2:])
            else:
                zf.writestr(name, value)
    return path


def snapshot(folder: Path) -> dict[str, object]:
    """Everything under FOLDER, .colabmagic included: bytes, link targets, folders."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            if rel.startswith(".colabmagic"):
                continue
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.read_bytes()
    return found


@pytest.fixture
def place(tmp_path):
    """(drive folder of archives, DIR holding the user's work, a folder outside DIR)."""
    drive = tmp_path / "drive"
    drive.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sentinel.txt").write_bytes(b"mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"root:x:0:0")
    return drive, target, outside


# --------------------------------------------------------------------------- 1: a glob


def test_a_glob_never_writes_through_a_link_another_match_made(place):
    drive, target, outside = place
    write_tar(drive / "shard-0.tar", {"real/a.txt": b"a", "s": "->real"})
    write_tar(drive / "shard-1.tar", {"s/x.txt": b"written through the link"})
    with pytest.raises(ColabMagicError) as caught:
        colabmagic.stage(str(drive / "shard-*.tar"), target, quiet=True)
    message = str(caught.value)
    assert message.startswith("shard-1.tar: member 's/x.txt'")
    assert "nothing was staged" in message and "other 1 match " in message
    assert snapshot(target) == {"sentinel.txt": b"mine"}


def test_a_chain_of_links_across_shards_never_leaves_dir(place):
    drive, target, outside = place
    # Each shard alone stays inside; together they climb out to OUTSIDE's parent.
    write_tar(drive / "c-0.tar", {"d1/": None, "s": "->d1/.."})
    write_tar(drive / "c-1.tar", {"d2/": None, "d1": "->d2/.."})
    write_tar(drive / "c-2.tar", {"d2": "->../outside"})
    write_tar(drive / "c-3.tar", {"s/evil": b"escaped"})
    before = snapshot(target.parent)
    with pytest.raises(ColabMagicError, match="nothing was staged"):
        colabmagic.stage(str(drive / "c-*.tar"), target, quiet=True)
    after = snapshot(target.parent)
    assert {k: v for k, v in after.items() if not k.startswith("target/.colabmagic")} == before
    assert not (outside / "evil").exists()


def test_a_glob_whose_match_is_corrupt_names_it_and_stages_none(place):
    drive, target, _ = place
    write_tar(drive / "m-0.tar", {"good/a.txt": b"a"})
    (drive / "m-1.tar").write_bytes(b"\x00not a tar at all" * 64)
    with pytest.raises(ColabMagicError, match=r"^m-1\.tar: .*nothing was staged"):
        colabmagic.stage(str(drive / "m-*.tar"), target, quiet=True)
    assert snapshot(target) == {"sentinel.txt": b"mine"}


# --------------------------------------------------------------------------- 2: user links


@pytest.mark.parametrize("archive", ["x.tar", "x.zip"])
def test_a_member_link_through_the_users_own_link_is_refused(place, archive):
    drive, target, outside = place
    os.symlink(outside, target / "userlink")  # the user's own link, to /etc say
    builder = write_tar if archive.endswith(".tar") else write_zip
    builder(drive / archive, {"x": "->userlink/passwd"})
    with pytest.raises(ColabMagicError, match=r"member 'x' links to .*outside"):
        colabmagic.stage(drive / archive, target, quiet=True)
    assert snapshot(target) == {"sentinel.txt": b"mine", "userlink": f"link:{outside}"}


def test_force_never_writes_into_a_users_link_to_a_folder(place):
    drive, target, outside = place
    os.symlink(outside, target / "data")  # the archive's folder name, as a link out
    write_tar(drive / "d.tar", {"data/passwd": b"overwritten"})
    with pytest.raises(ColabMagicError, match="already exists"):
        colabmagic.stage(drive / "d.tar", target, quiet=True)
    result = colabmagic.stage(drive / "d.tar", target, quiet=True, force=True)
    assert (outside / "passwd").read_bytes() == b"root:x:0:0"  # never written through
    assert not (target / "data").is_symlink()
    assert (target / "data" / "passwd").read_bytes() == b"overwritten"
    assert result.replaced == 1 and os.readlink(result.replaced_to / "data") == str(outside)


# --------------------------------------------------------------------------- 3 and 6: re-stage


def test_a_restage_keeps_the_users_file_in_a_staged_folder(place):
    drive, target, _ = place
    source = write_zip(drive / "data.zip", {"data/a.txt": b"one", "data/old.txt": b"old"})
    colabmagic.stage(source, target, quiet=True)
    (target / "data" / "my_labels.csv").write_bytes(b"my labels")
    write_zip(source, {"data/a.txt": b"two!", "data/b.txt": b"new"})
    os.utime(source, (1, 1))
    result = colabmagic.stage(source, target, quiet=True)
    assert result.action == "restaged" and result.replaced == 0
    assert snapshot(target) == {
        "sentinel.txt": b"mine",
        "data": "dir",
        "data/a.txt": b"two!",
        "data/b.txt": b"new",
        "data/my_labels.csv": b"my labels",  # the user's, kept
    }  # and old.txt, which the previous stage made and this one does not, is gone


def test_a_restage_keeps_a_staged_file_the_user_edited(place):
    drive, target, _ = place
    source = write_zip(drive / "data.zip", {"data/a.txt": b"one"})
    colabmagic.stage(source, target, quiet=True)
    (target / "data" / "a.txt").write_bytes(b"edited by hand")
    write_zip(source, {"data/a.txt": b"two!"})
    os.utime(source, (1, 1))
    result = colabmagic.stage(source, target, quiet=True)
    assert (target / "data" / "a.txt").read_bytes() == b"two!"
    assert result.replaced == 1
    assert (result.replaced_to / "data" / "a.txt").read_bytes() == b"edited by hand"


def test_missing_or_changed_staged_files_are_staged_again_not_skipped(place):
    drive, target, _ = place
    files = {f"x/class{c}/f{i:05d}.txt": f"{c}-{i}".encode() for c in range(3) for i in range(50)}
    source = write_tar(drive / "x.tar", files)
    assert colabmagic.stage(source, target, quiet=True).files == 150
    assert colabmagic.stage(source, target, quiet=True).action == "skipped"
    for path in (target / "x" / "class0").iterdir():
        path.unlink()
    (target / "x" / "class0").rmdir()
    again = colabmagic.stage(source, target, quiet=True)
    assert again.action == "restaged"
    assert (target / "x" / "class0" / "f00007.txt").read_bytes() == b"0-7"
    (target / "x" / "class1" / "f00001.txt").write_bytes(b"truncated")
    assert colabmagic.stage(source, target, quiet=True).action == "restaged"
    assert (target / "x" / "class1" / "f00001.txt").read_bytes() == b"1-1"
    assert colabmagic.stage(source, target, quiet=True).action == "skipped"


# --------------------------------------------------------------------------- 4: at each move


def test_an_entry_made_during_the_stage_is_never_replaced(place, monkeypatch):
    from colabmagic.unpack import place as place_module

    drive, target, _ = place
    source = write_tar(drive / "r.tar", {"aaa/1.txt": b"1", "results/x.txt": b"from the archive"})
    real = place_module.rename_noreplace

    def user_writes_first(src_fd, src, dst_fd, dst):
        if dst == "results":  # the user writes DIR/results/ just as it is moved
            (target / "results").mkdir()
            (target / "results" / "mine.txt").write_bytes(b"mid-stage work")
        return real(src_fd, src, dst_fd, dst)

    monkeypatch.setattr(place_module, "rename_noreplace", user_writes_first)
    with pytest.raises(ColabMagicError, match=r"results\" already exists.*nothing was staged"):
        colabmagic.stage(source, target, quiet=True)
    # Undone: aaa/ (moved first) is gone again, the user's results/ is untouched.
    assert snapshot(target) == {
        "sentinel.txt": b"mine",
        "results": "dir",
        "results/mine.txt": b"mid-stage work",
    }
    assert not list((target / ".colabmagic").glob("marker-*"))


def test_a_failure_half_way_through_the_moves_leaves_dir_as_it_was(place, monkeypatch):
    from colabmagic.unpack import place as place_module

    drive, target, _ = place
    source = write_tar(drive / "h.tar", {"a/1": b"1", "b/2": b"2", "c/3": b"3"})
    colabmagic.stage(source, target, quiet=True)
    write_tar(source, {"a/1": b"one", "b/2": b"two", "c/3": b"three"})
    os.utime(source, (1, 1))
    before = snapshot(target)
    for name in ("rename_noreplace", "exchange"):  # a and b swapped whole, then c fails
        real = getattr(place_module, name)

        def fails_on_c(src_fd, src, dst_fd, dst, real=real):
            if dst in ("c", "3"):
                raise PermissionError(13, "Permission denied", dst)
            return real(src_fd, src, dst_fd, dst)

        monkeypatch.setattr(place_module, name, fails_on_c)
    with pytest.raises(ColabMagicError, match=r"Permission denied; nothing was staged"):
        colabmagic.stage(source, target, quiet=True)
    assert snapshot(target) == before
    monkeypatch.undo()
    assert colabmagic.stage(source, target, quiet=True).action == "restaged"
    assert (target / "c" / "3").read_bytes() == b"three"


def test_a_stage_into_a_subfolder_waits_for_the_stage_into_its_parent(place):
    drive, target, _ = place
    write_tar(drive / "sub.tar", {"inner/a.txt": b"a"})
    (target / "sub").mkdir()
    holder = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from colabmagic.staging import _locked\n"
        f"with _locked(Path({str(target)!r})):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(4)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "held"
        child = subprocess.run(
            [sys.executable, "-m", "colabmagic", "stage", str(drive / "sub.tar"), "--quiet"]
            + ["--to", str(target / "sub")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        waited = parent.poll() is not None  # the child ended only once the parent had
    finally:
        parent.wait(timeout=30)
    assert child.returncode == 0, child.stderr
    assert f"another stage into {target} is running; waiting for it" in child.stderr
    assert waited and (target / "sub" / "inner" / "a.txt").read_bytes() == b"a"


# --------------------------------------------------------------------------- 5: --force


def test_force_merges_and_keeps_what_it_replaces(place):
    drive, target, _ = place
    files = {f"x/class{c}/f{i:05d}.txt": f"{c}-{i}".encode() for c in range(2) for i in range(3)}
    source = write_zip(drive / "x.zip", files)
    (target / "x" / "class0").mkdir(parents=True)
    (target / "x" / "mynotes.txt").write_bytes(b"notes")
    (target / "x" / "class0" / "f00000.txt").write_bytes(b"edited")
    with pytest.raises(ColabMagicError, match=r"already exists .* --force"):
        colabmagic.stage(source, target, quiet=True)
    result = colabmagic.stage(source, target, quiet=True, force=True)
    there = snapshot(target)
    assert there["x/mynotes.txt"] == b"notes"  # not the archive's: kept in place
    assert all(there[name] == data for name, data in files.items())
    assert result.replaced == 1
    assert (result.replaced_to / "x" / "class0" / "f00000.txt").read_bytes() == b"edited"
    assert f"1 moved to {result.replaced_to}" in str(result)
    assert "replaced" in result._repr_html_()


# --------------------------------------------------------------------------- 10: OS errors


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_a_read_only_dir_is_one_line_and_dir_is_unchanged(place, capsys):
    drive, target, _ = place
    source = write_tar(drive / "ro.tar", {"ro/a.txt": b"a"})
    ro = target.parent / "ro"
    ro.mkdir()
    (ro / "mine.txt").write_bytes(b"mine")
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(ColabMagicError) as caught:
            colabmagic.stage(source, ro, quiet=True)
        message = str(caught.value)
        assert "\n" not in message and str(ro) in message and "Read-only file system" in message
        assert cli(["stage", str(source), "--to", str(ro), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("colabmagic stage: cannot stage into") and "\n" not in err
        assert "Traceback" not in err
        assert contents(ro) == {"mine.txt": b"mine"}
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_folder_that_refuses_writes_is_one_line(place, monkeypatch):
    drive, target, _ = place
    source = write_tar(drive / "p.tar", {"p/a.txt": b"a"})
    real_mkdtemp = __import__("tempfile").mkdtemp

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir") or args[-1])

    monkeypatch.setattr("tempfile.mkdtemp", denied)
    with pytest.raises(ColabMagicError, match=r"cannot stage into .*Permission denied"):
        colabmagic.stage(source, target, quiet=True)
    monkeypatch.setattr("tempfile.mkdtemp", real_mkdtemp)
    assert snapshot(target) == {"sentinel.txt": b"mine"}


# --------------------------------------------------------------------------- --to


def test_to_a_file_says_it_is_a_file(place):
    drive, target, _ = place
    source = write_tar(drive / "f.tar", {"f/a": b"a"})
    with pytest.raises(ColabMagicError, match=r"sentinel.txt\" is a file, not a folder"):
        colabmagic.stage(source, target / "sentinel.txt", quiet=True)


def test_to_a_folder_in_drive_warns_and_suggests_packdrive(drive_root):
    source = write_tar(drive_root / "MyDrive" / "t.tar", {"t/a": b"a"})
    result = colabmagic.stage(source, "My Drive/unpacked", quiet=True)
    assert (drive_root / "MyDrive" / "unpacked" / "t" / "a").read_bytes() == b"a"
    assert any("is in Drive" in w and "%packdrive" in w for w in result.warnings)
    assert "%packdrive" in str(result)


def test_concurrent_user_writes_in_other_folders_are_untouched(place):
    """Files the user writes elsewhere in DIR while a stage runs stay as written."""
    drive, target, _ = place
    source = write_tar(drive / "w.tar", {f"w/{i}.bin": os.urandom(2000) for i in range(300)})
    stop = threading.Event()
    written: list[Path] = []

    def user() -> None:
        n = 0
        while not stop.is_set():
            path = target / "notes" / f"{n}.txt"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"note %d" % n)
            written.append(path)
            n += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=user)
    thread.start()
    try:
        result = colabmagic.stage(source, target, quiet=True)
    finally:
        stop.set()
        thread.join()
    assert result.files == 300
    assert all(path.read_bytes() == b"note %d" % i for i, path in enumerate(written))


def test_a_staged_folder_swapped_whole_keeps_a_file_written_at_that_instant(place, monkeypatch):
    """A re-stage swaps a folder that is exactly as staged in one rename; a file the
    user writes into it just then is found in the swapped-out copy, and the folder is
    put back and merged instead."""
    from colabmagic.unpack import place as place_module

    drive, target, _ = place
    source = write_tar(drive / "sw.tar", {"sw/a.txt": b"one", "sw/deep/b.txt": b"b"})
    colabmagic.stage(source, target, quiet=True)
    write_tar(source, {"sw/a.txt": b"two!", "sw/deep/b.txt": b"b2"})
    os.utime(source, (1, 1))
    real = place_module.exchange
    calls = []

    def user_writes_first(src_fd, src, dst_fd, dst):
        if not calls:
            (target / "sw" / "deep" / "late.txt").write_bytes(b"written just now")
        calls.append(dst)
        return real(src_fd, src, dst_fd, dst)

    monkeypatch.setattr(place_module, "exchange", user_writes_first)
    result = colabmagic.stage(source, target, quiet=True)
    assert result.action == "restaged" and len(calls) == 2  # swapped, then back
    assert snapshot(target) == {
        "sentinel.txt": b"mine",
        "sw": "dir",
        "sw/a.txt": b"two!",
        "sw/deep": "dir",
        "sw/deep/b.txt": b"b2",
        "sw/deep/late.txt": b"written just now",
    }


def test_a_staged_folder_as_it_was_left_is_swapped_in_one_rename(place, monkeypatch):
    from colabmagic.unpack import place as place_module

    drive, target, _ = place
    files = {f"big/{i:04d}.bin": bytes([i % 256]) * 10 for i in range(200)}
    source = write_tar(drive / "big.tar", files)
    colabmagic.stage(source, target, quiet=True)
    os.utime(source, (1, 1))
    renames = []
    real = place_module.rename_noreplace
    monkeypatch.setattr(place_module, "rename_noreplace", lambda *a: renames.append(a) or real(*a))
    assert colabmagic.stage(source, target, quiet=True).action == "restaged"
    assert renames == []  # one exchange, no file-by-file merge
    assert {k: v for k, v in snapshot(target).items() if k.startswith("big/")} == files


def test_without_renameat2_the_same_promises_hold(place, monkeypatch):
    """Where the kernel or file system has no renameat2 (old kernels, some FUSE file
    systems), files move by link + unlink and folders after a check, and swaps are
    merges: the user's entry made at the move is still never replaced."""
    from colabmagic.unpack import place as place_module

    monkeypatch.setattr(place_module, "_renameat2", False)
    drive, target, _ = place
    source = write_tar(drive / "fb.tar", {"fb/a.txt": b"one", "fb/b.txt": b"b", "l": "->fb"})
    colabmagic.stage(source, target, quiet=True)
    (target / "fb" / "mine.txt").write_bytes(b"mine")
    write_tar(source, {"fb/a.txt": b"two!", "fb/b.txt": b"b2", "l": "->fb"})
    os.utime(source, (1, 1))
    real = place_module.rename_noreplace

    def user_writes_first(src_fd, src, dst_fd, dst):
        if dst == "b.txt":
            (target / "fb" / "b.txt").write_bytes(b"the user's b")
        return real(src_fd, src, dst_fd, dst)

    monkeypatch.setattr(place_module, "rename_noreplace", user_writes_first)
    with pytest.raises(ColabMagicError, match=r"b\.txt\" already exists"):
        colabmagic.stage(source, target, quiet=True)
    assert (target / "fb" / "b.txt").read_bytes() == b"the user's b"
    assert (target / "fb" / "a.txt").read_bytes() == b"one"  # undone
    monkeypatch.setattr(place_module, "rename_noreplace", real)
    (target / "fb" / "b.txt").unlink()
    result = colabmagic.stage(source, target, quiet=True)
    assert result.action == "restaged"
    assert snapshot(target) == {
        "sentinel.txt": b"mine",
        "fb": "dir",
        "fb/a.txt": b"two!",
        "fb/b.txt": b"b2",
        "fb/mine.txt": b"mine",
        "l": "link:fb",
    }
