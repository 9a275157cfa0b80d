"""%ckptlink: keep checkpoints in Drive so that a disconnect loses nothing.

Two ways.  Link mode (`link`) makes LOCAL a symlink into Drive: simple, but every
write of the training loop goes through DriveFS.  Mirror mode (`mirror`) keeps LOCAL
on local disk and copies it to Drive from a daemon thread, unit by unit: training
never waits on Drive, at the price of the last few seconds of writes.

    names     what a checkpoint is: units, epoch/step, order, latest, --keep's prune
    mirror    the thread: scan, stability, open-for-writing check, upload; start, stop
    resume    a mirror start: leftovers, conflicts, the copy back after a disconnect
    manifest  the per-unit record in DRIVE_DIR/.colabmagic/ that the resume checks
    link      link mode, and the checks of both paths
    report    the results shown: CheckpointLink, MirrorStatus
"""

from __future__ import annotations

from .link import link_checkpoints
from .mirror import Mirror, mirror_status, stop_all_mirrors, stop_mirror
from .names import Checkpoint, latest_checkpoint, list_checkpoints, parse_epoch_step, prune
from .report import CheckpointLink, MirrorState, MirrorStatus

__all__ = [
    "Checkpoint",
    "CheckpointLink",
    "Mirror",
    "MirrorState",
    "MirrorStatus",
    "latest_checkpoint",
    "link_checkpoints",
    "list_checkpoints",
    "mirror_status",
    "parse_epoch_step",
    "prune",
    "stop_all_mirrors",
    "stop_mirror",
]
