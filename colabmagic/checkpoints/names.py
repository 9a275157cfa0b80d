"""What a checkpoint is: names (epoch/step), ordering, the latest, pruning.

Each framework names its checkpoints its own way; `parse_epoch_step` reads the
common ones, `list_checkpoints` finds them (a checkpoint folder such as
``checkpoint-500/`` counts once) and orders them, newest first, the order that
`latest_checkpoint` and ``--keep`` both use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import drive
from ..errors import ColabMagicError
from ..results import Result, size
from .report import ago

# Longest first: "x.pth.tar" is a .pth.tar, not a .tar.
CHECKPOINT_EXTENSIONS = (
    ".pth.tar",
    ".ckpt",
    ".pt",
    ".pth",
    ".h5",
    ".hdf5",
    ".keras",
    ".weights",
    ".safetensors",
    ".bin",
    ".pkl",
    ".msgpack",
)
# Folders that are one checkpoint each: Hugging Face `checkpoint-500`, DeepSpeed
# `global_step500`, Accelerate `step_500` / `epoch_3`.
_CHECKPOINT_DIR = re.compile(r"(checkpoint|global_step|step|epoch)[-_]?(\d+)", re.IGNORECASE)
# Names a framework is still writing, or an upload of ours in progress.
IN_PROGRESS = (".partial", ".tmp", ".temp", ".swp", "~")
# Unnumbered names that mean "the most recent" by convention (Lightning `last.ckpt`,
# ultralytics `last.pt`, darknet `yolov3_last.weights` / `_final.weights`).
_NEWEST_WORDS = re.compile(r"(?:^|[-_.])(last|latest|final)(?:$|[-_.])", re.IGNORECASE)

_LIGHTNING_EPOCH = re.compile(r"(?<![A-Za-z])epoch=(\d+)", re.IGNORECASE)
_LIGHTNING_STEP = re.compile(r"(?<![A-Za-z])step=(\d+)", re.IGNORECASE)
_EPOCH_WORD = re.compile(r"(?<![A-Za-z])ep(?:och)?[-_]?(\d+)", re.IGNORECASE)
_STEP_WORD = re.compile(
    r"(?<![A-Za-z])(?:checkpoint|ckpt|global_step|step|iter|iteration)[-_]?(\d+)",
    re.IGNORECASE,
)
_KERAS = re.compile(r"^[^.]+\.(\d+)(?=-|$)")
_TRAILING_NUMBER = re.compile(r"[-_.](\d+)$")


def parse_epoch_step(name: str) -> tuple[int | None, int | None]:
    """(epoch, step) from a checkpoint's file or folder name; None where it says nothing.

    >>> parse_epoch_step("epoch=3-step=1200.ckpt")
    (3, 1200)
    >>> parse_epoch_step("checkpoint-500")
    (None, 500)
    >>> parse_epoch_step("weights.05-0.12.h5")
    (5, None)
    """
    stem = _strip_extension(name)
    epoch = step = None
    if m := _LIGHTNING_EPOCH.search(stem):
        epoch = int(m.group(1))
    if m := _LIGHTNING_STEP.search(stem):
        step = int(m.group(1))
    if epoch is None and (m := _EPOCH_WORD.search(stem)):
        epoch = int(m.group(1))  # ep042-loss0.123, model_epoch_12, epoch_3
    if step is None and (m := _STEP_WORD.search(stem)):
        step = int(m.group(1))  # checkpoint-500, global_step500, iter_1000
    if epoch is None and step is None:
        if m := _KERAS.search(stem):
            epoch = int(m.group(1))  # weights.05-0.12 (Keras ModelCheckpoint)
        elif m := _TRAILING_NUMBER.search(stem):
            # darknet counts iterations (yolov3_1000.weights); elsewhere epochs (model_12.pt)
            if name.lower().endswith(".weights"):
                step = int(m.group(1))
            else:
                epoch = int(m.group(1))
    return epoch, step


def _strip_extension(name: str) -> str:
    lower = name.lower()
    for extension in CHECKPOINT_EXTENSIONS:
        if lower.endswith(extension):
            return name[: -len(extension)]
    return name


def looks_like_checkpoint(name: str, is_dir: bool) -> bool:
    if name.startswith(".") or name.endswith(IN_PROGRESS):
        return False
    if is_dir:
        return _CHECKPOINT_DIR.fullmatch(name) is not None
    return name.lower().endswith(CHECKPOINT_EXTENSIONS)


@dataclass(frozen=True, repr=False)
class Checkpoint(Result):
    """One checkpoint: a file, or a folder such as Hugging Face's ``checkpoint-500/``."""

    path: Path
    epoch: int | None
    step: int | None
    mtime: float
    bytes: int

    title = "checkpoint"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def numbered(self) -> bool:
        return self.epoch is not None or self.step is not None

    def sort_key(self) -> tuple[int, int, int, float]:
        """Newest sorts last: by epoch and step, then mtime.  Unnumbered "last" /
        "final" names count as newest, other unnumbered names (best.pt) as oldest."""
        tier = 1
        if not self.numbered:
            tier = 2 if _NEWEST_WORDS.search(_strip_extension(self.name)) else 0
        return (
            tier,
            -1 if self.epoch is None else self.epoch,
            -1 if self.step is None else self.step,
            self.mtime,
        )

    def describe(self) -> str:
        parts = []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        if self.step is not None:
            parts.append(f"step {self.step}")
        parts += [size(self.bytes), ago(self.mtime)]
        return f"{self.name} ({', '.join(parts)})"

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("path", str(self.path)),
            ("epoch", "-" if self.epoch is None else str(self.epoch)),
            ("step", "-" if self.step is None else str(self.step)),
            ("modified", ago(self.mtime)),
            ("size", size(self.bytes)),
        ]

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, epoch={self.epoch}, step={self.step})"


def _checkpoint(path: Path) -> Checkpoint:
    st = path.stat()
    total, newest = st.st_size, st.st_mtime
    if path.is_dir():
        total = 0
        for dirpath, _, filenames in os.walk(path):
            for filename in filenames:
                try:
                    inner = os.stat(os.path.join(dirpath, filename))
                except OSError:
                    continue
                total += inner.st_size
                newest = max(newest, inner.st_mtime)
    epoch, step = parse_epoch_step(path.name)
    return Checkpoint(path, epoch, step, newest, total)


def list_checkpoints(folder: str | os.PathLike) -> list[Checkpoint]:
    """Every checkpoint under FOLDER (recursively; a checkpoint folder counts once),
    newest first."""
    folder = Path(folder)
    found: list[Checkpoint] = []
    if folder.is_file():
        return [_checkpoint(folder)]
    for dirpath, dirnames, filenames in os.walk(folder):
        keep_walking = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue  # .ipynb_checkpoints, .git, our own .colabmagic
            if looks_like_checkpoint(name, is_dir=True):
                found.append(_checkpoint(Path(dirpath) / name))
            else:
                keep_walking.append(name)
        dirnames[:] = keep_walking
        for name in filenames:
            if looks_like_checkpoint(name, is_dir=False):
                try:
                    found.append(_checkpoint(Path(dirpath) / name))
                except OSError:
                    continue  # removed while listing
    found.sort(key=Checkpoint.sort_key, reverse=True)
    return found


def latest_checkpoint(path: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint to resume from in PATH (local or Drive): highest epoch/step,
    then newest; None when PATH holds no checkpoint."""
    folder = drive.resolve(path) if isinstance(path, str) else Path(path)
    if not folder.exists():
        raise ColabMagicError(f"no such folder: {folder}")
    found = list_checkpoints(folder)
    return found[0] if found else None


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the KEEP newest numbered checkpoints in FOLDER.  Unnumbered ones
    (last.pt, best.pt) are never deleted: they are overwritten in place anyway."""
    import shutil

    numbered = [c for c in list_checkpoints(folder) if c.numbered]
    removed = []
    for old in numbered[keep:]:
        if old.path.is_dir() and not old.path.is_symlink():
            shutil.rmtree(old.path)
        else:
            old.path.unlink()
        removed.append(old.path)
    return removed
