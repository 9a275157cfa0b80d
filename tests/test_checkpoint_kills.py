"""Kill a training run at random moments; the resume brings back only whole checkpoints.

A writer process saves checkpoints (files, Hugging Face folders, a rewritten last.pt)
in chunks with pauses longer than the mirror's scan interval, while a mirror in
another process copies them to a plain-folder Drive.  Both are SIGKILLed together
at a random moment, as a recycled VM kills them.  A resume into an empty folder must
then bring back only checkpoints the writer finished, byte for byte, and `latest`
must be the newest of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import colabmagic

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 8
EVERY = 0.05  # the mirror scans every 50 ms; the writer pauses 100-250 ms mid-save

WRITER = r"""
import hashlib, json, os, random, sys, time

local, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
log = open(log_path, "a", buffering=1)


def save(path):
    # A checkpoint written in chunks with pauses, as torch.save to a slow disk does.
    data = rng.randbytes(rng.randrange(64, 320) * 1024)
    with open(path, "wb") as out:
        for start in range(0, len(data), 64 * 1024):
            out.write(data[start : start + 64 * 1024])
            out.flush()
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0.1, 0.25))
    return hashlib.sha256(data).hexdigest()


seq = 0
while True:
    seq += 1
    kind = "folder" if seq % 3 == 1 else rng.choice(["file", "folder", "last"])
    if kind == "file":
        key = f"epoch={seq}-step={seq * 10}.ckpt"
        print(json.dumps({"start": key}), file=log)
        files = {key: save(os.path.join(local, key))}
    elif kind == "folder":
        key = f"checkpoint-{seq * 10}"
        os.makedirs(os.path.join(local, key))
        print(json.dumps({"start": key}), file=log)
        files = {}
        for name in ("model.safetensors", "optimizer.pt", "trainer_state.json"):
            files[f"{key}/{name}"] = save(os.path.join(local, key, name))
    else:
        key = "last.pt"
        print(json.dumps({"start": key}), file=log)
        files = {key: save(os.path.join(local, key))}
    print(json.dumps({"done": key, "seq": seq, "files": files}), file=log)
"""

MIRROR = r"""
import os, subprocess, sys, time

local, drive_root, log_path, seed, every = sys.argv[1:6]
from colabmagic import drive
import colabmagic

if os.environ.get("BLIND_MIRROR"):  # to see the test fail: stability across scans alone
    from colabmagic.checkpoints import mirror

    mirror.writers = lambda paths: set()

drive.use_root(drive_root)
colabmagic.link_checkpoints(local, "My Drive/run", mirror=True, every=float(every))
subprocess.Popen([sys.executable, "-c", WRITER, local, log_path, seed])
print("running", flush=True)
time.sleep(3600)
"""


def finished(log: Path) -> tuple[dict[str, list[tuple[int, dict[str, str]]]], bool]:
    """Each unit the writer finished: key -> [(seq, {file: sha256}), ...] (last.pt has
    several versions); and whether a save was under way when the kill came."""
    done: dict[str, list[tuple[int, dict[str, str]]]] = {}
    under_way = False
    for line in log.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # torn by the kill
        record = json.loads(line)
        if "start" in record:
            under_way = True
        else:
            done.setdefault(record["done"], []).append((record["seq"], record["files"]))
            under_way = False
    return done, under_way


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_sigkill_at_random_moments_then_resume(tmp_path, drive_root, monkeypatch):
    from colabmagic import checkpoints

    rng = random.Random(20261201)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    totals = {"brought back": 0, "folders": 0, "killed mid-save": 0, "skipped or waiting": 0}
    for i in range(ITERATIONS):
        run = tmp_path / f"run{i}"
        local, log = run / "ckpt", run / "log.jsonl"
        local.mkdir(parents=True)
        drive_dir = drive_root / "MyDrive" / "run"
        if drive_dir.exists():
            import shutil

            shutil.rmtree(drive_dir)
        runner = subprocess.Popen(
            [
                sys.executable,
                "-c",
                MIRROR.replace("WRITER", repr(WRITER)),
                str(local),
                str(drive_root),
                str(log),
                str(i),
                str(EVERY),
            ],
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            assert runner.stdout.readline() == b"running\n"
            # The first run lasts long enough for a folder to settle and go up.
            time.sleep(4.0 if i == 0 else rng.uniform(0.5, 2.5))
        finally:
            os.killpg(runner.pid, signal.SIGKILL)  # the mirror and the writer, at once
            runner.wait()
            runner.stdout.close()
        time.sleep(0.05)  # the writer, a grandchild, is reaped by init
        done, under_way = finished(log)
        totals["killed mid-save"] += under_way

        monkeypatch.chdir(run)
        result = colabmagic.link_checkpoints("resumed", "My Drive/run", mirror=True, every=3600)
        checkpoints.stop_mirror("resumed")
        back = run / "resumed"
        brought = {}
        for unit in checkpoints.list_checkpoints(back):
            key = os.path.relpath(unit.path, back)
            shas = {os.path.relpath(p, back): sha(p) for p in unit.files}
            versions = [seq for seq, files in done.get(key, []) if files == shas]
            assert versions, (
                f"iteration {i}: {key} came back but is not a finished save: {sorted(shas)}, "
                f"finished: {[sorted(files) for _, files in done.get(key, [])]}"
            )
            brought[key] = max(versions)
        assert not [p for p in back.rglob("*") if p.name.endswith(".partial")]
        totals["brought back"] += len(brought)
        totals["folders"] += sum(1 for key in brought if key.startswith("checkpoint-"))
        totals["skipped or waiting"] += len(result.skipped)
        if brought:
            newest = max(brought, key=brought.get)
            assert os.path.relpath(result.latest.path, back) == newest, (i, brought)
            in_drive = colabmagic.latest_checkpoint(drive_dir)
            assert os.path.relpath(in_drive.path, drive_dir) == newest
        else:
            assert result.latest is None
    # The test exercised what it claims: kills mid-save, and resumes with something.
    assert totals["killed mid-save"] >= ITERATIONS // 2, totals
    assert totals["brought back"] >= ITERATIONS // 2 and totals["folders"] >= 1, totals
    print(totals)
