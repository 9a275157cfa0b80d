"""%drive: the status table, --fake / --unmount / --remount, and Colab's side of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic import drive, fakedrive, status
from colabmagic.status import DriveStatus
from tests.builders import write_file, write_files

needs_fuse = pytest.mark.skipif(
    fakedrive.available() is not None, reason=f"fake Drive unavailable: {fakedrive.available()}"
)
FAKE_FSTYPE = "fuse.colabmagic-fakedrive"


@pytest.fixture(autouse=True)
def no_simulated_drive_left():
    """Every test starts and ends without a simulated Drive of status.py's."""
    yield
    status._stop_fake()


def test_plain_folder_status(ip, drive_root, workdir):
    (drive_root / "MyDrive" / "train").mkdir()
    (drive_root / "MyDrive" / "notes.txt").write_text("hi")

    result = ip.run_line_magic("drive", "")

    assert isinstance(result, DriveStatus)
    assert result.kind == "folder"
    assert result.root == drive_root
    assert result.root_items == 2
    assert result.local_dir == workdir
    assert result.local_free > 0 and result.local_total >= result.local_free
    assert result.drive_free is not None and result.drive_used is not None
    assert result.warnings == ()
    text = str(result)
    assert text.startswith("%drive")
    assert ip.display_formatter.format(result)[0]["text/plain"] == text
    assert "plain folder" in text and str(drive_root) in text
    page = result._repr_html_()
    assert page.count("<tr>") == len(result.rows())
    assert "items in MyDrive" in page


def test_crowded_mydrive_root_is_a_warning(drive_root):
    for i in range(1001):
        (drive_root / "MyDrive" / f"img{i:04d}.jpg").touch()

    result = colabmagic.drive_status()

    assert result.root_items == 1001
    assert any("1,001 items" in w and "time out" in w for w in result.warnings)
    assert "1,001 items" in result._repr_html_()


def test_no_drive_outside_colab_says_how_to_fake_one(drive_root, monkeypatch):
    drive.use_root(None)
    monkeypatch.delenv(drive.ENV_VAR, raising=False)

    result = colabmagic.drive_status()

    assert result.kind == "none" and result.root is None and result.root_items is None
    assert any(drive.ENV_VAR in w and "%drive --fake" in w for w in result.warnings)
    assert "not mounted" in str(result)


def test_status_escapes_what_it_shows(tmp_path):
    root = tmp_path / "<b>drive & co</b>"
    (root / "MyDrive").mkdir(parents=True)
    drive.use_root(root)
    try:
        page = colabmagic.drive_status()._repr_html_()
    finally:
        drive.use_root(None)
    assert "&lt;b&gt;drive &amp; co&lt;/b&gt;" in page
    assert "<b>drive" not in page


def test_fake_with_profile_none_is_the_plain_folder_and_unmount_goes_back(ip, drive_root, tmp_path):
    folder = tmp_path / "rehearsal"

    result = ip.run_line_magic("drive", f"--fake {folder} --profile none")

    assert (folder / "MyDrive").is_dir()
    assert result.kind == "folder" and result.root == folder
    assert drive.resolve("My Drive") == folder / "MyDrive"
    assert result.warnings == ()

    back = ip.run_line_magic("drive", "--unmount")

    assert back.root == drive_root
    assert drive.resolve("My Drive") == drive_root / "MyDrive"


def test_fake_without_fuse_falls_back_to_the_folder_and_says_so(ip, tmp_path, monkeypatch):
    monkeypatch.setattr(fakedrive, "available", lambda: "/dev/fuse missing")
    folder = tmp_path / "d"

    result = ip.run_line_magic("drive", f"--fake {folder} --profile colab")

    assert result.kind == "folder" and result.root == folder
    (warning,) = result.warnings
    assert "/dev/fuse missing" in warning and "plain folder" in warning
    assert warning in ip.run_line_magic("drive", "").warnings  # it stays said
    assert "nothing to remount" in ip.run_line_magic("drive", "--remount").warnings[0]


def test_unmount_with_nothing_mounted_says_so(ip):
    result = ip.run_line_magic("drive", "--unmount")
    assert result.kind == "folder"
    assert "nothing to unmount" in result.warnings[0]


def test_remount_outside_colab_without_a_simulated_drive_is_a_usage_error(ip):
    with pytest.raises(UsageError, match=r"^%drive: --remount works on Colab's Drive"):
        ip.run_line_magic("drive", "--remount")


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(colabmagic.ColabMagicError, match="unknown profile 'slow'"):
        status.fake(tmp_path, profile="slow")


def test_cli_prints_the_status(drive_root, capsys):
    from colabmagic.cli import main

    assert main(["--drive", str(drive_root), "drive"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("%drive") and "plain folder" in out


# --- Colab ---------------------------------------------------------------------------


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """Colab's google.colab.drive, recording calls, with Drive at tmp/content/drive and
    DriveFS's log under a fake HOME. Everything else is real."""
    mount_point = tmp_path / "content" / "drive"
    write_files(mount_point / "MyDrive", {"model.pt": b"x"}, dirs=["datasets"])
    calls: list[tuple] = []

    def flush_and_unmount():
        calls.append(("flush_and_unmount",))
        (mount_point / "MyDrive" / "datasets").rmdir()
        (mount_point / "MyDrive" / "model.pt").unlink()
        (mount_point / "MyDrive").rmdir()

    def mount(path, force_remount=False):
        calls.append(("mount", path, force_remount))
        (Path(path) / "MyDrive").mkdir(parents=True, exist_ok=True)

    colab_drive = types.SimpleNamespace(flush_and_unmount=flush_and_unmount, mount=mount)
    google = types.ModuleType("google")
    google_colab = types.ModuleType("google.colab")
    google_colab.drive = colab_drive
    google.colab = google_colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    monkeypatch.delenv(drive.ENV_VAR, raising=False)
    home = tmp_path / "home"
    logs = home / ".config" / "Google" / "DriveFS" / "Logs"
    logs.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    drive.use_root(None)
    drive.use_mount_point(str(mount_point))
    yield types.SimpleNamespace(mount_point=mount_point, calls=calls, log=logs / "drive_fs.txt")
    drive.use_mount_point(drive.COLAB_MOUNT_POINT)


def test_colab_status_reads_drivefs_log(colab):
    colab.log.write_text(
        "2024-05-01T10:00:00.000ZI [1:core] cello_fs.cc:302:InitInternal Content cache at: x\n"
        "2024-05-01T10:00:01.000ZE [2:core] QueryManager timed out waiting for root\n"
        "2024-05-01T10:02:00.000ZE [3:core] Failed to download content (QUOTA_EXCEEDED)\n"
        "2024-05-01T10:05:00.000ZE [2:core] QueryManager timed out waiting for /train\n"
    )

    result = colabmagic.drive_status()

    assert result.kind == "colab" and result.root == colab.mount_point
    assert result.root_items == 2
    assert (result.drivefs_timeouts, result.drivefs_quota_errors) == (2, 1)
    timeouts, quota = result.warnings
    assert "2 timeouts" in timeouts and "waiting for /train" in timeouts
    assert "1 QUOTA_EXCEEDED" in quota
    assert ("DriveFS log", "2 timeouts, 1 QUOTA_EXCEEDED") in result.rows()
    assert "Colab Drive (DriveFS)" in str(result)
    assert colab.calls == []  # a status never mounts


def test_colab_without_a_log_shows_no_log_row(colab):
    result = colabmagic.drive_status()
    assert result.kind == "colab" and result.drivefs_timeouts is None
    assert all(label != "DriveFS log" for label, _ in result.rows())


def test_colab_remount_flushes_then_forces_a_mount(ip, colab):
    result = ip.run_line_magic("drive", "--remount")

    assert colab.calls == [
        ("flush_and_unmount",),
        ("mount", str(colab.mount_point), True),
    ]
    assert result.kind == "colab"


def test_colab_unmount_leaves_drive_unmounted(ip, colab):
    result = ip.run_line_magic("drive", "--unmount")

    assert colab.calls == [("flush_and_unmount",)]
    assert result.kind == "none"
    assert "first magic that reads it mounts it" in result.warnings[0]


# --- the simulated Drive ---------------------------------------------------------------


@needs_fuse
def test_fake_mounts_a_simulated_drive_and_a_second_fake_replaces_it(ip, drive_root, tmp_path):
    first_dir = tmp_path / "first"
    write_file(first_dir / "MyDrive" / "a.bin", b"first drive")

    result = ip.run_line_magic("drive", f"--fake {first_dir} --profile bench")

    assert result.kind == "simulated" and result.profile == "bench"
    assert result.source == first_dir
    assert result.detail == (
        "bench profile (20 ms a cold open, 1 ms warm, 50 ms per 1,000 listed, 100 MB/s, "
        "16 in flight)"
    )
    first_root = result.root
    assert status.mount_type(first_root) == FAKE_FSTYPE
    assert drive.resolve("My Drive/a.bin").read_bytes() == b"first drive"
    assert "simulated Drive: bench profile" in str(result)

    second_dir = tmp_path / "second"  # no MyDrive yet: --fake makes it
    result = ip.run_line_magic("drive", f"--fake {second_dir} --profile fast")

    assert (second_dir / "MyDrive").is_dir()
    assert result.kind == "simulated" and result.profile == "fast"
    assert status.mount_type(result.root) == FAKE_FSTYPE
    assert status.mount_type(first_root) != FAKE_FSTYPE  # the first is gone

    back = ip.run_line_magic("drive", "--unmount")
    assert status.mount_type(result.root) != FAKE_FSTYPE
    assert back.kind == "folder" and back.root == drive_root


@needs_fuse
def test_remount_restarts_the_simulated_drive_cold(ip, tmp_path):
    folder = tmp_path / "d"
    write_file(folder / "MyDrive" / "x.bin", b"x" * 1000)
    root = ip.run_line_magic("drive", f"--fake {folder} --profile fast").root
    drive.resolve("My Drive/x.bin").read_bytes()
    assert fakedrive.status(root)["warm"] == 1

    result = ip.run_line_magic("drive", "--remount")

    assert result.kind == "simulated" and result.source == folder
    assert fakedrive.status(result.root)["warm"] == 0
    assert drive.resolve("My Drive/x.bin").read_bytes() == b"x" * 1000


@needs_fuse
def test_a_dead_simulated_drive_is_reported_and_remount_revives_it(ip, tmp_path):
    folder = tmp_path / "d"
    (folder / "MyDrive" / "train").mkdir(parents=True)
    ip.run_line_magic("drive", f"--fake {folder} --profile fast")
    handle = status._fake.handle
    os.kill(handle.pid, signal.SIGKILL)  # the server this test started, by its id
    deadline = time.monotonic() + 10
    while handle.mounted and time.monotonic() < deadline:
        time.sleep(0.01)

    dead = ip.run_line_magic("drive", "")

    assert dead.root_items is None
    assert any("disconnected" in w and "%drive --remount" in w for w in dead.warnings)

    alive = ip.run_line_magic("drive", "--remount")

    assert alive.root_items == 1 and alive.warnings == ()


@needs_fuse
def test_no_simulated_mount_outlives_the_interpreter(tmp_path):
    code = (
        "import sys; from colabmagic import status; "
        "print(status.fake(sys.argv[1], profile='fast').root)"
    )
    repo = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    root = out.stdout.strip()
    assert root
    assert status.mount_type(Path(root)) != FAKE_FSTYPE
    mounted = Path("/proc/self/mountinfo").read_text()
    assert f" {root} " not in mounted
