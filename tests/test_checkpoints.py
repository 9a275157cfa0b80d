"""%ckptlink: link mode, the mirror (stability, failures, resume), --keep, latest_checkpoint."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic.cli import main as cli
from tests import builders

checkpoints = importlib.import_module("colabmagic.checkpoints")


@pytest.fixture(autouse=True)
def no_mirror_left_running():
    yield
    checkpoints.stop_all_mirrors()
    assert checkpoints.mirror_status().mirrors == ()


def write(path: Path, data: bytes, mtime: float | None = None) -> Path:
    return builders.write_file(path, data, mtime=mtime)


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every file under FOLDER but the mirror's manifests (in its hidden .colabmagic/)."""
    return builders.tree(folder, state=False)


def listing(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --------------------------------------------------------------------------- latest_checkpoint

T = 1_700_000_000  # a fixed mtime, so that only the names decide unless said otherwise

FAMILIES = {
    "hugging face": (
        ["checkpoint-500/", "checkpoint-1500/", "checkpoint-1000/"],
        ("checkpoint-1500", None, 1500),
    ),
    "lightning": (
        ["epoch=3-step=1200.ckpt", "epoch=10-step=4000.ckpt", "epoch=9-step=3600.ckpt"],
        ("epoch=10-step=4000.ckpt", 10, 4000),
    ),
    "keras": (
        ["weights.05-0.12.h5", "weights.12-0.08.h5", "weights.09-0.10.h5"],
        ("weights.12-0.08.h5", 12, None),
    ),
    "keras-yolo3": (
        ["ep042-loss0.123-val_loss0.456.pth", "ep100-loss0.100-val_loss0.300.pth"],
        ("ep100-loss0.100-val_loss0.300.pth", 100, None),
    ),
    "darknet": (
        ["yolov3_1000.weights", "yolov3_last.weights", "yolov3_2000.weights"],
        ("yolov3_last.weights", None, None),
    ),
    "ultralytics": (["last.pt", "best.pt"], ("last.pt", None, None)),
    "plain": (["model_epoch_2.pt", "model_epoch_12.pt"], ("model_epoch_12.pt", 12, None)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_latest_checkpoint_per_naming_family(drive_root, family):
    names, (latest, epoch, step) = FAMILIES[family]
    run = drive_root / "MyDrive" / "runs" / family
    for i, name in enumerate(names):
        if name.endswith("/"):
            write(run / name / "model.safetensors", b"w" * 100, T + i)
            write(run / name / "trainer_state.json", b"{}", T + i)
        else:
            write(run / name, b"w" * (i + 1), T + 10 - i)  # mtimes against the names
    write(run / "events.out.tfevents.1.host", b"not a checkpoint", T + 99)
    found = colabmagic.latest_checkpoint(f"My Drive/runs/{family}")
    assert (found.name, found.epoch, found.step) == (latest, epoch, step)
    if family == "hugging face":
        assert found.path.is_dir() and found.bytes == 102


def test_latest_checkpoint_ties_and_edges(drive_root, workdir):
    run = workdir / "run"
    write(run / "model.pt", b"old", T)
    write(run / "model-b.pt", b"new", T + 5)
    write(run / "model-a.pt.partial", b"half", T + 10)  # an upload in progress
    write(run / ".ipynb_checkpoints" / "x.pt", b"no", T + 20)
    assert colabmagic.latest_checkpoint("run").name == "model-b.pt"  # no numbers: mtime
    write(run / "lightning_logs" / "version_0" / "checkpoints" / "epoch=0-step=5.ckpt", b"x", T)
    assert colabmagic.latest_checkpoint(run).name == "epoch=0-step=5.ckpt"  # numbers first
    (workdir / "empty").mkdir()
    assert colabmagic.latest_checkpoint("empty") is None
    with pytest.raises(colabmagic.ColabMagicError, match="no such file or folder"):
        colabmagic.latest_checkpoint("My Drive/nowhere")
    assert checkpoints.parse_epoch_step("epoch=03-val_loss=0.12.ckpt") == (3, None)
    assert checkpoints.parse_epoch_step("global_step500") == (None, 500)
    assert checkpoints.parse_epoch_step("yolov3_last.weights") == (None, None)


# --------------------------------------------------------------------------- link mode


def test_link_moves_what_is_there_then_links(ip, drive_root, workdir):
    local = workdir / "checkpoints"
    write(local / "epoch=0-step=10.ckpt", b"zero", T)
    write(local / "epoch=1-step=20.ckpt", b"one", T + 1)
    write(local / "logs" / "metrics.csv", b"loss\n0.5\n")
    before = tree(local)
    result = ip.run_line_magic("ckptlink", 'checkpoints "My Drive/runs/<run 1>"')
    target = drive_root / "MyDrive" / "runs" / "<run 1>"

    assert result.mode == "link" and result.action == "linked" and result.moved == 3
    assert local.is_symlink() and Path(os.readlink(local)) == target
    assert tree(target) == before
    assert [c.name for c in result.checkpoints] == ["epoch=1-step=20.ckpt", "epoch=0-step=10.ckpt"]
    assert result.latest.path == local / "epoch=1-step=20.ckpt"
    assert (result.latest.epoch, result.latest.step) == (1, 20)
    html = result._repr_html_()
    assert "&lt;run 1&gt;" in html and "<run 1>" not in html
    assert "Resume from:" in str(result)

    again = ip.run_line_magic("ckptlink", 'checkpoints "My Drive/runs/<run 1>"')
    assert again.action == "unchanged" and again.moved == 0
    assert tree(target) == before


def test_a_name_clash_moves_nothing_and_names_both_paths(ip, drive_root, workdir):
    local = workdir / "ckpt"
    write(local / "a.pt", b"local a")
    write(local / "last.pt", b"local last")
    drive_dir = drive_root / "MyDrive" / "run"
    write(drive_dir / "last.pt", b"drive last")
    with pytest.raises(
        UsageError, match=rf'"{local}/last.pt" and "{drive_dir}/last.pt" both exist'
    ):
        ip.run_line_magic("ckptlink", 'ckpt "My Drive/run"')
    assert tree(local) == {"a.pt": b"local a", "last.pt": b"local last"}
    assert tree(drive_dir) == {"last.pt": b"drive last"}
    assert not local.is_symlink()


def test_a_link_elsewhere_needs_force_which_deletes_nothing(ip, drive_root, workdir):
    ip.run_line_magic("ckptlink", 'ckpt "My Drive/old"')
    write(workdir / "ckpt" / "epoch=1.pt", b"kept")
    with pytest.raises(UsageError, match=r"is a link to .*old.*--force relinks it"):
        ip.run_line_magic("ckptlink", 'ckpt "My Drive/new"')
    result = ip.run_line_magic("ckptlink", 'ckpt "My Drive/new" --force')
    assert result.action == "relinked"
    assert Path(os.readlink(workdir / "ckpt")) == drive_root / "MyDrive" / "new"
    assert tree(drive_root / "MyDrive" / "old") == {"epoch=1.pt": b"kept"}
    assert "left where they are" in str(result)


def test_keep_prunes_only_older_numbered_checkpoints(ip, drive_root, workdir):
    run = drive_root / "MyDrive" / "run"
    for i in range(5):
        write(run / f"epoch={i}.ckpt", b"%d" % i, T + i)
    write(run / "logs" / "metrics.csv", b"loss")
    write(run / "last.ckpt", b"last", T)
    write(run / "best.ckpt", b"best", T)
    write(run / "notes.txt", b"mine")
    result = ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --keep 2')
    assert sorted(p.name for p in result.pruned) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    assert sorted(os.listdir(run)) == [
        "best.ckpt",
        "epoch=3.ckpt",
        "epoch=4.ckpt",
        "last.ckpt",
        "logs",
        "notes.txt",
    ]
    assert "trash, which still counts against your quota" in result._repr_html_()
    with pytest.raises(UsageError, match="--keep must be 1 or more"):
        ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --keep 0')


def test_cli_twin(drive_root, workdir, capsys):
    write(workdir / "out" / "step_100" / "w.bin", b"w")
    code = cli(["--drive", str(drive_root), "ckptlink", "out", "My Drive/out"])
    assert code == 0
    assert "step_100 (step 100" in capsys.readouterr().out
    assert (workdir / "out").is_symlink()
    assert cli(["--drive", str(drive_root), "ckptlink", "x", "My Drive/x", "--mirror"]) == 2
    assert "--mirror needs a running kernel" in capsys.readouterr().err
    assert cli(["--drive", str(drive_root), "ckptlink"]) == 2
    assert "give LOCAL and DRIVE_DIR" in capsys.readouterr().err
    assert cli(["--drive", str(drive_root), "ckptlink", "--status"]) == 0
    assert "No mirror is running" in capsys.readouterr().out


# --------------------------------------------------------------------------- mirror mode


def start_mirror(local: str, drive_dir: str, **options) -> checkpoints.Mirror:
    """A mirror whose thread sleeps for an hour: the test drives it with sync_now()."""
    result = colabmagic.link_checkpoints(local, drive_dir, mirror=True, every=3600, **options)
    assert result.mode == "mirror" and result.mirror is not None
    return result.mirror


def test_mirror_uploads_a_file_only_once_it_holds_still(drive_root, workdir):
    mirror = start_mirror("ckpt", "My Drive/run")
    drive_dir = drive_root / "MyDrive" / "run"
    local = workdir / "ckpt"
    assert not local.is_symlink() and local.is_dir()

    with open(local / "epoch=0.ckpt", "wb") as being_written:
        being_written.write(b"first half ")
        being_written.flush()
        assert mirror.sync_now() == 0  # seen once
        being_written.write(b"second half")
        being_written.flush()
        assert mirror.sync_now() == 0  # changed since the last scan
    assert not (drive_dir / "epoch=0.ckpt").exists()
    assert mirror.sync_now() == 1  # unchanged across two scans
    assert tree(drive_dir) == {"epoch=0.ckpt": b"first half second half"}

    # A checkpoint folder goes only when all of its files hold still, and have for
    # FOLDER_SETTLE seconds (between two files of a folder no file is open).
    write(local / "checkpoint-5" / "a.bin", b"a", T)
    mirror.sync_now()
    write(local / "checkpoint-5" / "b.bin", b"b")
    assert mirror.sync_now() == 0
    assert mirror.sync_now() == 0  # b.bin is too fresh
    assert not (drive_dir / "checkpoint-5").exists()
    os.utime(local / "checkpoint-5" / "b.bin", (T, T))
    mirror.sync_now()
    assert mirror.sync_now() == 2
    # A changed file goes again; nothing deleted locally is deleted in Drive.
    write(local / "epoch=0.ckpt", b"rewritten")
    (local / "checkpoint-5" / "a.bin").unlink()
    mirror.sync_now()
    mirror.sync_now()
    assert tree(drive_dir) == {
        "epoch=0.ckpt": b"rewritten",
        "checkpoint-5/a.bin": b"a",
        "checkpoint-5/b.bin": b"b",
    }
    assert mirror.files_copied == 4


def test_mirror_thread_runs_on_its_own_and_stops_after_a_final_sync(ip, drive_root, workdir):
    result = ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --mirror --every 0.05')
    assert result.action == "mirroring" and "every 0.05 s" in str(result)
    write(workdir / "ckpt" / "epoch=0.ckpt", b"zero")
    drive_dir = drive_root / "MyDrive" / "run"
    assert wait_for(lambda: (drive_dir / "epoch=0.ckpt").exists())

    status = ip.run_line_magic("ckptlink", "--status")
    assert len(status.mirrors) == 1 and status.mirrors[0].running
    assert status.mirrors[0].files_copied == 1 and status.mirrors[0].errors == 0
    assert "running, every 0.05 s" in status._repr_html_()
    same = ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --mirror')
    assert same.action == "running"
    with pytest.raises(UsageError, match="already mirrored to My Drive/run"):
        ip.run_line_magic("ckptlink", 'ckpt "My Drive/other" --mirror')
    with pytest.raises(UsageError, match="is being mirrored"):
        ip.run_line_magic("ckptlink", 'ckpt "My Drive/run"')

    write(workdir / "ckpt" / "epoch=1.ckpt", b"one")  # written just before the stop
    stopped = ip.run_line_magic("ckptlink", "--stop ckpt")
    assert stopped.action == "stopped" and not stopped.mirrors[0].running
    assert tree(drive_dir) == {"epoch=0.ckpt": b"zero", "epoch=1.ckpt": b"one"}
    assert ip.run_line_magic("ckptlink", "--status").mirrors == ()
    with pytest.raises(UsageError, match="no mirror is running for"):
        ip.run_line_magic("ckptlink", "--stop ckpt")


def test_mirror_survives_drive_failing_then_catches_up(drive_root, workdir):
    mirror = start_mirror("ckpt", "My Drive/run")
    drive_dir = drive_root / "MyDrive" / "run"
    write(workdir / "ckpt" / "epoch=0.ckpt", b"zero")
    write(workdir / "ckpt" / "sub" / "epoch=1.ckpt", b"one")
    mirror.sync_now()

    # Drive goes away: where the folder was, something no file can be written into.
    aside = drive_root / "MyDrive" / "aside"
    drive_dir.rename(aside)
    drive_dir.write_bytes(b"")
    for _ in range(3):
        assert mirror.sync_now() == 0  # never raises
    state = checkpoints.mirror_status().mirrors[0]
    assert state.failing and state.errors == 3 and state.pending == 2
    assert "Not a directory" in state.last_error or "File exists" in state.last_error
    shown = str(checkpoints.mirror_status())
    assert "Drive failing" in shown and "errors" in shown

    drive_dir.unlink()
    aside.rename(drive_dir)
    assert mirror.sync_now() == 2
    state = checkpoints.mirror_status().mirrors[0]
    assert not state.failing and state.pending == 0 and state.errors == 3
    assert tree(drive_dir) == {"epoch=0.ckpt": b"zero", "sub/epoch=1.ckpt": b"one"}


def test_resume_copies_back_into_an_empty_local_folder(ip, drive_root, workdir):
    drive_dir = drive_root / "MyDrive" / "run"
    write(drive_dir / "epoch=1-step=100.ckpt", b"one", T)
    write(drive_dir / "epoch=2-step=200.ckpt", b"two", T + 60)
    write(drive_dir / "logs" / "metrics.csv", b"loss\n")
    write(drive_dir / "epoch=3-step=300.ckpt.partial", b"half")  # an upload cut short
    result = ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --mirror --every 3600')
    local = workdir / "ckpt"
    assert result.action == "resumed" and result.copied_back == 3
    assert tree(local) == {
        "epoch=1-step=100.ckpt": b"one",
        "epoch=2-step=200.ckpt": b"two",
        "logs/metrics.csv": b"loss\n",
    }
    assert (local / "epoch=2-step=200.ckpt").stat().st_mtime == T + 60
    assert result.latest.path == local / "epoch=2-step=200.ckpt"
    assert (result.latest.epoch, result.latest.step) == (2, 200)
    # What came back is known to be in Drive: it is not uploaded again.
    assert result.mirror.sync_now() == 0 and result.mirror.sync_now() == 0
    assert result.mirror.files_copied == 0


def test_mirror_keep_prunes_drive_and_skips_what_it_would_prune(drive_root, workdir):
    mirror = start_mirror("ckpt", "My Drive/run", keep=2)
    for i in range(4):
        write(workdir / "ckpt" / f"epoch={i}.ckpt", b"%d" % i)
    mirror.sync_now()
    assert mirror.sync_now() == 2
    assert listing(drive_root / "MyDrive" / "run") == ["epoch=2.ckpt", "epoch=3.ckpt"]
    write(workdir / "ckpt" / "epoch=4.ckpt", b"4")
    mirror.sync_now()
    mirror.sync_now()
    assert listing(drive_root / "MyDrive" / "run") == ["epoch=3.ckpt", "epoch=4.ckpt"]
    assert [p.name for p in mirror.pruned] == ["epoch=2.ckpt"]


def test_mirror_refuses_a_local_link(ip, drive_root, workdir):
    ip.run_line_magic("ckptlink", 'ckpt "My Drive/run"')
    with pytest.raises(UsageError, match="--mirror needs a folder on local disk"):
        ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --mirror')
    with pytest.raises(UsageError, match="not a Drive path"):
        ip.run_line_magic("ckptlink", '"My Drive/a" "My Drive/b"')
    with pytest.raises(UsageError, match="overlap"):
        ip.run_line_magic("ckptlink", f'{drive_root}/MyDrive/x/y "My Drive/x"')


def test_unload_ext_stops_the_mirror_after_a_last_sync(ip, drive_root, workdir):
    ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --mirror --every 3600')
    write(workdir / "ckpt" / "last.pt", b"last")
    ip.run_line_magic("unload_ext", "colabmagic")
    assert checkpoints.mirror_status().mirrors == ()
    assert tree(drive_root / "MyDrive" / "run") == {"last.pt": b"last"}
    ip.run_line_magic("load_ext", "colabmagic")  # the fixture unloads it again


# --------------------------------------------------------------------------- simulated Drive

fakedrive = colabmagic.fakedrive
_no_fake = fakedrive.available()


@pytest.mark.skipif(_no_fake is not None, reason=f"simulated Drive: {_no_fake}")
def test_over_the_simulated_drive_resume_waits_out_a_failing_drive(tmp_path, workdir):
    from colabmagic import drive, source

    src = tmp_path / "drive-src"
    write(src / "MyDrive" / "run" / "epoch=5-step=50.ckpt", b"five" * 1000, T)
    with fakedrive.mount(src, profile="fast") as root:
        drive.use_root(root)
        try:
            fakedrive.configure(root, fail_rate=1.0)  # every read from Drive fails
            source.set_retries(1)  # the one retry policy applies: one retry, then give up
            with pytest.raises(
                colabmagic.ColabMagicError, match="copying checkpoints back.*after 1 retries"
            ):
                colabmagic.link_checkpoints("ckpt", "My Drive/run", mirror=True)
            source.set_retries(source.RETRIES)
            assert not [p for p in (workdir / "ckpt").rglob("*") if p.is_file()]
            fakedrive.configure(root, fail_rate=None)
            result = colabmagic.link_checkpoints("ckpt", "My Drive/run", mirror=True, every=3600)
            assert result.action == "resumed" and result.latest.epoch == 5
            write(workdir / "ckpt" / "epoch=6-step=60.ckpt", b"six" * 1000)
            write(workdir / "ckpt" / "checkpoint-70" / "model.bin", b"seven" * 1000, T)
            write(workdir / "ckpt" / "checkpoint-70" / "state.json", b"{}", T)
            result.mirror.sync_now()
            assert result.mirror.sync_now() == 3  # the folder renamed whole through FUSE
            checkpoints.stop_mirror("ckpt")
            assert tree(root / "MyDrive" / "run") == {
                "epoch=5-step=50.ckpt": b"five" * 1000,
                "epoch=6-step=60.ckpt": b"six" * 1000,
                "checkpoint-70/model.bin": b"seven" * 1000,
                "checkpoint-70/state.json": b"{}",
            }
            assert colabmagic.latest_checkpoint("My Drive/run").name == "epoch=6-step=60.ckpt"
            shutil.rmtree(workdir / "ckpt")
            again = colabmagic.link_checkpoints("ckpt", "My Drive/run", mirror=True, every=3600)
            assert again.action == "resumed" and again.copied_back == 4 and not again.skipped
        finally:
            source.set_retries(source.RETRIES)
            checkpoints.stop_all_mirrors()
            drive.use_root(None)


@pytest.mark.skipif(_no_fake is not None, reason=f"simulated Drive: {_no_fake}")
def test_ctrl_c_during_an_upload_leaves_nothing_that_looks_complete(tmp_path, workdir, sigint):
    import signal
    import threading

    from colabmagic import drive

    (tmp_path / "drive-src" / "MyDrive").mkdir(parents=True)
    data = os.urandom(8_000_000)  # 2 s at the 4 MB/s below: Ctrl-C comes mid-upload
    with fakedrive.mount(tmp_path / "drive-src", profile="fast", bandwidth=4e6) as root:
        drive.use_root(root)
        try:
            mirror = start_mirror("ckpt", "My Drive/run")
            write(workdir / "ckpt" / "epoch=1-step=10.ckpt", data, T)
            mirror.sync_now()  # seen once; the next scan uploads it
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            with pytest.raises(KeyboardInterrupt):
                mirror.sync_now()
                time.sleep(10)  # not reached unless the upload beat the signal
            run = root / "MyDrive" / "run"
            assert listing(run) == []  # neither the checkpoint nor its .partial
            assert colabmagic.latest_checkpoint(run) is None
            assert mirror.sync_now() == 1  # the next sync completes normally
            assert (run / "epoch=1-step=10.ckpt").read_bytes() == data
        finally:
            checkpoints.stop_all_mirrors()
            drive.use_root(None)


# --------------------------------------------------------------------------- naming and units

# name -> (files as (relative path, mtime offset from T), expected latest path, epoch, step,
# a word the skipped reasons must hold or None)
# A table reads better one case to a few lines.
# fmt: off
NAMING = {
    "a stale last.ckpt loses to newer numbered ones": (
        [("last.ckpt", 0), ("epoch=4-step=40.ckpt", 90), ("epoch=5-step=50.ckpt", 100)],
        "epoch=5-step=50.ckpt", 5, 50, None,
    ),
    "a fresh last.ckpt wins": (
        [("last.ckpt", 101), ("epoch=4-step=40.ckpt", 90), ("epoch=5-step=50.ckpt", 100)],
        "last.ckpt", None, None, None,
    ),
    "resnet-50 is a model, not epoch 50": (
        [("resnet-50.pt", 100), ("epoch_3.pt", 10)],
        "epoch_3.pt", 3, None, None,
    ),
    "vit-b-16 is a model, not epoch 16": (
        [("vit-b-16.pth", 50), ("epoch_12.pth", 0)],
        "epoch_12.pth", 12, None, None,
    ),
    "an 8-digit date is time, not a step": (
        [("model_20240101.pt", 10), ("model_20240315.pt", 0)],
        "model_20240315.pt", None, None, None,
    ),
    "yolov5/8 runs: the newest run's last.pt": (
        [
            ("runs/train/exp/weights/last.pt", 0),
            ("runs/train/exp/weights/best.pt", 1),
            ("runs/train/exp2/weights/last.pt", 100),
            ("runs/train/exp2/weights/best.pt", 101),
        ],
        "runs/train/exp2/weights/last.pt", None, None, None,
    ),
    "darknet last": (
        [("yolov3_1000.weights", 1), ("yolov3_2000.weights", 2), ("yolov3_last.weights", 3)],
        "yolov3_last.weights", None, None, None,
    ),
    "darknet iterations, mtimes reset by a copy": (
        [("yolov3_1000.weights", 2), ("yolov3_2000.weights", 1)],
        "yolov3_2000.weights", None, 2000, None,
    ),
    "keras pairs are one unit each": (
        [
            ("ckpt-12.index", 0),
            ("ckpt-12.data-00000-of-00001", 0),
            ("ckpt-13.index", 10),
            ("ckpt-13.data-00000-of-00001", 10),
            ("checkpoint", 10),
        ],
        "ckpt-13", None, 13, None,
    ),
    "a keras pair without its data is skipped": (
        [("ckpt-12.index", 0), ("ckpt-12.data-00000-of-00001", 0), ("ckpt-13.index", 10)],
        "ckpt-12", None, 12, "ckpt-13",
    ),
    "safetensors shards and their index are one unit": (
        [
            ("model-00001-of-00002.safetensors", 5),
            ("model-00002-of-00002.safetensors", 5),
            ("model.safetensors.index.json", 5),
            ("notes.pt", 0),
        ],
        "model.safetensors.index.json", None, None, None,
    ),
    "a shard set missing a shard is skipped": (
        [
            ("model-00001-of-00002.safetensors", 5),
            ("model.safetensors.index.json", 5),
            ("best.pt", 0),
        ],
        "best.pt", None, None, "1 of its 2 shards",
    ),
    "an incomplete checkpoint folder is skipped": (
        [
            ("checkpoint-100/model.safetensors", 0),
            ("checkpoint-100/trainer_state.json", 0),
            ("checkpoint-200/optimizer.pt.partial", 10),
            ("checkpoint-200/trainer_state.json", 10),
        ],
        "checkpoint-100", None, 100, "checkpoint-200",
    ),
    "files and folders of two families: the newer by mtime": (
        [("epoch=1.ckpt", 0), ("epoch=2.ckpt", 10), ("checkpoint-500/w.bin", 20)],
        "checkpoint-500", None, 500, None,
    ),
}
# fmt: on


@pytest.mark.parametrize("case", NAMING)
def test_latest_checkpoint_naming_table(workdir, case):
    entries, latest, epoch, step, skipped = NAMING[case]
    run = workdir / "run"
    for rel, offset in entries:
        write(run / rel, rel.encode(), T + offset)
    found = colabmagic.latest_checkpoint(run)
    assert found is not None
    assert (os.path.relpath(found.path, run), found.epoch, found.step) == (latest, epoch, step)
    assert found.bytes == sum(len(p.relative_to(run).as_posix()) for p in found.files)
    if skipped is None:
        assert found.skipped == ()
    else:
        assert any(skipped in reason for reason in found.skipped), found.skipped
        assert "Skipped" in str(found)
    if case.startswith(("keras pairs", "safetensors")):
        assert len(found.files) == (2 if "keras" in case else 3)


def test_latest_is_none_and_says_why_when_nothing_is_whole(workdir):
    write(workdir / "run" / "checkpoint-7" / "model.bin.partial", b"half")
    with pytest.warns(UserWarning, match="checkpoint-7: holds model.bin.partial"):
        assert colabmagic.latest_checkpoint(workdir / "run") is None


# --------------------------------------------------------------------------- the cases


def test_a_paused_writer_is_not_uploaded_until_it_closes_the_file(drive_root, workdir):
    mirror = start_mirror("ckpt", "My Drive/run")
    drive_dir = drive_root / "MyDrive" / "run"
    with open(workdir / "ckpt" / "model.pt", "wb") as being_written:
        being_written.write(b"x" * 1000)
        being_written.flush()
        for _ in range(4):  # the file holds still for four scans: a pause mid-save
            assert mirror.sync_now() == 0
        assert not (drive_dir / "model.pt").exists()
        state = checkpoints.mirror_status().mirrors[0]
        assert state.held_open == ("model.pt",) and state.pending == 1
        assert "being written" in str(checkpoints.mirror_status())
        being_written.write(b"y" * 1000)
    mirror.sync_now()
    assert mirror.sync_now() == 1
    assert tree(drive_dir) == {"model.pt": b"x" * 1000 + b"y" * 1000}
    record = json.loads((drive_dir / ".colabmagic" / "manifests" / "model.pt.json").read_text())
    assert record["state"] == "complete"
    assert record["files"]["model.pt"]["size"] == 2000
    assert (
        record["files"]["model.pt"]["sha256"]
        == hashlib.sha256(b"x" * 1000 + b"y" * 1000).hexdigest()
    )


def test_writers_sees_another_process_holding_a_file_open(workdir):
    from colabmagic.checkpoints.mirror import writers

    path = workdir / "held.pt"
    path.write_bytes(b"")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"f = open({str(path)!r}, 'r+b'); print('open', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"open\n"
        assert writers([path]) == {path}
        with open(path, "rb"):  # a reader is no writer
            assert writers([path, workdir]) == {path}
            child.kill()
            child.wait()
            assert writers([path]) == set()
    finally:
        child.kill()
        child.wait()


def test_a_mirror_start_clears_its_leftovers_and_skips_what_is_not_whole(ip, drive_root, workdir):
    drive_dir = drive_root / "MyDrive" / "run"
    write(drive_dir / "checkpoint-100" / "model.safetensors", b"m100", T)
    write(drive_dir / "checkpoint-100" / "trainer_state.json", b"{}", T)
    write(drive_dir / "checkpoint-200.partial" / "model.safetensors", b"m2", T + 10)  # ours
    write(drive_dir / "checkpoint-300" / "optimizer.pt.partial", b"o3", T + 20)  # an old mirror's
    write(drive_dir / "checkpoint-300" / "trainer_state.json", b"{}", T + 20)
    write(drive_dir / "epoch=9.ckpt.partial", b"half", T + 30)  # ours
    write(drive_dir / "notes.tmp", b"the user's", T)  # not a name the mirror makes
    write(drive_dir / ".colabmagic" / "manifests" / "x.json.partial", b"{")
    assert colabmagic.latest_checkpoint(drive_dir).name == "checkpoint-100"

    result = ip.run_line_magic("ckptlink", 'ckpt "My Drive/run" --mirror --every 3600')
    assert result.action == "resumed"
    assert set(result.cleared) == {"checkpoint-200.partial", "epoch=9.ckpt.partial"}
    assert not (drive_dir / "checkpoint-200.partial").exists()
    assert not (drive_dir / ".colabmagic" / "manifests" / "x.json.partial").exists()
    assert (drive_dir / "notes.tmp").read_bytes() == b"the user's"
    assert any(s.startswith("checkpoint-300: holds optimizer.pt.partial") for s in result.skipped)
    assert tree(workdir / "ckpt") == {
        "checkpoint-100/model.safetensors": b"m100",
        "checkpoint-100/trainer_state.json": b"{}",
    }  # notes.tmp, a name someone is still writing, is neither cleared nor brought back
    assert result.latest.name == "checkpoint-100"
    shown = str(result)
    assert "not brought back" in shown and "cleared in Drive" in shown


def test_resume_skips_a_unit_that_does_not_match_its_manifest(drive_root, workdir):
    mirror = start_mirror("ckpt", "My Drive/run")
    write(workdir / "ckpt" / "epoch=1.ckpt", b"one", T)
    write(workdir / "ckpt" / "epoch=2.ckpt", b"two", T + 10)
    write(workdir / "ckpt" / "checkpoint-3" / "w.bin", b"three", T + 20)
    mirror.sync_now()
    assert mirror.sync_now() == 3
    checkpoints.stop_mirror("ckpt")
    drive_dir = drive_root / "MyDrive" / "run"
    write(drive_dir / "epoch=2.ckpt", b"TWO", T + 10)  # same size, other bytes
    write(drive_dir / "checkpoint-3" / "w.bin", b"thr", T + 20)  # shorter
    assert colabmagic.latest_checkpoint(drive_dir).name == "epoch=2.ckpt"  # sizes match
    shutil.rmtree(workdir / "ckpt")

    result = colabmagic.link_checkpoints("ckpt", "My Drive/run", mirror=True, every=3600)
    assert tree(workdir / "ckpt") == {"epoch=1.ckpt": b"one"}
    assert result.latest.name == "epoch=1.ckpt"
    assert any("epoch=2.ckpt: epoch=2.ckpt's bytes differ" in s for s in result.skipped)
    assert any("checkpoint-3: checkpoint-3/w.bin holds 3 bytes" in s for s in result.skipped)


def test_keep_counts_units_of_every_kind_and_status_counts_what_waits(drive_root, workdir):
    mirror = start_mirror("ckpt", "My Drive/run", keep=2)
    local = workdir / "ckpt"
    for i in range(4):
        write(local / f"epoch={i}.ckpt", b"%d" % i, T + i)
    write(local / "checkpoint-500" / "model.bin", b"m", T + 10)
    write(local / "checkpoint-500" / "state.json", b"{}", T + 10)
    mirror.sync_now()
    assert mirror.sync_now() == 3
    drive_dir = drive_root / "MyDrive" / "run"
    assert listing(drive_dir) == ["checkpoint-500", "epoch=3.ckpt"]
    state = checkpoints.mirror_status().mirrors[0]
    assert (state.pending, state.kept_back) == (0, 3)
    assert "3 older than the --keep 2 newest" in str(checkpoints.mirror_status())

    with open(local / "epoch=4.ckpt", "wb") as being_written:
        being_written.write(b"4")
        being_written.flush()
        mirror.sync_now()
        mirror.sync_now()
        state = checkpoints.mirror_status().mirrors[0]
        assert state.pending == 1 and state.pending_names == ("epoch=4.ckpt",)
        assert listing(drive_dir) == ["checkpoint-500", "epoch=3.ckpt"]  # nothing pruned yet
    assert mirror.sync_now() == 1  # closed: it held still all along
    assert listing(drive_dir) == ["checkpoint-500", "epoch=4.ckpt"]
    assert not (drive_dir / ".colabmagic" / "manifests" / "epoch=3.ckpt.json").exists()


def test_a_conflict_at_start_is_settled_by_mtime_or_refused(drive_root, workdir):
    drive_dir = drive_root / "MyDrive" / "run"
    local = workdir / "ckpt"
    write(drive_dir / "last.pt", b"drive's", T)
    write(local / "last.pt", b"local, newer", T + 60)
    result = colabmagic.link_checkpoints("ckpt", "My Drive/run", mirror=True, every=3600)
    assert result.replaced == ("last.pt",)
    assert "LOCAL is newer" in str(result) and "replaces Drive's copy" in str(result)
    result.mirror.sync_now()
    assert (drive_dir / "last.pt").read_bytes() == b"local, newer"
    checkpoints.stop_mirror("ckpt")

    write(drive_dir / "best.pt", b"drive's, newer", T + 120)
    write(local / "best.pt", b"local", T)
    with pytest.raises(
        colabmagic.ColabMagicError,
        match=rf'"{local}/best.pt" and "{drive_dir}/best.pt" differ and the copy in Drive is not',
    ):
        colabmagic.link_checkpoints("ckpt", "My Drive/run", mirror=True, every=3600)
    assert (drive_dir / "best.pt").read_bytes() == b"drive's, newer"
    assert (local / "best.pt").read_bytes() == b"local"


def test_status_says_what_it_knows_about_drive_on_colab(drive_root, workdir, monkeypatch):
    from colabmagic import drive

    mirror = start_mirror("ckpt", "My Drive/run")
    assert "nothing copied yet" in str(checkpoints.mirror_status())
    write(workdir / "ckpt" / "epoch=1.ckpt", b"one")
    mirror.sync_now()
    mirror.sync_now()
    assert "copied 0 s ago" in str(checkpoints.mirror_status()) or "ago" in str(
        checkpoints.mirror_status()
    )
    monkeypatch.setattr(drive, "in_colab", lambda: True)
    shown = str(checkpoints.mirror_status())
    assert "copied into the mount" in shown and "Drive's own upload is not observable" in shown
    assert "drive.flush_and_unmount()" in shown


def test_link_mode_shows_the_links_target(ip, drive_root, workdir):
    result = ip.run_line_magic("ckptlink", 'ckpt "My Drive/runs/r"')
    assert f"{workdir / 'ckpt'} → My Drive/runs/r" in str(result)
    assert "(symlink)" not in str(result)


def test_stop_waits_for_a_folder_written_just_before(drive_root, workdir):
    start_mirror("ckpt", "My Drive/run")
    write(workdir / "ckpt" / "checkpoint-9" / "model.bin", b"nine")
    write(workdir / "ckpt" / "checkpoint-9" / "state.json", b"{}")
    stopped = checkpoints.stop_mirror("ckpt")
    assert stopped.mirrors[0].pending == 0
    assert tree(drive_root / "MyDrive" / "run") == {
        "checkpoint-9/model.bin": b"nine",
        "checkpoint-9/state.json": b"{}",
    }


def test_a_log_kept_open_goes_up_as_it_grows(drive_root, workdir):
    mirror = start_mirror("ckpt", "My Drive/run")
    with open(workdir / "ckpt" / "events.out.tfevents.1.host", "wb") as log:
        log.write(b"event 1\n")
        log.flush()
        mirror.sync_now()
        assert mirror.sync_now() == 1  # not a checkpoint: a snapshot is worth having
        assert tree(drive_root / "MyDrive" / "run") == {"events.out.tfevents.1.host": b"event 1\n"}
