"""%ckptlink: keep checkpoints in Drive so that a disconnect loses nothing.

Two ways.  Link mode makes LOCAL a symlink into Drive: simple, but every write of the
training loop goes through DriveFS.  Mirror mode keeps LOCAL on local disk and copies
to Drive from a daemon thread: training never waits on Drive, at the price of the last
few seconds of writes.  A file is copied only once its size and mtime held still across
two scans (a checkpoint being written is never uploaded half-done), as ``name.partial``
then renamed, so Drive never holds a truncated checkpoint under its real name.

Nothing here deletes a file except ``--keep N``, which prunes numbered checkpoints in
DRIVE_DIR.  Errors in the mirror thread are recorded (``mirror_status()``) and retried
at the next scan; they never reach the training loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import drive, interrupts
from .errors import ColabMagicError
from .results import Result, count, duration, size

log = logging.getLogger(__name__)

CHUNK = 8 << 20
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
_IN_PROGRESS = (".partial", ".tmp", ".temp", ".swp", "~")
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


def _looks_like_checkpoint(name: str, is_dir: bool) -> bool:
    if name.startswith(".") or name.endswith(_IN_PROGRESS):
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
        parts += [size(self.bytes), _ago(self.mtime)]
        return f"{self.name} ({', '.join(parts)})"

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("path", str(self.path)),
            ("epoch", "-" if self.epoch is None else str(self.epoch)),
            ("step", "-" if self.step is None else str(self.step)),
            ("modified", _ago(self.mtime)),
            ("size", size(self.bytes)),
        ]

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, epoch={self.epoch}, step={self.step})"


def _plural(n: int, word: str) -> str:
    if n == 1:
        return word
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def _files(n: int) -> str:
    return f"{n:,} {_plural(n, 'file')}"


def _ago(when: float | None) -> str:
    if when is None:
        return "never"
    return duration(max(0.0, time.time() - when)) + " ago"


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
            if _looks_like_checkpoint(name, is_dir=True):
                found.append(_checkpoint(Path(dirpath) / name))
            else:
                keep_walking.append(name)
        dirnames[:] = keep_walking
        for name in filenames:
            if _looks_like_checkpoint(name, is_dir=False):
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


# --------------------------------------------------------------------------- results


_TRASH_NOTE = (
    "Drive keeps deleted files in its trash, which still counts against your quota; "
    "empty it at drive.google.com/drive/trash."
)


@dataclass(frozen=True, repr=False)
class CheckpointLink(Result):
    """Where LOCAL's checkpoints are kept, and which one to resume from."""

    mode: str  # "link" or "mirror"
    local: Path
    drive_dir: Path
    checkpoints: tuple[Checkpoint, ...]
    latest: Checkpoint | None
    action: str = ""  # linked, relinked, unchanged, mirroring, resumed, running
    moved: int = 0
    copied_back: int = 0
    pruned: tuple[Path, ...] = ()
    every: float | None = None
    warnings: tuple[str, ...] = ()
    mirror: Mirror | None = field(default=None, compare=False)

    title = "%ckptlink"

    def rows(self) -> list[tuple[str, str]]:
        arrow = "→ (symlink)" if self.mode == "link" else f"→ (copied every {self.every:g} s)"
        rows = [
            ("mode", self.mode),
            ("action", self.action),
            ("local", f"{self.local} {arrow}"),
            ("drive dir", drive.shown(self.drive_dir)),
            ("checkpoints", count(len(self.checkpoints))),
            ("latest", self.latest.describe() if self.latest else "none yet"),
        ]
        if len(self.checkpoints) > 1:
            shown = ", ".join(c.name for c in self.checkpoints[1:4])
            more = len(self.checkpoints) - 4
            rows.append(("older", shown + (f", … ({more} more)" if more > 0 else "")))
        if self.moved:
            rows.append(("moved into Drive", f"{self.moved:,} " + _plural(self.moved, "entry")))
        if self.copied_back:
            rows.append(("copied back from Drive", _files(self.copied_back)))
        if self.pruned:
            rows.append(("pruned", ", ".join(p.name for p in self.pruned)))
        return rows

    def notes(self) -> list[str]:
        notes = list(self.warnings)
        if self.mode == "link":
            notes.append("Training writes go straight to Drive through the link.")
        else:
            notes.append(
                f"New and changed files go to Drive every {self.every:g} s and at exit; "
                "%ckptlink --status shows the mirror, %ckptlink --stop ends it."
            )
        if self.latest is not None:
            notes.append(f"Resume from: {self.latest.path}")
        if self.pruned:
            notes.append(f"Deleted {len(self.pruned)} older checkpoints. {_TRASH_NOTE}")
        return notes

    def __repr__(self) -> str:
        latest = self.latest.name if self.latest else None
        return f"CheckpointLink(mode={self.mode!r}, local={str(self.local)!r}, latest={latest!r})"


@dataclass(frozen=True)
class MirrorState:
    """One mirror, as ``mirror_status()`` saw it."""

    local: Path
    drive_dir: Path
    running: bool
    every: float
    last_sync: float | None  # time.time() of the last scan that finished without error
    files_copied: int
    bytes_copied: int
    pending: int  # files not yet in Drive (waiting to hold still, or failing)
    errors: int
    last_error: str | None
    last_error_at: float | None
    failing: bool  # the last scan hit an error


@dataclass(frozen=True, repr=False)
class MirrorStatus(Result):
    """The running mirrors (``%ckptlink --status``), or those just stopped (``--stop``)."""

    mirrors: tuple[MirrorState, ...]
    action: str = "status"  # or "stopped"

    @property
    def title(self) -> str:  # type: ignore[override]
        return "%ckptlink --stop" if self.action == "stopped" else "%ckptlink --status"

    def rows(self) -> list[tuple[str, str]]:
        rows = []
        for i, m in enumerate(self.mirrors, 1):
            tag = f"[{i}] " if len(self.mirrors) > 1 else ""
            state = f"running, every {m.every:g} s" if m.running else "stopped"
            if m.failing:
                state += ", Drive failing: retrying at each scan"
            errors = "none"
            if m.errors:
                errors = f"{m.errors:,}; last {_ago(m.last_error_at)}: {m.last_error}"
            rows += [
                (f"{tag}local", str(m.local)),
                (f"{tag}drive dir", drive.shown(m.drive_dir)),
                (f"{tag}state", state),
                (f"{tag}last sync", _ago(m.last_sync)),
                (f"{tag}copied", f"{_files(m.files_copied)}, {size(m.bytes_copied)}"),
                (f"{tag}not yet in Drive", _files(m.pending)),
                (f"{tag}errors", errors),
            ]
        return rows

    def notes(self) -> list[str]:
        if not self.mirrors:
            return ["No mirror is running (start one with %ckptlink LOCAL DRIVE_DIR --mirror)."]
        return []

    def __repr__(self) -> str:
        return f"MirrorStatus(action={self.action!r}, mirrors={len(self.mirrors)})"


# --------------------------------------------------------------------------- the mirror


class Mirror:
    """Copies LOCAL to DRIVE_DIR from a daemon thread every EVERY seconds.

    ``sync_now()`` runs one scan in the calling thread (tests, or before a risky
    step); ``stop()`` ends the thread after a final sync.
    """

    def __init__(self, local: Path, drive_dir: Path, every: float, keep: int | None) -> None:
        self.local = local
        self.drive_dir = drive_dir
        self.every = every
        self.keep = keep
        self._lock = threading.Lock()  # one scan at a time: thread, sync_now, stop
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns), last scan
        self._synced: dict[str, tuple[int, int]] = {}  # rel -> what Drive holds of it
        self.files_copied = 0
        self.bytes_copied = 0
        self.pending = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_sync: float | None = None
        self.failing = False
        self.pruned: list[Path] = []

    # The scan ---------------------------------------------------------------

    def _scan(self) -> dict[str, tuple[int, int]]:
        found = {}
        for dirpath, dirnames, filenames in os.walk(self.local):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(_IN_PROGRESS):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                rel = os.path.relpath(path, self.local).replace(os.sep, "/")
                found[rel] = (st.st_size, st.st_mtime_ns)
        return found

    @staticmethod
    def _unit(rel: str) -> str:
        """The checkpoint a file belongs to: its top checkpoint folder, or itself.
        A folder such as checkpoint-500/ goes up only when all its files held still."""
        parts = rel.split("/")
        for i, part in enumerate(parts[:-1]):
            if _looks_like_checkpoint(part, is_dir=True):
                return "/".join(parts[: i + 1])
        return rel

    def sync_now(self) -> int:
        """Copy what has held still since the last scan; return how many files went.
        Never raises: errors are counted and shown by ``mirror_status()``."""
        with self._lock:
            try:
                return self._sync()
            except Exception as error:  # the thread must survive anything
                self._record(error, "scan")
                return 0

    def _sync(self) -> int:
        current = self._scan()
        moving = {self._unit(rel) for rel, st in current.items() if self._seen.get(rel) != st}
        ready = [
            rel
            for rel, st in current.items()
            if self._seen.get(rel) == st
            and self._synced.get(rel) != st
            and self._unit(rel) not in moving
        ]
        self._seen = current
        older: set[str] = set()
        if self.keep is not None:
            # Checkpoints that --keep would prune at once are not worth uploading.
            older = {
                os.path.relpath(c.path, self.local).replace(os.sep, "/")
                for c in [c for c in list_checkpoints(self.local) if c.numbered][self.keep :]
            }
            ready = [rel for rel in ready if self._unit(rel) not in older]
        # Newest first: if Drive goes away half-way, the latest checkpoint is the one safe.
        ready.sort(key=lambda rel: current[rel][1], reverse=True)
        copied = 0
        failed = False
        for rel in ready:
            try:
                if self._upload(rel, current[rel]):
                    copied += 1
            except OSError as error:
                self._record(error, rel)
                failed = True
                break  # Drive is likely gone: try again at the next scan
        if copied and self.keep is not None and not failed:
            try:
                self.pruned += prune(self.drive_dir, self.keep)
            except OSError as error:
                self._record(error, "pruning")
                failed = True
        self.pending = sum(
            1
            for rel, st in current.items()
            if self._synced.get(rel) != st and self._unit(rel) not in older
        )
        self.failing = failed
        if not failed:
            self.last_sync = time.time()
        return copied

    def _upload(self, rel: str, state: tuple[int, int]) -> bool:
        """LOCAL/rel -> DRIVE_DIR/rel.partial -> DRIVE_DIR/rel.  False when the file
        changed or vanished meanwhile (it is tried again once it holds still)."""
        source = self.local / rel
        target = self.drive_dir / rel
        partial = target.with_name(target.name + ".partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _copy_file(source, partial)
            after = os.stat(source)
        except FileNotFoundError as error:
            if error.filename is not None and Path(error.filename) == source:
                _remove_quietly(partial)
                return False  # deleted by the training code (checkpoint rotation)
            raise
        except BaseException:  # Drive gone, or Ctrl-C: no half upload stays behind
            _remove_quietly(partial)
            raise
        if (after.st_size, after.st_mtime_ns) != state:
            _remove_quietly(partial)
            return False
        # DriveFS may refuse to set the mtime: only the listed mtime suffers.
        with contextlib.suppress(OSError):
            os.utime(partial, ns=(after.st_atime_ns, after.st_mtime_ns))
        os.replace(partial, target)
        self._synced[rel] = state
        self.files_copied += 1
        self.bytes_copied += state[0]
        return True

    def _record(self, error: BaseException, where: str) -> None:
        self.errors += 1
        self.last_error = f"{where}: {error}"
        self.last_error_at = time.time()
        self.failing = True
        log.debug("checkpoint mirror %s: %s", self.local, self.last_error)

    # Start, resume, stop ------------------------------------------------------

    def seed(self) -> None:
        """Take the first scan now; files Drive already holds (same size, mtime within
        2 s: DriveFS keeps whole seconds) count as copied."""
        current = self._scan()
        for rel, (length, mtime_ns) in current.items():
            try:
                st = os.stat(self.drive_dir / rel)
            except OSError:
                continue
            if st.st_size == length and abs(st.st_mtime_ns - mtime_ns) < 2 * 10**9:
                self._synced[rel] = (length, mtime_ns)
        self._seen = current
        self.pending = sum(1 for rel, st in current.items() if self._synced.get(rel) != st)

    def copy_back(self) -> int:
        """Copy every file of DRIVE_DIR into the empty LOCAL (the resume after a
        disconnect); a few at a time, each as .partial then renamed."""
        from concurrent.futures import ThreadPoolExecutor

        jobs = []
        for dirpath, dirnames, filenames in os.walk(self.drive_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(_IN_PROGRESS):
                    continue
                source = Path(dirpath) / name
                jobs.append((source, self.local / source.relative_to(self.drive_dir)))

        def fetch(job: tuple[Path, Path]) -> None:
            source, target = job
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            try:
                _copy_file(source, partial)
                st = os.stat(source)
                os.utime(partial, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.replace(partial, target)
            except BaseException:
                _remove_quietly(partial)
                raise

        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="colabmagic-resume") as pool:
            list(interrupts.results([pool.submit(fetch, job) for job in jobs]))
        return len(jobs)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"colabmagic-mirror {self.local}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.every):
            self.sync_now()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """End the thread, then sync twice, a short settle apart, so that files
        written just before are copied once they hold still."""
        self._stopping.set()
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(interrupts.POLL)
            interrupts.check()
        self.sync_now()
        if self.pending:
            interrupts.sleep(min(self.every, 0.5))
            self.sync_now()

    def state(self) -> MirrorState:
        return MirrorState(
            local=self.local,
            drive_dir=self.drive_dir,
            running=self.running,
            every=self.every,
            last_sync=self.last_sync,
            files_copied=self.files_copied,
            bytes_copied=self.bytes_copied,
            pending=self.pending,
            errors=self.errors,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            failing=self.failing,
        )


def _copy_file(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


_mirrors: dict[Path, Mirror] = {}
_mirrors_lock = threading.Lock()
_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        import atexit

        atexit.register(stop_all_mirrors)
        _atexit_registered = True


def mirror_status() -> MirrorStatus:
    """Every running mirror: where, last sync, files copied, files waiting, last error."""
    with _mirrors_lock:
        mirrors = list(_mirrors.values())
    return MirrorStatus(tuple(m.state() for m in mirrors))


@interrupts.deferred()
def stop_mirror(local: str | os.PathLike | None = None) -> MirrorStatus:
    """Stop the mirror of LOCAL (None: every mirror), after a final sync."""
    with _mirrors_lock:
        if local is None:
            stopping = list(_mirrors.values())
        else:
            key = _local_path(local)
            if key not in _mirrors:
                running = ", ".join(str(p) for p in _mirrors) or "none"
                raise ColabMagicError(f"no mirror is running for {key} (running: {running})")
            stopping = [_mirrors[key]]
    for mirror in stopping:
        mirror.stop()
        with _mirrors_lock:
            _mirrors.pop(mirror.local, None)
    return MirrorStatus(tuple(m.state() for m in stopping), action="stopped")


def stop_all_mirrors() -> None:
    """Stop every mirror after a final sync (at %unload_ext and at interpreter exit)."""
    try:
        stop_mirror(None)
    except Exception as error:  # at exit there is nobody left to tell
        log.debug("stopping checkpoint mirrors: %s", error)


# --------------------------------------------------------------------------- link_checkpoints


def _local_path(text: str | os.PathLike) -> Path:
    if isinstance(text, str):
        if drive.split_drive_prefix(text.strip()) is not None:
            raise ColabMagicError(
                "LOCAL is the folder on local disk that training writes to, "
                f'not a Drive path: "{text}"'
            )
        text = os.path.expanduser(text.strip())
    return Path(os.path.abspath(text))


def _drive_path(text: str | os.PathLike) -> Path:
    path = drive.to_path(text) if isinstance(text, str) else Path(text)
    return Path(os.path.abspath(path))


def link_checkpoints(
    local: str | os.PathLike,
    drive_dir: str | os.PathLike,
    *,
    mirror: bool = False,
    every: float = 30,
    keep: int | None = None,
    force: bool = False,
) -> CheckpointLink:
    """Keep LOCAL's checkpoints in DRIVE_DIR: LOCAL becomes a symlink into Drive, or
    with ``mirror=True`` a background thread copies it there every EVERY seconds.

    The result lists the checkpoints newest first, with ``latest`` to resume from.
    """
    if local is None or drive_dir is None:
        raise ColabMagicError("give LOCAL and DRIVE_DIR, or --stop / --status")
    local_path = _local_path(local)
    drive_path = _drive_path(drive_dir)
    if keep is not None and keep < 1:
        raise ColabMagicError("--keep must be 1 or more")
    if not every > 0:
        raise ColabMagicError("--every must be more than 0 seconds")
    linked_there = local_path.is_symlink() and Path(os.path.realpath(local_path)) == Path(
        os.path.realpath(drive_path)
    )
    if not linked_there:
        here = Path(os.path.realpath(local_path.parent)) / local_path.name
        there = Path(os.path.realpath(drive_path))
        if here == there or here in there.parents or there in here.parents:
            raise ColabMagicError(f"LOCAL ({local_path}) and DRIVE_DIR ({drive_path}) overlap")
    if mirror:
        return _start_mirror(local_path, drive_path, every, keep)
    with _mirrors_lock:
        if local_path in _mirrors:
            raise ColabMagicError(f"{local_path} is being mirrored; %ckptlink --stop first")
    return _link(local_path, drive_path, keep, force)


@interrupts.deferred()  # after drive.to_path: mounting Drive must stay interruptible
def _link(local: Path, drive_dir: Path, keep: int | None, force: bool) -> CheckpointLink:
    warnings = []
    moved = 0
    if local.is_symlink():
        target = os.readlink(local)
        if Path(os.path.realpath(local)) == Path(os.path.realpath(drive_dir)):
            _make_dir(drive_dir)
            action = "unchanged"
        elif not force:
            raise ColabMagicError(
                f'{local} is a link to "{target}", not to {drive.shown(drive_dir)}; '
                "--force relinks it (nothing is deleted)"
            )
        else:
            _make_dir(drive_dir)
            _replace_link(local, drive_dir)
            action = "relinked"
            warnings.append(f'The files in "{target}", the old target, were left where they are.')
    elif local.exists():
        if not local.is_dir():
            raise ColabMagicError(f"{local} is a file; LOCAL must be a folder")
        _make_dir(drive_dir)
        moved = _move_into(local, drive_dir)
        local.rmdir()
        os.symlink(drive_dir, local, target_is_directory=True)
        action = "linked"
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        _make_dir(drive_dir)
        os.symlink(drive_dir, local, target_is_directory=True)
        action = "linked"
    pruned = _prune_or_fail(drive_dir, keep)
    found = tuple(list_checkpoints(local))
    return CheckpointLink(
        mode="link",
        local=local,
        drive_dir=drive_dir,
        checkpoints=found,
        latest=found[0] if found else None,
        action=action,
        moved=moved,
        pruned=tuple(pruned),
        warnings=tuple(warnings),
    )


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColabMagicError(f"cannot create {drive.shown(path)}: {error}") from None


def _replace_link(local: Path, target: Path) -> None:
    """Point the symlink LOCAL at TARGET in one step (a new link renamed over it)."""
    temporary = local.with_name(f".{local.name}.colabmagic-link")
    _remove_quietly(temporary)
    os.symlink(target, temporary, target_is_directory=True)
    os.replace(temporary, local)


def _move_into(local: Path, drive_dir: Path) -> int:
    """Move LOCAL's entries into DRIVE_DIR; on any name clash, move nothing."""
    names = sorted(os.listdir(local))
    clashes = [name for name in names if os.path.lexists(drive_dir / name)]
    if clashes:
        more = f" (and {len(clashes) - 1} more clashes)" if len(clashes) > 1 else ""
        raise ColabMagicError(
            f'"{local / clashes[0]}" and "{drive_dir / clashes[0]}" both exist{more}; '
            "nothing was moved: rename or remove one of them, then run again"
        )
    for done, name in enumerate(names):
        try:
            _move(local / name, drive_dir / name)
        except OSError as error:
            raise ColabMagicError(
                f"moving {local / name} into Drive failed: {error}; {done} of {len(names)} "
                f"entries were moved, the rest are still in {local}: run again to go on"
            ) from None
    return len(names)


def _move(source: Path, target: Path) -> None:
    """Rename when on the same filesystem; else copy to a .partial name, rename, and
    only then remove the source, so that a failure loses nothing."""
    import shutil

    try:
        os.rename(source, target)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    partial = target.with_name(target.name + ".partial")
    try:
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, partial, symlinks=True)
        else:
            shutil.copy2(source, partial, follow_symlinks=False)
        os.replace(partial, target)
    except BaseException:
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            _remove_quietly(partial)
        raise
    if source.is_dir() and not source.is_symlink():
        shutil.rmtree(source)
    else:
        source.unlink()


def _prune_or_fail(drive_dir: Path, keep: int | None) -> list[Path]:
    if keep is None:
        return []
    try:
        return prune(drive_dir, keep)
    except OSError as error:
        raise ColabMagicError(f"pruning old checkpoints in Drive failed: {error}") from None


@interrupts.deferred()
def _start_mirror(local: Path, drive_dir: Path, every: float, keep: int | None) -> CheckpointLink:
    with _mirrors_lock:
        running = _mirrors.get(local)
    if running is not None and running.drive_dir != drive_dir:
        raise ColabMagicError(
            f"{local} is already mirrored to {drive.shown(running.drive_dir)}; "
            "%ckptlink --stop first"
        )
    action = "running"
    copied_back = 0
    pruned: list[Path] = []
    if running is None:
        if local.is_symlink():
            raise ColabMagicError(
                f'{local} is a link (to "{os.readlink(local)}"); --mirror needs a folder on '
                "local disk: remove the link first"
            )
        if local.exists() and not local.is_dir():
            raise ColabMagicError(f"{local} is a file; LOCAL must be a folder")
        local.mkdir(parents=True, exist_ok=True)
        _make_dir(drive_dir)
        running = Mirror(local, drive_dir, every, keep)
        action = "mirroring"
        if not _holds_files(local) and list_checkpoints(drive_dir):
            try:
                copied_back = running.copy_back()
            except OSError as error:
                raise ColabMagicError(
                    f"copying checkpoints back from {drive.shown(drive_dir)} failed: {error}"
                ) from None
            action = "resumed"
        pruned = _prune_or_fail(drive_dir, keep)
        running.seed()
        with _mirrors_lock:
            _mirrors[local] = running
        running.start()
        _register_atexit()
    found = tuple(list_checkpoints(local))
    return CheckpointLink(
        mode="mirror",
        local=local,
        drive_dir=drive_dir,
        checkpoints=found,
        latest=found[0] if found else None,
        action=action,
        copied_back=copied_back,
        pruned=tuple(pruned),
        every=running.every,
        mirror=running,
    )


def _holds_files(folder: Path) -> bool:
    return any(filenames for _, _, filenames in os.walk(folder))
