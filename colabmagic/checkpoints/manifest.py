"""The manifest the mirror writes in Drive after each checkpoint it publishes.

One small JSON file per unit (a file, a checkpoint folder, a Keras pair, a shard
set) in ``DRIVE_DIR/.colabmagic/manifests/``, hidden from every listing of
checkpoints: each file's size, mtime and sha256 as uploaded.  It is written after
the unit is in place, so a unit whose files do not match it (or whose manifest says
an update is under way) is not one the mirror finished: `latest_checkpoint` and the
resume skip it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import fsio

FOLDER = ".colabmagic"  # hidden: walks of checkpoints never enter it
MANIFESTS = "manifests"
FORMAT = 1
UPDATING = "updating"  # written first when a folder in Drive is changed in place


@dataclass(frozen=True)
class FileRecord:
    size: int
    mtime_ns: int
    sha256: str | None


@dataclass(frozen=True)
class Manifest:
    unit: str
    state: str  # "complete" or UPDATING
    files: dict[str, FileRecord]  # relative to DRIVE_DIR
    written_at: float


def folder(drive_dir: Path) -> Path:
    return drive_dir / FOLDER / MANIFESTS


def path_for(drive_dir: Path, unit: str) -> Path:
    return folder(drive_dir) / (unit + ".json")


def write(
    drive_dir: Path, unit: str, files: dict[str, FileRecord], *, state: str = "complete"
) -> None:
    path = path_for(drive_dir, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format": FORMAT,
        "unit": unit,
        "state": state,
        "written_at": time.time(),
        "files": {
            rel: {"size": f.size, "mtime_ns": f.mtime_ns, "sha256": f.sha256}
            for rel, f in sorted(files.items())
        },
    }
    fsio.write_text_atomic(path, json.dumps(record, indent=1) + "\n")


def read(drive_dir: Path, unit: str) -> Manifest | None:
    """The manifest of UNIT, None when there is none.  One that cannot be read whole
    counts as an update cut short."""
    path = path_for(drive_dir, unit)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
        files = {
            rel: FileRecord(int(f["size"]), int(f["mtime_ns"]), f.get("sha256"))
            for rel, f in record["files"].items()
        }
        return Manifest(record["unit"], record["state"], files, float(record["written_at"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return Manifest(unit, UPDATING, {}, 0.0)


def remove(drive_dir: Path, unit: str) -> None:
    fsio.remove_quietly(path_for(drive_dir, unit))


def mismatch(drive_dir: Path, manifest: Manifest | None) -> str | None:
    """Why the unit in DRIVE_DIR is not the one MANIFEST describes (by the sizes, a
    cheap check; the resume also checks each sha256), or None when it matches."""
    if manifest is None:
        return None
    if manifest.state != "complete":
        return "its upload was cut short (the manifest says it was being updated)"
    for rel, record in manifest.files.items():
        try:
            found = os.stat(drive_dir / rel).st_size
        except OSError:
            return f"{rel} is missing (the manifest lists it)"
        if found != record.size:
            return f"{rel} holds {found:,} bytes, the manifest {record.size:,}"
    return None
