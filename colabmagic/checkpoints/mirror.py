"""The mirror: LOCAL stays on local disk, a daemon thread copies it to DRIVE_DIR.

A file is copied only once its size and mtime held still across two scans (a
checkpoint being written is never uploaded half-done), as ``name.partial`` then
renamed, so Drive never holds a truncated checkpoint under its real name.  Errors in
the thread are recorded (`mirror_status`) and retried at the next scan; they never
reach the training loop.  Starting a mirror on an empty LOCAL first copies DRIVE_DIR
back: the resume after a disconnect.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import drive, fsio, interrupts, source
from ..errors import ColabMagicError
from ..results import Result, size
from .names import IN_PROGRESS, list_checkpoints, looks_like_checkpoint, prune
from .report import CheckpointLink, ago, files

log = logging.getLogger(__name__)

RESUME_WORKERS = 4  # checkpoints are few and large: a few reads in flight fill the link


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
                errors = f"{m.errors:,}; last {ago(m.last_error_at)}: {m.last_error}"
            rows += [
                (f"{tag}local", str(m.local)),
                (f"{tag}drive dir", drive.shown(m.drive_dir)),
                (f"{tag}state", state),
                (f"{tag}last sync", ago(m.last_sync)),
                (f"{tag}copied", f"{files(m.files_copied)}, {size(m.bytes_copied)}"),
                (f"{tag}not yet in Drive", files(m.pending)),
                (f"{tag}errors", errors),
            ]
        return rows

    def notes(self) -> list[str]:
        if not self.mirrors:
            return ["No mirror is running (start one with %ckptlink LOCAL DRIVE_DIR --mirror)."]
        return []

    def __repr__(self) -> str:
        return f"MirrorStatus(action={self.action!r}, mirrors={len(self.mirrors)})"


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
                if name.endswith(IN_PROGRESS):
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
            if looks_like_checkpoint(part, is_dir=True):
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
            except (OSError, ColabMagicError) as error:
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
        source_path = self.local / rel
        target = self.drive_dir / rel

        def upload() -> bool:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                reader = open(source_path, "rb", buffering=0)  # noqa: SIM115 - closed below
            except FileNotFoundError:
                return False  # deleted by the training code (checkpoint rotation)
            with reader:
                fsio.atomic_copy(
                    iter(lambda: reader.read(fsio.CHUNK), b""),
                    target,
                    size=state[0],
                    times_ns=(state[1], state[1]),
                    before_publish=unchanged,
                )
            return True

        def unchanged(partial: Path) -> None:
            after = os.stat(source_path)
            if (after.st_size, after.st_mtime_ns) != state:
                raise _Changed

        try:
            done = source.retrying(upload, what=f'uploading "{rel}" to Drive')
        except _Changed:
            return False
        except FileNotFoundError:
            if source_path.exists():
                raise  # Drive's side, not a checkpoint rotated away
            return False
        except ColabMagicError as error:
            if "changed while it was being copied" in str(error):
                return False
            raise
        if done:
            self._synced[rel] = state
            self.files_copied += 1
            self.bytes_copied += state[0]
        return done

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
        disconnect); several at a time, each as .partial then renamed."""
        jobs = []
        for dirpath, dirnames, filenames in os.walk(self.drive_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(IN_PROGRESS):
                    continue
                path = Path(dirpath) / name
                jobs.append((path, self.local / path.relative_to(self.drive_dir)))

        def fetch(job: tuple[Path, Path]) -> None:
            path, target = job
            target.parent.mkdir(parents=True, exist_ok=True)
            reader = source.SourceFile(path)
            try:
                st = os.stat(path)
                fsio.atomic_copy(
                    reader.chunks(),
                    target,
                    size=reader.size,
                    times_ns=(st.st_atime_ns, st.st_mtime_ns),
                )
            finally:
                reader.close()

        list(interrupts.run_all(fetch, jobs, workers=RESUME_WORKERS, name="colabmagic-resume"))
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


class _Changed(Exception):
    """The local file changed while it was uploaded: not published, tried again later."""


# --------------------------------------------------------------------------- the running mirrors

_mirrors: dict[Path, Mirror] = {}
_mirrors_lock = threading.Lock()
_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        import atexit

        atexit.register(stop_all_mirrors)
        _atexit_registered = True


def running_mirror(local: Path) -> Mirror | None:
    with _mirrors_lock:
        return _mirrors.get(local)


def mirror_status() -> MirrorStatus:
    """Every running mirror: where, last sync, files copied, files waiting, last error."""
    with _mirrors_lock:
        mirrors = list(_mirrors.values())
    return MirrorStatus(tuple(m.state() for m in mirrors))


@interrupts.deferred()
def stop_mirror(local: str | os.PathLike | None = None) -> MirrorStatus:
    """Stop the mirror of LOCAL (None: every mirror), after a final sync."""
    from .link import local_path

    with _mirrors_lock:
        if local is None:
            stopping = list(_mirrors.values())
        else:
            key = local_path(local)
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


@interrupts.deferred()
def start_mirror(local: Path, drive_dir: Path, every: float, keep: int | None) -> CheckpointLink:
    """Mirror LOCAL to DRIVE_DIR (after copying DRIVE_DIR back if LOCAL is empty)."""
    from .link import make_dir, prune_or_fail

    running = running_mirror(local)
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
        make_dir(drive_dir)
        running = Mirror(local, drive_dir, every, keep)
        action = "mirroring"
        if not _holds_files(local) and list_checkpoints(drive_dir):
            try:
                copied_back = running.copy_back()
            except (OSError, ColabMagicError) as error:
                raise ColabMagicError(
                    f"copying checkpoints back from {drive.shown(drive_dir)} failed: {error}"
                ) from None
            action = "resumed"
        pruned = prune_or_fail(drive_dir, keep)
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
