"""%stage --streams N: one archive read by N ranged readers, unpacked in order.

The promises of a one-stream stage hold with N readers: the same bytes on disk, the
one retry policy for each reader, a Drive that stays down is a one-line error, Ctrl-C
leaves DIR as it was and no reader thread alive, and at most N + 2 segments are held
in memory.  Segments are made small (64 KiB) so that a 3 MB archive has dozens.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zipfile

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic import fakedrive, ranged
from colabmagic.errors import ColabMagicError
from colabmagic.source import DriveDropped, SourceFile
from tests.builders import (
    SENTINEL,
    as_contents,
    as_it_was,
    contents,
    random_files,
    sigint_in_child,
    tar_bytes,
    user_folder,
)
from tests.builders import zip_bytes as build_zip

MB = 1_000_000
SEGMENT = 64 << 10
no_fakedrive = fakedrive.available()
needs_fakedrive = pytest.mark.skipif(
    no_fakedrive is not None, reason=f"fake Drive unavailable: {no_fakedrive}"
)


def mixed_files(seed: int) -> dict[str, bytes]:
    """3 MB: random bytes, and text that deflates, as VOC's images and annotations."""
    files = random_files(200, (5_000, 20_000), seed=seed)
    rng = random.Random(seed)
    for i in range(60):
        tags = ("cat", "dog", "box", "<xmin>", "</object>")
        words = " ".join(rng.choice(tags) for _ in range(2000))
        files[f"annotations/{i:04d}.xml"] = words.encode()
    return files


ARCHIVES = {
    "data.zip": build_zip,
    "deflated.zip": lambda files: build_zip(files, zipfile.ZIP_DEFLATED),
    "data.tar.gz": lambda files: tar_bytes(files, "w:gz"),
}


def readers_alive() -> list[str]:
    names = (ranged.THREAD_NAME, "colabmagic-read")
    return [t.name for t in threading.enumerate() if t.name in names]


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[ranged.Ranged]:
    """Every Ranged reader a stage makes, kept for a look at its counters."""
    made: list[ranged.Ranged] = []

    class Recorded(ranged.Ranged):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(ranged, "Ranged", Recorded)
    monkeypatch.setattr(ranged, "SEGMENT", SEGMENT)
    return made


# --------------------------------------------------------------------------- the same bytes


@pytest.mark.parametrize("name", list(ARCHIVES))
def test_four_streams_stage_the_same_bytes_as_one(ip, drive_root, tmp_path, made, name):
    files = mixed_files(seed=1)
    archive = ARCHIVES[name](files)
    (drive_root / "MyDrive" / name).write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    one, four = user_folder(tmp_path / "one"), user_folder(tmp_path / "four")

    first = ip.run_line_magic("stage", f'"My Drive/{name}" --to "{one}" --streams 1')
    assert made == []  # one stream: the single Prefetch reader of before
    line = f'"My Drive/{name}" --to "{four}" --streams 4 --sha256 {digest}'
    second = ip.run_line_magic("stage", line)

    assert first.action == second.action == "staged"
    assert second.archive_bytes == len(archive)
    assert contents(four) == contents(one) == as_contents(files, **SENTINEL)
    [reader] = made
    assert reader.streams == 4 and reader.count == -(-len(archive) // SEGMENT)
    assert reader.count > 20  # many segments, so the order of hand-on was tested
    assert 1 <= reader.peak <= reader.streams + 2 == reader.window
    assert readers_alive() == []


def test_keep_archive_with_four_streams_keeps_the_archive_byte_for_byte(
    ip, drive_root, tmp_path, made
):
    files = mixed_files(seed=12)
    archive = ARCHIVES["data.tar.gz"](files)
    (drive_root / "MyDrive" / "kept.tar.gz").write_bytes(archive)
    target = user_folder(tmp_path / "target")
    line = f'"My Drive/kept.tar.gz" --to "{target}" --streams 3 --keep-archive'
    assert ip.run_line_magic("stage", line).action == "staged"
    assert (target / "kept.tar.gz").read_bytes() == archive
    assert contents(target) == as_contents(files, **SENTINEL, **{"kept.tar.gz": archive})
    assert [reader.streams for reader in made] == [3]


def test_a_large_plain_file_is_copied_with_four_streams(ip, drive_root, tmp_path, made):
    data = random.Random(11).randbytes(3 * MB + 5)
    (drive_root / "MyDrive" / "weights.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    target = user_folder(tmp_path / "target")
    line = f'"My Drive/weights.bin" --to "{target}" --streams 4 --sha256 {digest}'
    result = ip.run_line_magic("stage", line)
    assert result.action == "staged" and result.bytes == len(data)
    assert (target / "weights.bin").read_bytes() == data
    assert [reader.streams for reader in made] == [4]
    assert readers_alive() == []


def test_streams_out_of_range_are_a_one_line_error(ip, drive_root, workdir):
    (drive_root / "MyDrive" / "a.zip").write_bytes(build_zip({"a.txt": b"a"}))
    for bad in ("0", "17", "-1"):
        with pytest.raises(UsageError) as refused:
            ip.run_line_magic("stage", f'"My Drive/a.zip" --streams {bad}')
        message = str(refused.value)
        assert message == f"%stage: --streams must be 1 to 16; not {bad}", message
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("stage", '"My Drive/a.zip" --streams many')
    assert str(refused.value).startswith("%stage: ") and "--streams" in str(refused.value)
    with pytest.raises(ColabMagicError, match="--streams must be 1 to 16"):
        colabmagic.stage(drive_root / "MyDrive" / "a.zip", workdir, streams=True)
    assert os.listdir(workdir) == []  # refused before anything was locked or written


def test_the_default_is_four_streams_only_for_a_large_archive_on_a_fuse_mount(
    drive, tmp_path, made, monkeypatch
):
    src, root = drive
    files = random_files(100, 10_000, seed=2)
    archive = build_zip(files)
    (src / "auto.zip").write_bytes(archive)
    local = tmp_path / "auto.zip"
    local.write_bytes(archive)

    # Below the threshold: one stream, on Drive too.
    colabmagic.stage(root / "auto.zip", tmp_path / "small", quiet=True)
    assert made == []
    monkeypatch.setattr(ranged, "THRESHOLD", len(archive))
    colabmagic.stage(local, tmp_path / "local", quiet=True)  # local disk: one stream
    assert made == []
    colabmagic.stage(root / "auto.zip", tmp_path / "drive", quiet=True)
    assert [reader.streams for reader in made] == [ranged.DEFAULT]
    assert contents(tmp_path / "drive") == contents(tmp_path / "local") == as_contents(files)


# --------------------------------------------------------------------------- Drive faults


@needs_fakedrive
@pytest.mark.parametrize("name", ["data.zip", "data.tar.gz"])
def test_random_drop_outs_in_every_reader(faults, tmp_path, quick_retries, made, name):
    src, root = faults
    files = mixed_files(seed=3)
    archive = ARCHIVES[name](files)
    (src / name).write_bytes(archive)
    fakedrive.configure(root, fail_rate=0.05, seed=7, fail_errno="ENOTCONN", fail_path=name)
    target = user_folder(tmp_path / "target")
    digest = hashlib.sha256(archive).hexdigest()
    result = colabmagic.stage(root / name, target, quiet=True, retries=20, sha256=digest, streams=4)
    assert result.action == "staged" and result.archive_bytes == len(archive)
    assert contents(target) == as_contents(files, **SENTINEL)
    assert made[0].streams == 4
    assert readers_alive() == []


@needs_fakedrive
@pytest.mark.parametrize("errno_name", ["EIO", "ENOTCONN"])
def test_a_drop_out_mid_read_is_resumed_by_the_reader_it_hit(
    faults, tmp_path, quick_retries, made, errno_name
):
    src, root = faults
    files = mixed_files(seed=4)
    archive = ARCHIVES["data.zip"](files)
    (src / "mid.zip").write_bytes(archive)
    fail_at = len(archive) // 2 + 12_345
    fakedrive.configure(root, fail_after=fail_at, fail_errno=errno_name, fail_path="mid.zip")
    target = user_folder(tmp_path / "target")
    with pytest.raises(DriveDropped) as dropped:  # without retries: the fault is there
        colabmagic.stage(root / "mid.zip", target, quiet=True, retries=0, streams=4)
    message = str(dropped.value)
    assert "\n" not in message and errno_name in message and str(root / "mid.zip") in message
    assert dropped.value.errno == getattr(errno, errno_name)
    as_it_was(target)
    assert readers_alive() == []

    fakedrive.configure(root, fail_after=fail_at, fail_errno=errno_name, fail_path="mid.zip")
    digest = hashlib.sha256(archive).hexdigest()
    result = colabmagic.stage(root / "mid.zip", target, quiet=True, sha256=digest, streams=4)
    assert result.action == "staged"
    assert contents(target) == as_contents(files, **SENTINEL)


@needs_fakedrive
def test_a_drive_that_stays_down_is_one_line_and_stops_every_reader(
    ip, faults, tmp_path, quick_retries, made
):
    src, root = faults
    files = mixed_files(seed=5)
    (src / "down.tar.gz").write_bytes(ARCHIVES["data.tar.gz"](files))
    fakedrive.configure(
        root, fail_after=1_500_000, fail_errno="EIO", fail_path="down.tar.gz", fail_always=True
    )
    target = user_folder(tmp_path / "target")
    ip.run_line_magic("config", "ColabMagic.retries = 2")
    try:
        with pytest.raises(UsageError) as failed:
            ip.run_line_magic("stage", f'"{root / "down.tar.gz"}" --to "{target}" --streams 4')
    finally:
        ip.run_line_magic("config", "ColabMagic.retries = 5")
    message = str(failed.value)
    assert message.startswith("%stage: ") and "\n" not in message
    assert "EIO" in message and "after 2 retries" in message
    as_it_was(target)
    assert readers_alive() == []
    [reader] = made
    assert reader._claimed < reader.count  # the others stopped: the rest was never read


# --------------------------------------------------------------------------- Ctrl-C


def press_ctrl_c_when(condition) -> threading.Thread:
    def press() -> None:
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.001)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    presser = threading.Thread(target=press, daemon=True)
    presser.start()
    return presser


@needs_fakedrive
@pytest.mark.parametrize("name", ["data.zip", "data.tar.gz", "weights.bin"])
def test_ctrl_c_mid_read_leaves_dir_as_it_was_and_no_reader_alive(
    faults, tmp_path, made, sigint, name
):
    src, root = faults
    files = mixed_files(seed=6)
    if name in ARCHIVES:
        archive = ARCHIVES[name](files)
    else:  # a plain file: the ranged readers feed the copy in the main thread
        archive = b"".join(files.values())
        files = {name: archive}
    (src / name).write_bytes(archive)
    fakedrive.configure(root, profile="bench", bandwidth=2 * MB)  # about 1.5 s to read
    target = user_folder(tmp_path / "target")

    def reading() -> bool:  # some segments handed on, most still to come
        return bool(made) and made[0]._consumed >= 3

    presser = press_ctrl_c_when(reading)
    with pytest.raises(KeyboardInterrupt):
        colabmagic.stage(root / name, target, quiet=True, streams=4)
    presser.join()
    assert readers_alive() == []  # every reader joined before stage() returned
    [reader] = made
    assert reader._claimed < reader.count  # stopped, not read to the end
    as_it_was(target)
    fakedrive.configure(root, profile="fast")
    result = colabmagic.stage(root / name, target, quiet=True, streams=4)
    assert result.action == "staged"
    assert contents(target) == as_contents(files, **SENTINEL)


@needs_fakedrive
def test_sigint_to_the_cli_reading_with_four_streams(faults, tmp_path):
    src, root = faults
    files = mixed_files(seed=7)
    (src / "slow.zip").write_bytes(build_zip(files))
    fakedrive.configure(root, profile="bench", bandwidth=1 * MB)  # about 3 s to read
    target = user_folder(tmp_path / "target")
    command = [sys.executable, "-m", "colabmagic", "stage", str(root / "slow.zip")]
    proc = subprocess.Popen(
        [*command, "--to", str(target), "--quiet", "--streams", "4"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_in_child,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(target.glob(".colabmagic/tmp-*/cat/*")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    as_it_was(target)


# --------------------------------------------------------------------------- the reader itself


class SlowSource(SourceFile):
    """A local file whose reads take a little time, and one offset that fails."""

    fail_at: int | None = None
    delay = 0.002

    def pread(self, offset: int, size: int) -> bytes:
        time.sleep(self.delay)
        if self.fail_at is not None and offset <= self.fail_at < offset + size:
            raise PermissionError(errno.EACCES, "refused", str(self.path))
        return super().pread(offset, size)


def test_a_slow_consumer_never_holds_more_than_n_plus_two_segments(tmp_path):
    data = random.Random(8).randbytes(3 * MB + 17)  # the last segment is short
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    out = io.BytesIO()
    with ranged.Ranged(SlowSource(path), 4, segment=SEGMENT) as reader:
        for i, chunk in enumerate(reader):
            if i % 8 == 0:
                time.sleep(0.01)  # the unpacker is the slow side: readers fill the window
            assert reader._claimed - reader._consumed <= reader.window
            out.write(chunk)
    assert out.getvalue() == data
    assert reader.peak == reader.window == 6  # reached, never passed
    assert [t for t in threading.enumerate() if t.name == ranged.THREAD_NAME] == []


def test_one_reader_failing_stops_the_others_and_is_raised_in_order(tmp_path):
    data = random.Random(9).randbytes(2 * MB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    source = SlowSource(path)
    source.fail_at = 5 * SEGMENT + 100
    got = bytearray()
    with (
        pytest.raises(PermissionError),
        ranged.Ranged(source, 4, segment=SEGMENT) as reader,
    ):
        for chunk in reader:
            got += chunk
    assert bytes(got) == data[: len(got)] and len(got) <= 5 * SEGMENT
    assert reader._claimed < reader.count
    assert [t for t in threading.enumerate() if t.name == ranged.THREAD_NAME] == []


def test_a_file_that_shrinks_while_read_is_refused(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(10).randbytes(MB))
    source = SourceFile(path)
    os.truncate(path, MB // 2)  # the size seen first is no longer there to read
    with (
        pytest.raises(ColabMagicError, match="changed while it was being read"),
        ranged.Ranged(source, 3, segment=SEGMENT) as reader,
    ):
        for _ in reader:
            pass
