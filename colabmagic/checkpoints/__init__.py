"""%ckptlink: keep checkpoints in Drive so that a disconnect loses nothing.

Two ways.  Link mode (`link`) makes LOCAL a symlink into Drive: simple, but every
write of the training loop goes through DriveFS.  Mirror mode (`mirror`) keeps LOCAL
on local disk and copies to Drive from a daemon thread: training never waits on
Drive, at the price of the last few seconds of writes.  `names` decides what a
checkpoint is, how checkpoints are ordered and which is the latest; `report` holds
the result shown for a link or a mirror start.
"""

from __future__ import annotations

from .link import link_checkpoints
from .mirror import Mirror, MirrorState, MirrorStatus, mirror_status, stop_all_mirrors, stop_mirror
from .names import Checkpoint, latest_checkpoint, list_checkpoints, parse_epoch_step, prune
from .report import CheckpointLink

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
