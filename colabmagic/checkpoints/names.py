"""What a checkpoint is: names (epoch/step), units, ordering, the latest, pruning.

A checkpoint is a *unit*: one file (``epoch=3-step=1200.ckpt``), one folder
(Hugging Face ``checkpoint-500/``), a Keras/TensorFlow pair (``ckpt-12.index`` with
its ``ckpt-12.data-00000-of-00001``) or a shard set (``model-00001-of-00002.safetensors``
... with ``model.safetensors.index.json``).  `group` maps relative file names to
units; `incomplete` says why a unit is not whole; `ordered` puts units newest first,
the one order that `latest_checkpoint`, the result's list and ``--keep`` all use.

Only numbers in a known pattern are progress: ``epoch=3``, ``step=1200``, ``ep042``,
``checkpoint-500``, ``global_step500``, ``iter_1000``, Keras ``weights.05-0.12``,
darknet ``yolov3_1000.weights``.  ``resnet-50.pt`` and ``vit-b-16.pth`` carry a
model's name, not progress; ``model_20240101.pt`` carries a date, which orders
snapshots of one family but is no epoch.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .. import drive, fsio
from ..errors import ColabMagicError
from ..results import Result, size
from . import manifest
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
IN_PROGRESS = (fsio.PARTIAL, ".tmp", ".temp", ".swp", "~")
# Hugging Face writes a checkpoint folder as tmp-checkpoint-N, then renames it.
_IN_PROGRESS_DIR = re.compile(r"tmp-checkpoint-\d+")
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
_DARKNET = re.compile(r"_(\d+)$")  # yolov3_1000.weights: iterations
# 8-digit dates (20240101), 14-digit date-times, 10-digit Unix times: time, not step.
_TIMESTAMP = re.compile(r"(?<!\d)(\d{14}|\d{10}|\d{8})(?!\d)")
_DATE_TIME = re.compile(r"(?<!\d)(\d{8})[-_T](\d{4,6})(?!\d)")

# Units made of several files.
_TF_INDEX = re.compile(r"(.+)\.index")
_TF_DATA = re.compile(r"(.+)\.data-(\d{5})-of-(\d{5})")
_SHARD = re.compile(r"(.+)-(\d{5})-of-(\d{5})\.(safetensors|bin)")
_SHARD_INDEX = re.compile(r"(.+)\.(safetensors|bin)\.index\.json")


def _timestamp(digits: str) -> float | None:
    """DIGITS as a point in time (a date, a date-time, a Unix time), or None."""
    import datetime

    try:
        if len(digits) == 10:
            value = int(digits)
            return float(value) if 946_684_800 <= value <= 4_102_444_800 else None  # 2000-2100
        stamp = datetime.datetime.strptime(
            digits, "%Y%m%d%H%M%S" if len(digits) == 14 else "%Y%m%d"
        )
    except ValueError:
        return None
    if not 1990 <= stamp.year <= 2100:
        return None
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def parse_name(name: str) -> tuple[int | None, int | None, float | None]:
    """(epoch, step, when) from a checkpoint's file or folder name; None where it says
    nothing.  WHEN is a date or timestamp in the name (seconds since 1970)."""
    stem = _strip_extension(name)
    when = None
    if m := _DATE_TIME.search(stem):
        when = _timestamp(m.group(1) + m.group(2).ljust(6, "0"))
        if when is not None:
            stem = stem[: m.start()] + "#" + stem[m.end() :]
    if when is None:
        for m in _TIMESTAMP.finditer(stem):
            if (when := _timestamp(m.group(1))) is not None:
                stem = stem[: m.start()] + "#" + stem[m.end() :]
                break
    epoch = step = None
    if m := _LIGHTNING_EPOCH.search(stem):
        epoch = int(m.group(1))
    if m := _LIGHTNING_STEP.search(stem):
        step = int(m.group(1))
    if epoch is None and (m := _EPOCH_WORD.search(stem)):
        epoch = int(m.group(1))  # ep042-loss0.123, model_epoch_12, epoch_3
    if step is None and (m := _STEP_WORD.search(stem)):
        step = int(m.group(1))  # checkpoint-500, global_step500, iter_1000, ckpt-12
    if epoch is None and step is None:
        if m := _KERAS.search(stem):
            epoch = int(m.group(1))  # weights.05-0.12 (Keras ModelCheckpoint)
        elif name.lower().endswith(".weights") and (m := _DARKNET.search(stem)):
            step = int(m.group(1))  # darknet counts iterations: yolov3_1000.weights
    return epoch, step, when


def parse_epoch_step(name: str) -> tuple[int | None, int | None]:
    """(epoch, step) from a checkpoint's file or folder name; None where it says nothing.

    >>> parse_epoch_step("epoch=3-step=1200.ckpt")
    (3, 1200)
    >>> parse_epoch_step("checkpoint-500")
    (None, 500)
    >>> parse_epoch_step("weights.05-0.12.h5")
    (5, None)
    >>> parse_epoch_step("resnet-50.pt")
    (None, None)
    """
    epoch, step, _ = parse_name(name)
    return epoch, step


def _strip_extension(name: str) -> str:
    lower = name.lower()
    for extension in CHECKPOINT_EXTENSIONS:
        if lower.endswith(extension):
            return name[: -len(extension)]
    return name


def in_progress(name: str) -> bool:
    """NAME is being written (by a framework, or an upload of ours)."""
    return name.endswith(IN_PROGRESS) or _IN_PROGRESS_DIR.fullmatch(name) is not None


def looks_like_checkpoint(name: str, is_dir: bool) -> bool:
    if name.startswith(".") or in_progress(name):
        return False
    if is_dir:
        return _CHECKPOINT_DIR.fullmatch(name) is not None
    return name.lower().endswith(CHECKPOINT_EXTENSIONS)


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """What goes to Drive, and comes back, whole or not at all."""

    key: str  # relative name: the file, the folder, the pair's prefix, the shard index
    kind: str  # file, folder, pair, shards, other (mirrored, not a checkpoint), leftover
    files: tuple[str, ...]  # relative names of its files

    @property
    def checkpoint(self) -> bool:
        return self.kind in ("file", "folder", "pair", "shards")


def _join(parent: tuple[str, ...], name: str) -> str:
    return "/".join((*parent, name))


def group(rels: Iterable[str]) -> dict[str, Unit]:
    """The units that the relative file names RELS (``a/b.pt``, ``/``-separated) make."""
    members: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}

    def add(key: str, kind: str, rel: str) -> None:
        members.setdefault(key, []).append(rel)
        kinds.setdefault(key, kind)

    for rel in rels:
        parts = tuple(rel.split("/"))
        for i, part in enumerate(parts[:-1]):
            if in_progress(part):
                add("/".join(parts[: i + 1]), "leftover", rel)
                break
            if _CHECKPOINT_DIR.fullmatch(part):
                add("/".join(parts[: i + 1]), "folder", rel)
                break
        else:
            parent, name = parts[:-1], parts[-1]
            if in_progress(name):
                add(rel, "leftover", rel)
            elif m := _TF_INDEX.fullmatch(name) or _TF_DATA.fullmatch(name):
                add(_join(parent, m.group(1)), "pair", rel)
            elif m := _SHARD.fullmatch(name) or _SHARD_INDEX.fullmatch(name):
                add(_join(parent, f"{m.group(1)}.{m.group(m.re.groups)}.index.json"), "shards", rel)
            elif looks_like_checkpoint(name, is_dir=False):
                add(rel, "file", rel)
            else:
                add(rel, "other", rel)
    return {key: Unit(key, kinds[key], tuple(sorted(files))) for key, files in members.items()}


def incomplete(unit: Unit) -> str | None:
    """Why UNIT, as its files show, is not whole (None: it is)."""
    if unit.kind == "leftover":
        return "an upload or a save cut short"
    names = [rel.rsplit("/", 1)[-1] for rel in unit.files]
    if unit.kind == "folder":
        for rel in unit.files:
            inner = rel[len(unit.key) + 1 :].split("/")
            if any(in_progress(part) for part in inner):
                return f"holds {inner[-1]}: its upload or save was cut short"
    elif unit.kind == "pair":
        prefix = unit.key.rsplit("/", 1)[-1]
        if f"{prefix}.index" not in names:
            return f"{prefix}.index is missing"
        return _missing_shards(names, _TF_DATA, first=0)
    elif unit.kind == "shards":
        index = unit.key.rsplit("/", 1)[-1]
        if index not in names:
            return f"{index} is missing"
        return _missing_shards(names, _SHARD, first=1)
    return None


def _missing_shards(names: list[str], pattern: re.Pattern[str], *, first: int) -> str | None:
    """TensorFlow numbers its data files from 0, Hugging Face its shards from 1."""
    shards = [m for name in names if (m := pattern.fullmatch(name))]
    if not shards:
        return "holds no data files"
    total = int(shards[0].group(3))
    have = {int(m.group(2)) for m in shards}
    if missing := sorted(set(range(first, first + total)) - have):
        return f"{len(missing)} of its {total} shards are missing"
    return None


def walk(folder: Path) -> list[str]:
    """Every file under FOLDER as a relative ``/`` name, hidden folders left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, folder).replace(os.sep, "/")
        for name in filenames:
            found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return found


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True, repr=False)
class Checkpoint(Result):
    """One checkpoint: a file, a folder such as Hugging Face's ``checkpoint-500/``, a
    Keras pair (``path`` is the prefix that ``tf.train.Checkpoint.restore`` takes) or
    a shard set (``path`` is its index)."""

    path: Path
    epoch: int | None
    step: int | None
    mtime: float
    bytes: int
    files: tuple[Path, ...] = ()
    when: float | None = None  # a date or timestamp in the name
    skipped: tuple[str, ...] = ()  # units left out as incomplete, and why

    title = "checkpoint"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def numbered(self) -> bool:
        """Its name tells its progress (epoch, step or date): ``--keep`` counts it."""
        return self.epoch is not None or self.step is not None or self.when is not None

    @property
    def newest_by_name(self) -> bool:
        """``last.pt``, ``latest``, ``yolov3_final.weights``."""
        return not self.numbered and _NEWEST_WORDS.search(_strip_extension(self.name)) is not None

    def describe(self) -> str:
        parts = []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        if self.step is not None:
            parts.append(f"step {self.step}")
        if len(self.files) > 1:
            parts.append(f"{len(self.files)} files")
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

    def notes(self) -> list[str]:
        return [f"Skipped {reason}" for reason in self.skipped]

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, epoch={self.epoch}, step={self.step})"


def checkpoint_of(folder: Path, unit: Unit) -> Checkpoint:
    """UNIT of FOLDER as a Checkpoint: its size is the sum, its mtime the newest."""
    total, newest = 0, 0.0
    paths = []
    for rel in unit.files:
        path = folder / rel
        st = path.stat()
        total += st.st_size
        newest = max(newest, st.st_mtime)
        paths.append(path)
    path = folder / unit.key  # a folder's own mtime is left out: a copy resets it
    epoch, step, when = parse_name(path.name)
    return Checkpoint(path, epoch, step, newest, total, tuple(paths), when)


def ordered(found: Iterable[Checkpoint]) -> list[Checkpoint]:
    """FOUND newest first.

    Within one family (same folder, same name but for its numbers) the numbers
    decide, whatever the mtimes say (copies reset them).  Between families, and
    between a numbered checkpoint and ``last.pt``, the mtime decides: a family's
    checkpoint counts as no newer than the mtime of any higher-numbered one of the
    family, so a stale ``last.ckpt`` loses to newer numbered checkpoints and a fresh
    one wins.  Other unnumbered names (``best.pt``, ``model.pt``) come after all of
    those, newest mtime first.
    """
    found = list(found)
    families: dict[tuple[str, str], list[Checkpoint]] = {}
    for c in found:
        if c.numbered:
            family = (str(c.path.parent), re.sub(r"\d+", "#", c.name))
            families.setdefault(family, []).append(c)
    effective: dict[Path, float] = {}
    for members in families.values():
        members.sort(key=_rank)
        floor = math.inf
        for c in reversed(members):
            floor = min(floor, c.mtime)
            effective[c.path] = floor

    def key(c: Checkpoint) -> tuple:
        if c.numbered:
            return (1, effective[c.path], 0, _rank(c), str(c.path))
        if c.newest_by_name:
            return (1, c.mtime, 1, (-1, -1, -1.0), str(c.path))
        return (0, c.mtime, 0, (-1, -1, -1.0), str(c.path))

    return sorted(found, key=key, reverse=True)


def _rank(c: Checkpoint) -> tuple[int, int, float]:
    return (
        -1 if c.epoch is None else c.epoch,
        -1 if c.step is None else c.step,
        -1.0 if c.when is None else c.when,
    )


def scan(folder: str | os.PathLike) -> tuple[list[Checkpoint], list[tuple[str, str]]]:
    """The whole checkpoints under FOLDER, newest first, and the units left out as
    incomplete with the reason for each."""
    folder = Path(folder)
    if folder.is_file():
        (unit,) = group([folder.name]).values()
        return [checkpoint_of(folder.parent, unit)], []
    found, skipped = [], []
    for unit in group(walk(folder)).values():
        if unit.kind == "leftover":
            base = unit.key.rsplit("/", 1)[-1]
            for suffix in IN_PROGRESS:
                base = base.removesuffix(suffix)
            is_dir = any(rel.startswith(unit.key + "/") for rel in unit.files)
            if looks_like_checkpoint(base, is_dir=is_dir):  # not a framework's temp file
                skipped.append((unit.key, "an upload or a save cut short"))
            continue
        if not unit.checkpoint:
            continue
        if (reason := incomplete(unit)) is not None:
            skipped.append((unit.key, reason))
            continue
        try:
            found.append(checkpoint_of(folder, unit))
        except OSError:
            continue  # removed while listing
    return ordered(found), skipped


def list_checkpoints(folder: str | os.PathLike) -> list[Checkpoint]:
    """Every whole checkpoint under FOLDER (recursively; a checkpoint folder, pair or
    shard set counts once), newest first."""
    return scan(folder)[0]


def latest_checkpoint(path: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint to resume from in PATH (local or Drive): the newest whole one
    (see `ordered`), None when PATH holds none.

    Units that are not whole are skipped, and said so in the result's ``skipped``:
    a folder that holds ``.partial`` files, a pair without its index, a shard set
    missing a shard, and, where the mirror wrote a manifest, a unit that does not
    match it.
    """
    folder = drive.resolve(path) if isinstance(path, str) else Path(path)
    if not folder.exists():
        raise ColabMagicError(f"no such folder: {folder}")
    found, skipped = scan(folder)
    reasons = [f"{key}: {reason}" for key, reason in skipped]
    managed = folder.is_dir() and manifest.folder(folder).is_dir()
    for c in found:
        key = os.path.relpath(c.path, folder).replace(os.sep, "/")
        if managed and (reason := manifest.mismatch(folder, manifest.read(folder, key))):
            reasons.append(f"{key}: {reason}")
            continue
        return replace(c, skipped=tuple(reasons))
    if reasons:
        warnings.warn(
            f"no whole checkpoint in {folder}; skipped " + "; ".join(reasons), stacklevel=2
        )
    return None


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the KEEP newest numbered checkpoints in FOLDER, in the order
    `latest_checkpoint` uses.  Only whole units count and go (a folder, a pair, a
    shard set with all its files); unnumbered ones (last.pt, best.pt) and units not
    whole are never deleted."""
    import shutil

    removed = []
    for old in [c for c in list_checkpoints(folder) if c.numbered][keep:]:
        if old.path.is_dir() and not old.path.is_symlink():
            shutil.rmtree(old.path)
        else:
            for path in old.files:
                path.unlink()
        key = os.path.relpath(old.path, folder).replace(os.sep, "/")
        manifest.remove(folder, key)
        removed.append(old.path)
    return removed
