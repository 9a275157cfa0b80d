"""Faults during %stage: Drive dropping out, Ctrl-C, a full disk, two stages at once,
and archives built to exhaust memory, disk or the extractor's patience.

Each test checks the same promise from its side: DIR holds either the whole archive,
byte for byte, or what it held before (apart from ``.colabmagic/``), and the next run
completes normally.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import hashlib
import importlib
import io
import lzma
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic import fakedrive
from colabmagic.errors import ColabMagicError
from tests.builders import SENTINEL, as_contents, as_it_was, contents, sigint_in_child, user_folder

stage_module = importlib.import_module("colabmagic.staging")
unpack_stream = importlib.import_module("colabmagic.unpack.stream")

MB = 1_000_000
no_fakedrive = fakedrive.available()
needs_fakedrive = pytest.mark.skipif(
    no_fakedrive is not None, reason=f"fake Drive unavailable: {no_fakedrive}"
)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


# --------------------------------------------------------------------------- helpers


def random_files(n: int, size: int, seed: int, top: str = "set") -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"{top}/{i % 7}/f{i:05d}.bin": rng.randbytes(size) for i in range(n)}


def tar_bytes(files: dict[str, bytes], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def zip_bytes(files: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def expected(files: dict[str, bytes]) -> dict[str, object]:
    """What `contents` shows once FILES are staged next to the sentinel."""
    return as_contents(files, **SENTINEL)


def lock_is_free(folder: Path) -> bool:
    fd = os.open(folder / ".colabmagic" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def open_fds(*folders: Path) -> set[str]:
    """What this process holds open under FOLDERS, as "descriptor:path".  (Only there:
    a thread another test left behind may open files of its own at any moment.)"""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed by now
            path = os.readlink(f"/proc/self/fd/{fd}")
            if any(path.startswith(str(folder)) for folder in folders):
                found.add(f"{fd}:{path}")
    return found


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "colabmagic-read"]


# --------------------------------------------------------------------------- Drive faults


ARCHIVES = {
    # tar.gz streams with no index; zip is first read at its end (the index), then
    # front to back.
    "data.tar.gz": lambda files: tar_bytes(files, "w:gz"),
    "data.zip": zip_bytes,
}


def fault_offset(message: str) -> int:
    found = re.search(r"at byte ([\d,]+)", message)
    assert found, message
    return int(found.group(1).replace(",", ""))


@needs_fakedrive
@pytest.mark.parametrize("errno_name", ["EIO", "ENOTCONN"])
@pytest.mark.parametrize("name", list(ARCHIVES))
def test_a_drop_out_mid_read_is_resumed_at_the_same_offset(
    faults, tmp_path, quick_retries, errno_name, name
):
    src, root = faults
    files = random_files(300, 10_000, seed=11)  # 3 MB of random bytes: no compression
    archive = ARCHIVES[name](files)
    (src / name).write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    fail_at = len(archive) // 2
    fakedrive.configure(root, fail_after=fail_at, fail_errno=errno_name, fail_path=name)

    # Without retries the drop-out is fatal: proof that the fault is really there.
    target = user_folder(tmp_path / "target")
    with pytest.raises(ColabMagicError) as refused:
        colabmagic.stage(root / name, target, quiet=True, retries=0)
    message = str(refused.value)
    assert "\n" not in message and str(root / name) in message and errno_name in message
    assert fail_at - (1 << 20) - 131_072 <= fault_offset(message) <= len(archive)
    as_it_was(target)

    # Re-armed, with the default retries it resumes and the bytes are the same:
    # the digest of what was read proves no byte was skipped or read twice.
    fakedrive.configure(root, fail_after=fail_at, fail_errno=errno_name, fail_path=name)
    result = colabmagic.stage(root / name, target, quiet=True, sha256=digest)
    assert result.action == "staged"
    assert result.archive_bytes == len(archive)
    assert contents(target) == expected(files)


@needs_fakedrive
@pytest.mark.parametrize("name", list(ARCHIVES))
def test_random_drop_outs_all_through_the_read(faults, tmp_path, quick_retries, name):
    src, root = faults
    files = random_files(400, 10_000, seed=12)
    archive = ARCHIVES[name](files)
    (src / name).write_bytes(archive)
    fakedrive.configure(root, fail_rate=0.05, seed=3, fail_errno="ENOTCONN", fail_path=name)
    target = user_folder(tmp_path / "target")
    digest = hashlib.sha256(archive).hexdigest()
    result = colabmagic.stage(root / name, target, quiet=True, retries=20, sha256=digest)
    assert result.action == "staged"
    assert contents(target) == expected(files)


@needs_fakedrive
@pytest.mark.parametrize("errno_name", ["EIO", "ENOTCONN"])
def test_a_drive_that_stays_down_fails_in_one_line_and_leaves_dir_as_it_was(
    ip, faults, tmp_path, quick_retries, errno_name
):
    src, root = faults
    files = random_files(200, 10_000, seed=13)
    archive = tar_bytes(files, "w:gz")
    (src / "down.tar.gz").write_bytes(archive)
    fail_at = 1_500_000
    fakedrive.configure(
        root, fail_after=fail_at, fail_errno=errno_name, fail_path="down.tar.gz", fail_always=True
    )
    target = user_folder(tmp_path / "target")
    ip.run_line_magic("config", "ColabMagic.retries = 2")
    try:
        with pytest.raises(UsageError) as failed:
            ip.run_line_magic("stage", f'"{root / "down.tar.gz"}" --to "{target}"')
    finally:
        ip.run_line_magic("config", "ColabMagic.retries = 5")
    message = str(failed.value)
    assert message.startswith("%stage: ") and "\n" not in message
    assert str(root / "down.tar.gz") in message
    assert errno_name in message and "after 2 retries" in message
    assert fail_at - 262_144 <= fault_offset(message) <= fail_at
    as_it_was(target)
    assert lock_is_free(target)


@needs_fakedrive
def test_a_folder_copy_survives_drop_outs(faults, tmp_path, quick_retries):
    src, root = faults
    files = random_files(60, 50_000, seed=14, top="shots")
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    fakedrive.configure(root, fail_rate=0.05, seed=5, fail_errno="EIO")
    target = user_folder(tmp_path / "target")
    result = colabmagic.stage(root / "shots", target, quiet=True, retries=20)
    assert result.action == "staged" and result.files == len(files)
    assert contents(target) == expected(files)


# --------------------------------------------------------------------------- Ctrl-C


def stage_with_ctrl_c(press_when: Callable[[], bool], *args, **kwargs):
    """colabmagic.stage(*ARGS, **KWARGS) with Ctrl-C pressed once PRESS_WHEN() is true.

    A real SIGINT, delivered to the main thread as the terminal or Jupyter's interrupt
    button delivers it.  It only turns into KeyboardInterrupt while stage() is on the
    stack, so that a press that comes too late cannot hit the test itself.  Returns the
    result, or None if the stage was interrupted.
    """
    stage_code = stage_module.stage.__code__
    pressed = threading.Event()

    def on_sigint(signum, frame):
        while frame is not None:
            if frame.f_code is stage_code:
                raise KeyboardInterrupt
            frame = frame.f_back

    def press() -> None:
        while not pressed.is_set():
            if press_when():
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return
            time.sleep(0.0002)

    previous = signal.signal(signal.SIGINT, on_sigint)
    presser = threading.Thread(target=press, daemon=True)
    presser.start()
    try:
        return colabmagic.stage(*args, **kwargs)
    except KeyboardInterrupt:
        return None
    finally:
        pressed.set()
        presser.join()
        signal.signal(signal.SIGINT, previous)


def timed(run: Callable[[], object]) -> float:
    started = time.monotonic()
    run()
    return time.monotonic() - started


def after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def check_after_ctrl_c(target: Path, files: dict[str, bytes], source: Path) -> bool:
    """What an interrupted stage may leave: entries that are complete (moved whole
    into place), never a partial one; a marker that claims completion only when
    everything is there; no work folders, reader threads, open files or lock.
    Whether the marker claims completion."""
    want = expected(files)
    there = contents(target)
    assert there["sentinel.txt"] == b"the user's own work"
    for name, value in there.items():
        assert want.get(name) == value, f"{name} is not what the archive holds"
    state = target / ".colabmagic"
    if not (state / "lock").exists():
        # Pressed before the stage took its lock (a quick stage makes an early press
        # land there): nothing was begun, and there is no lock to look at.
        assert there == {"sentinel.txt": b"the user's own work"}
        assert reader_threads() == []
        assert open_fds(target, source) == set()
        return False
    assert [n for n in os.listdir(state) if n.startswith(("tmp-", "trash-"))] == []
    finished = False
    for marker in state.glob("marker-*.json"):
        if '"complete"' in marker.read_text():
            assert there == want
            finished = True
    assert reader_threads() == []
    assert open_fds(target, source) == set()
    assert lock_is_free(target)
    return finished


@pytest.fixture(scope="module")
def wide_archives(tmp_path_factory) -> dict[str, tuple[Path, dict[str, bytes]]]:
    """A zip and a tar.gz with many top-level entries, so that every phase (reading,
    unpacking, moving into place) lasts long enough to be interrupted."""
    folder = tmp_path_factory.mktemp("wide")
    rng = random.Random(21)
    files = {f"top{i:04d}.bin": rng.randbytes(rng.randint(100, 3000)) for i in range(600)}
    files.update(random_files(600, 1000, seed=22))
    made = {}
    for name, build in (("wide.zip", zip_bytes), ("wide.tar.gz", ARCHIVES["data.tar.gz"])):
        (folder / name).write_bytes(build(files))
        made[name] = (folder / name, files)
    return made


@pytest.mark.parametrize("name", ["wide.zip", "wide.tar.gz"])
def test_ctrl_c_at_any_moment_loses_nothing(wide_archives, tmp_path, name):
    source, files = wide_archives[name]
    # The quicker of two runs: a press planned from a slow one would land after the end.
    took = min(
        timed(lambda i=i: colabmagic.stage(source, tmp_path / f"timing-{i}", quiet=True))
        for i in "ab"
    )
    interrupted = 0
    for i, fraction in enumerate((0.0, 0.03, 0.1, 0.25, 0.4, 0.6, 0.8, 0.95)):
        target = user_folder(tmp_path / f"t{i}")
        result = stage_with_ctrl_c(after(took * fraction), source, target, quiet=True)
        interrupted += result is None
        finished = check_after_ctrl_c(target, files, source)
        again = colabmagic.stage(source, target, quiet=True)
        assert contents(target) == expected(files)
        # Pressed after the marker said "complete" (as the lock was let go), the work
        # was done and is not redone.
        assert again.action == "skipped" if finished else again.action in ("staged", "restaged")
        assert colabmagic.stage(source, target, quiet=True).action == "skipped"
    assert interrupted >= 2  # the presses did land inside the stage


@pytest.mark.parametrize("name", ["wide.zip", "wide.tar.gz"])
def test_ctrl_c_at_random_moments_never_hangs(wide_archives, tmp_path, name):
    """Before presses were held for safe points (colabmagic.interrupts), a press could
    land inside ThreadPoolExecutor.submit, between a Condition's lock being taken and
    the `with` that releases it; the writer threads then waited on that lock for ever
    and the stage hung (pytest's timeout ends such a hang)."""
    source, files = wide_archives[name]
    took = timed(lambda: colabmagic.stage(source, tmp_path / "timing", quiet=True))
    rng = random.Random(name)
    for i in range(12):
        target = user_folder(tmp_path / f"t{i}")
        stage_with_ctrl_c(after(took * rng.random()), source, target, quiet=True)
        check_after_ctrl_c(target, files, source)
        colabmagic.stage(source, target, quiet=True)
        assert contents(target) == expected(files)


@pytest.mark.parametrize("name", ["wide.zip", "wide.tar.gz"])
def test_ctrl_c_while_entries_are_moved_into_place(wide_archives, tmp_path, name):
    source, files = wide_archives[name]
    target = user_folder(tmp_path / "target")
    first = target / "top0000.bin"
    result = stage_with_ctrl_c(lambda: os.path.lexists(first), source, target, quiet=True)
    check_after_ctrl_c(target, files, source)
    if result is None:  # the usual case: the moves done so far are undone
        as_it_was(target)
        assert list((target / ".colabmagic").glob("marker-*.json")) == []
    again = colabmagic.stage(source, target, quiet=True)
    assert again.action in ("staged", "skipped")
    assert contents(target) == expected(files)


def test_ctrl_c_while_waiting_for_another_stage(wide_archives, tmp_path):
    source, files = wide_archives["wide.zip"]
    target = user_folder(tmp_path / "target")
    (target / ".colabmagic").mkdir()
    other = os.open(target / ".colabmagic" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(other, fcntl.LOCK_EX)  # another kernel is staging into the folder
    try:
        held = open_fds(target, source)
        assert stage_with_ctrl_c(after(0.2), source, target, quiet=True) is None
        assert open_fds(target, source) == held  # the waiting stage let go of its lock file
        as_it_was(target)
    finally:
        os.close(other)
    check_after_ctrl_c(target, files, source)
    assert colabmagic.stage(source, target, quiet=True).action == "staged"
    assert contents(target) == expected(files)


@needs_fakedrive
def test_sigint_to_the_cli_on_a_slow_drive(faults, tmp_path):
    src, root = faults
    files = random_files(400, 10_000, seed=31)
    (src / "slow.tar.gz").write_bytes(tar_bytes(files, "w:gz"))
    fakedrive.configure(root, profile="bench", bandwidth=2 * MB)  # about 2 s to read
    target = user_folder(tmp_path / "target")
    command = [sys.executable, "-m", "colabmagic", "stage", str(root / "slow.tar.gz")]
    proc = subprocess.Popen(
        [*command, "--to", str(target), "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_in_child,
    )
    try:
        wait_for(lambda: any(target.glob(".colabmagic/tmp-*/set/*/*")), proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    as_it_was(target)
    assert lock_is_free(target)
    fakedrive.configure(root, profile="fast")
    result = colabmagic.stage(root / "slow.tar.gz", target, quiet=True)
    assert result.action == "staged"
    assert contents(target) == expected(files)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the stage ended before it could be caught at work"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --------------------------------------------------------------------------- two at once


@needs_fakedrive
def test_two_processes_staging_the_same_source_never_interleave(faults, tmp_path):
    src, root = faults
    files = random_files(300, 10_000, seed=41)
    (src / "shared.zip").write_bytes(zip_bytes(files))
    # About 3 s to read: long enough for the second process to start and reach the
    # lock on a loaded machine (at 1 s it often found the first one already done).
    fakedrive.configure(root, profile="bench", bandwidth=1 * MB)
    target = user_folder(tmp_path / "target")
    command = [sys.executable, "-m", "colabmagic", "stage", str(root / "shared.zip")]
    command += ["--to", str(target), "--quiet"]
    run = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    first = subprocess.Popen(command, **run)
    try:
        wait_for(lambda: any(target.glob(".colabmagic/tmp-*/set")), first)
        second = subprocess.Popen(command, **run)
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert "is running; waiting for it" in err2  # it knew, and it waited
    assert re.search(r"action\s+staged", out1) and re.search(r"action\s+skipped", out2)
    assert contents(target) == expected(files)
    state = target / ".colabmagic"
    assert [n for n in os.listdir(state) if n.startswith(("tmp-", "trash-"))] == []


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MB tmpfs holding the user's file: a disk that fills up in a test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield user_folder(disk)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@needs_root
def test_a_tar_too_big_for_the_disk_is_refused_before_writing(small_disk, tmp_path):
    source = tmp_path / "big.tar"
    source.write_bytes(tar_bytes(random_files(30, 100_000, seed=51)))
    free = free_bytes(small_disk)
    with pytest.raises(ColabMagicError, match=r"needs 3\.\d MB but .* has only .* free"):
        colabmagic.stage(source, small_disk, quiet=True)
    as_it_was(small_disk)
    assert free_bytes(small_disk) == free


@needs_root
@pytest.mark.parametrize(
    ("label", "files"),
    [
        # One big member: the running count stops it a little before the disk would.
        ("one big file", {"big/blob.bin": bytes(3_000_000)}),
        # Many tiny files: each takes a whole page, so the disk itself says ENOSPC.
        ("many tiny files", {f"tiny/{i:05d}": b"x" * 10 for i in range(1200)}),
    ],
)
def test_a_compressed_tar_that_fills_the_disk_fails_cleanly(small_disk, tmp_path, label, files):
    source = tmp_path / "lies.tar.gz"
    source.write_bytes(tar_bytes(files, "w:gz"))  # small enough to pass the preflight
    free = free_bytes(small_disk)
    with pytest.raises(ColabMagicError) as full:
        colabmagic.stage(source, small_disk, quiet=True)
    message = str(full.value)
    assert "\n" not in message and "ENOSPC" in message and str(small_disk) in message
    assert "nothing was staged" in message
    as_it_was(small_disk)
    assert free_bytes(small_disk) == free  # the partial output is gone
    # With room, the same archive stages: the failure was the disk's, not the archive's.
    roomy = user_folder(tmp_path / "roomy")
    assert colabmagic.stage(source, roomy, quiet=True).action == "staged"
    assert contents(roomy) == expected(files)


# --------------------------------------------------------------------------- bombs


def bz2_of_zeros(n: int, name: str = "zeros.bin") -> bytes:
    """A tar.bz2 holding N zero bytes in NAME, built without holding N bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:bz2") as archive:
        info = tarfile.TarInfo(name)
        info.size = n
        archive.addfile(info, _Zeros(n))
    return out.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_a_compressed_tar_expanding_over_1000_to_1_is_refused(tmp_path, monkeypatch):
    # The rule is 1000:1 over more than 1 GB; the test lowers the floor to 20 MB
    # so that the bomb need not write a gigabyte first.
    monkeypatch.setattr(unpack_stream, "RATIO_FLOOR", 20 * MB)
    source = tmp_path / "bomb.tar.bz2"
    source.write_bytes(bz2_of_zeros(60 * MB))
    assert 60 * MB / source.stat().st_size > 1000
    target = user_folder(tmp_path / "target")
    with pytest.raises(ColabMagicError, match=r"expands more than 1,000:1.*--allow-ratio"):
        colabmagic.stage(source, target, quiet=True)
    as_it_was(target)
    result = colabmagic.stage(source, target, quiet=True, allow_ratio=True)
    assert result.action == "staged" and result.bytes == 60 * MB
    assert os.path.getsize(target / "zeros.bin") == 60 * MB


def test_a_compressed_tar_under_the_floor_is_not_a_bomb(tmp_path):
    source = tmp_path / "zeros.tar.bz2"
    source.write_bytes(bz2_of_zeros(30 * MB))  # far above 1000:1, far below 1 GB
    target = user_folder(tmp_path / "target")
    assert colabmagic.stage(source, target, quiet=True).bytes == 30 * MB


def test_nested_archives_are_staged_as_files_never_unpacked(tmp_path):
    inner = {"inner/secret.txt": b"stays packed"}
    files = {
        "outer/inner.zip": zip_bytes(inner),
        "outer/inner.tar.gz": tar_bytes(inner, "w:gz"),
        "outer/inner.tar": tar_bytes(inner),
        "outer/readme.txt": b"the only text file",
    }
    for name, archive in (("outer.zip", zip_bytes(files)), ("outer.tar.xz", tar_bytes(files))):
        source = tmp_path / name
        source.write_bytes(lzma.compress(archive) if name.endswith(".xz") else archive)
        target = user_folder(tmp_path / name.replace(".", "-"))
        result = colabmagic.stage(source, target, quiet=True)
        assert result.files == 4
        assert contents(target) == expected(files)


@pytest.mark.parametrize("codec", ["gz", "bz2", "xz", "zst"])
def test_a_truncated_compressed_tar_is_refused_not_staged_in_part(tmp_path, codec):
    if codec == "zst":
        zstandard = pytest.importorskip("zstandard")
        compress = zstandard.ZstdCompressor().compress
    else:
        compress = {"gz": __import__("gzip").compress, "bz2": bz2.compress}.get(
            codec, lzma.compress
        )
    files = random_files(50, 2000, seed=61)
    whole = compress(tar_bytes(files))
    source = tmp_path / f"cut.tar.{codec}"
    # Cut inside the compressed data: what a download that stopped early looks like.
    source.write_bytes(whole[: len(whole) * 2 // 3])
    target = user_folder(tmp_path / "target")
    with pytest.raises(ColabMagicError, match="truncated|corrupt"):
        colabmagic.stage(source, target, quiet=True)
    as_it_was(target)


def test_a_huge_tar_header_is_refused_without_reading_it_into_memory(tmp_path):
    for kind in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME):
        info = tarfile.TarInfo("header")
        info.type = kind
        info.size = 8 << 30  # a pax or long-name body of 8 GiB
        source = tmp_path / "header.tar"
        source.write_bytes(info.tobuf(tarfile.GNU_FORMAT) + bytes(1024))
        target = user_folder(tmp_path / f"target-{kind.decode()}")
        with pytest.raises(ColabMagicError, match="a header of 8,589,934,592 bytes"):
            colabmagic.stage(source, target, quiet=True)
        as_it_was(target)


def test_a_tree_deeper_than_python_can_remove_is_refused(tmp_path):
    # 1,500 levels fit in PATH_MAX but break os.makedirs and shutil.rmtree (they
    # recurse), which crashed the stage and left a folder nobody could delete.
    for depth in (257, 1500):
        source = tmp_path / f"deep{depth}.tar"
        source.write_bytes(tar_bytes({"d/" * depth + "f": b"x"}))
        target = user_folder(tmp_path / f"target{depth}")
        with pytest.raises(ColabMagicError, match="more than 256 folders deep"):
            colabmagic.stage(source, target, quiet=True)
        as_it_was(target)
    ok = tmp_path / "deep256.tar"
    ok.write_bytes(tar_bytes({"d/" * 255 + "f": b"x"}))
    assert colabmagic.stage(ok, user_folder(tmp_path / "ok"), quiet=True).files == 1


def test_a_member_named_like_colabmagics_own_folder_is_refused_even_with_force(tmp_path):
    source = tmp_path / "state.zip"
    source.write_bytes(zip_bytes({".colabmagic/lock": b"", "x/y": b"y"}))
    target = user_folder(tmp_path / "target")
    for force in (False, True):
        with pytest.raises(ColabMagicError, match="colabmagic's own folder"):
            colabmagic.stage(source, target, quiet=True, force=force)
        as_it_was(target)


def test_a_link_target_longer_than_path_max_is_refused(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "x" * 5000
        archive.addfile(info)
    source = tmp_path / "link.tar"
    source.write_bytes(out.getvalue())
    target = user_folder(tmp_path / "target")
    with pytest.raises(ColabMagicError, match="oversized target"):
        colabmagic.stage(source, target, quiet=True)
    as_it_was(target)
