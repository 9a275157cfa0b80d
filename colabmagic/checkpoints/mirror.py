"""The mirror: LOCAL stays on local disk, a daemon thread copies it to DRIVE_DIR.

What goes up is a unit (`names.group`): a file, a checkpoint folder, a Keras pair, a
shard set.  A unit is uploaded only when it is whole, all its files held still across
two scans, and no process holds any of them open for writing (`writers`: a training
loop that pauses mid-save keeps its file open, which stability alone cannot see).
Each file goes up as ``name.partial`` and is renamed; a new checkpoint folder goes up
as ``NAME.partial/`` and is renamed whole; a pair or a shard set sends its index
last.  Then a manifest (`manifest`) records each file's size, mtime and sha256.

Errors in the thread are recorded (`mirror_status`) and retried at the next scan;
they never reach the training loop.  Starting a mirror clears its own leftovers in
Drive (``*.partial``), refuses to guess when LOCAL and DRIVE_DIR hold different
versions of a checkpoint and Drive's is not older, and, on an empty LOCAL, copies
back every whole unit that matches its manifest: the resume after a disconnect.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path

from .. import drive, fsio, interrupts, source
from ..errors import ColabMagicError
from . import manifest
from .manifest import FileRecord
from .names import (
    Unit,
    checkpoint_of,
    group,
    incomplete,
    list_checkpoints,
    ordered,
    prune,
    walk,
)
from .report import CheckpointLink, MirrorState, MirrorStatus
from .resume import Start, State, alike, clear_leftovers, conflicts, copy_back, holds_files

log = logging.getLogger(__name__)

# A folder is written file after file, and between two files no file is open: a
# folder goes up only once none of its files changed for this long (as well as two
# scans).  Pairs and shard sets need no such wait: their index is written last.
FOLDER_SETTLE = 1.0


def writers(paths: list[Path]) -> set[Path]:
    """Those of PATHS that some process holds open for writing, by a scan of
    ``/proc/*/fd`` (one readlink per descriptor; the flags are read only for the
    descriptors that name one of PATHS).  Empty where /proc is not there."""
    if not paths or not os.path.isdir("/proc/self/fd"):
        return set()
    wanted = {os.path.realpath(p): p for p in paths}
    found: set[Path] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            path = wanted.get(target)
            if path is None or path in found:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = int(re.search(r"flags:\s*([0-7]+)", info.read()).group(1), 8)
            except (OSError, AttributeError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                found.add(path)
    return found


class _Changed(Exception):
    """A local file changed, vanished or was opened for writing while it was uploaded:
    not published, tried again once it holds still."""


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
        self._seen: dict[str, State] = {}  # unit -> its files at the last scan
        self._synced: dict[str, State] = {}  # unit -> what Drive holds of it, whole
        self._files: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns) in Drive
        self._records: dict[str, FileRecord] = {}  # rel -> what went up, for the manifest
        self.files_copied = 0
        self.bytes_copied = 0
        self.pending: tuple[str, ...] = ()
        self.held_open: tuple[str, ...] = ()
        self.kept_back = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_sync: float | None = None
        self.last_copy: float | None = None
        self.failing = False
        self.pruned: list[Path] = []

    # The scan ---------------------------------------------------------------

    def _scan(self) -> tuple[dict[str, Unit], dict[str, State]]:
        current: dict[str, tuple[int, int]] = {}
        for rel in walk(self.local):
            try:
                st = os.stat(self.local / rel)
            except OSError:
                continue  # removed while listing
            current[rel] = (st.st_size, st.st_mtime_ns)
        units = {key: u for key, u in group(current).items() if u.kind != "leftover"}
        states = {key: tuple((rel, *current[rel]) for rel in u.files) for key, u in units.items()}
        return units, states

    def sync_now(self) -> int:
        """Copy what is whole and has held still since the last scan; return how many
        files went.  Never raises: errors are counted and shown by ``mirror_status()``."""
        with self._lock:
            try:
                return self._sync()
            except Exception as error:  # the thread must survive anything
                self._record(error, "scan")
                return 0

    def _sync(self) -> int:
        units, states = self._scan()
        waiting = [key for key in units if self._synced.get(key) != states[key]]
        now = time.time_ns()
        candidates = [
            key
            for key in waiting
            if self._seen.get(key) == states[key]
            and incomplete(units[key]) is None
            and (units[key].kind != "folder" or _quiet_since(states[key], now) >= FOLDER_SETTLE)
        ]
        self._seen = states
        older = self._older(units) if self.keep is not None else set()
        candidates = [key for key in candidates if key not in older]
        # Only checkpoints wait for their writer: a log kept open (TensorBoard's event
        # file) goes up as it grows, as a snapshot.
        guarded = [key for key in candidates if units[key].checkpoint]
        held = writers([self.local / rel for key in guarded for rel in units[key].files])
        ready = [
            key for key in candidates if not any(self.local / r in held for r in units[key].files)
        ]
        self.held_open = tuple(sorted(set(candidates) - set(ready)))
        # Newest first: if Drive goes away half-way, the latest checkpoint is the one safe.
        ready.sort(key=lambda key: max(mtime for _, _, mtime in states[key]), reverse=True)
        copied = 0
        failed = False
        for key in ready:
            try:
                copied += self._upload(units[key], states[key])
            except (OSError, ColabMagicError) as error:
                self._record(error, key)
                failed = True
                break  # Drive is likely gone: try again at the next scan
        if copied and self.keep is not None and not failed:
            try:
                self.pruned += prune(self.drive_dir, self.keep)
            except OSError as error:
                self._record(error, "pruning")
                failed = True
        left = [key for key in waiting if self._synced.get(key) != states[key]]
        self.pending = tuple(key for key in left if key not in older)
        self.kept_back = sum(1 for key in left if key in older)
        self.failing = failed
        if not failed:
            self.last_sync = time.time()
        return copied

    def _older(self, units: dict[str, Unit]) -> set[str]:
        """Units that --keep would prune at once: not worth uploading."""
        found = []
        for unit in units.values():
            if unit.checkpoint and incomplete(unit) is None:
                try:
                    found.append(checkpoint_of(self.local, unit))
                except OSError:
                    continue
        numbered = [c for c in ordered(found) if c.numbered]
        return {_rel(c.path, self.local) for c in numbered[self.keep :]}

    # Uploads ----------------------------------------------------------------

    def _upload(self, unit: Unit, state: State) -> int:
        """UNIT to DRIVE_DIR, whole; return the files sent.  A unit that changes
        meanwhile is not published (it goes again once it holds still)."""
        try:
            if unit.kind == "folder":
                sent = self._upload_folder(unit, state)
            else:
                sent = self._upload_files(unit, state)
        except _Changed:
            return 0
        self._synced[unit.key] = state
        self._publish_manifest(unit.key, state)
        return sent

    def _upload_files(self, unit: Unit, state: State) -> int:
        """A file, or a pair / shard set with its index sent last.  A set already in
        Drive loses its index first, so that it is not whole while it changes."""
        index = [rel for rel, _, _ in state if rel.endswith((".index", ".index.json"))]
        if unit.kind in ("pair", "shards"):
            for rel in index:
                self._drive(lambda rel=rel: fsio.remove_quietly(self.drive_dir / rel), "index")
            self._drive(lambda: manifest.remove(self.drive_dir, unit.key), "manifest")
            for rel in index:
                self._files.pop(rel, None)
        sent = 0
        for rel, length, mtime in sorted(state, key=lambda s: s[0] in index):
            if self._files.get(rel) != (length, mtime):
                self._put(rel, self.drive_dir / rel, (length, mtime), guard=unit.checkpoint)
                sent += 1
        return sent

    def _upload_folder(self, unit: Unit, state: State) -> int:
        """A new folder goes up as NAME.partial/ and is renamed whole.  One already in
        Drive is updated in place under a manifest that says so, and only its changed
        files go (nothing deleted locally is deleted in Drive)."""
        target = self.drive_dir / unit.key
        if not self._drive(target.exists, "checking"):
            staging = fsio.partial_of(target)
            self._drive(lambda: fsio.remove_quietly(staging), "clearing")
            try:
                for rel, length, mtime in state:
                    inner = rel[len(unit.key) + 1 :]
                    self._put(rel, staging / inner, (length, mtime), count=False)
                self._still(state)
                self._drive(lambda: os.rename(staging, target), f'renaming "{unit.key}"')
            except BaseException:
                fsio.remove_quietly(staging)
                raise
            for rel, length, mtime in state:
                self._sent(rel, (length, mtime))
            return len(state)
        self._drive(
            lambda: manifest.write(self.drive_dir, unit.key, {}, state=manifest.UPDATING),
            "manifest",
        )
        for rel in walk(target):  # an old mirror's half upload inside the folder
            if rel.endswith(fsio.PARTIAL):
                self._drive(lambda rel=rel: fsio.remove_quietly(target / rel), "clearing")
        sent = 0
        for rel, length, mtime in state:
            if self._files.get(rel) != (length, mtime):
                self._put(rel, self.drive_dir / rel, (length, mtime))
                sent += 1
        return sent

    def _put(
        self,
        rel: str,
        dest: Path,
        state: tuple[int, int],
        *,
        count: bool = True,
        guard: bool = True,
    ) -> None:
        """LOCAL/REL -> DEST.partial -> DEST, hashed on the way; raises _Changed when
        the local file is not the version STATE any more, or is open for writing."""
        source_path = self.local / rel
        digest: list[str] = []

        def attempt() -> None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            read = [0]

            def chunks():
                with open(source_path, "rb", buffering=0) as reader:
                    while chunk := reader.read(fsio.CHUNK):
                        sha.update(chunk)
                        read[0] += len(chunk)
                        yield chunk

            def check(partial: Path) -> None:
                if read[0] != state[0]:
                    raise _Changed
                self._still(((rel, *state),), guard=guard)

            fsio.atomic_copy(chunks(), dest, times_ns=(state[1], state[1]), before_publish=check)
            digest[:] = [sha.hexdigest()]

        try:
            source.retrying(attempt, what=f'uploading "{rel}" to {drive.shown(self.drive_dir)}')
        except FileNotFoundError:
            if source_path.exists():
                raise  # Drive's side
            raise _Changed from None  # rotated away by the training code
        self._records[rel] = FileRecord(state[0], state[1], digest[0])
        if count:
            self._sent(rel, state)

    def _sent(self, rel: str, state: tuple[int, int]) -> None:
        self._files[rel] = state
        self.files_copied += 1
        self.bytes_copied += state[0]
        self.last_copy = time.time()

    def _still(self, state: State, *, guard: bool = True) -> None:
        """Raise _Changed unless each file of STATE is as it was and nobody writes it."""
        for rel, length, mtime in state:
            try:
                st = os.stat(self.local / rel)
            except FileNotFoundError:
                raise _Changed from None
            if (st.st_size, st.st_mtime_ns) != (length, mtime):
                raise _Changed
        if guard and writers([self.local / rel for rel, _, _ in state]):
            raise _Changed

    def _publish_manifest(self, key: str, state: State) -> None:
        records = {
            rel: self._records.get(rel) or FileRecord(length, mtime, None)
            for rel, length, mtime in state
        }
        self._drive(lambda: manifest.write(self.drive_dir, key, records), f'manifest of "{key}"')

    def _drive(self, action, what: str):
        """ACTION() on Drive, through the one retry policy."""
        return source.retrying(action, what=f"{what} in {drive.shown(self.drive_dir)}")

    def _record(self, error: BaseException, where: str) -> None:
        self.errors += 1
        self.last_error = f"{where}: {error}"
        self.last_error_at = time.time()
        self.failing = True
        log.debug("checkpoint mirror %s: %s", self.local, self.last_error)

    # Start, resume, stop ------------------------------------------------------

    def seed(self, in_drive: dict[str, State], replaced: set[str]) -> None:
        """Take the first scan now.  Units that Drive already holds alike (same files,
        sizes, mtimes within 2 s) count as copied; those in REPLACED, where LOCAL is
        newer, go up at the next scans."""
        units, states = self._scan()
        for key, state in states.items():
            theirs = in_drive.get(key)
            if key not in replaced and theirs is not None and alike(state, theirs):
                self._synced[key] = state
                for rel, length, mtime in state:
                    self._files[rel] = (length, mtime)
        self._seen = states
        self.pending = tuple(key for key in states if self._synced.get(key) != states[key])

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
        """End the thread, then sync until nothing is pending, for at most a folder's
        settle time, so that what was written just before is copied once it holds
        still."""
        self._stopping.set()
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(interrupts.POLL)
            interrupts.check()
        deadline = time.monotonic() + FOLDER_SETTLE + 0.5
        self.sync_now()
        while self.pending and time.monotonic() < deadline:
            interrupts.sleep(min(self.every, 0.25))
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
            pending=len(self.pending),
            errors=self.errors,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            failing=self.failing,
            pending_names=self.pending,
            held_open=self.held_open,
            kept_back=self.kept_back,
            keep=self.keep,
            last_copy=self.last_copy,
            colab=drive.in_colab(),
        )


def _quiet_since(state: State, now_ns: int) -> float:
    """Seconds since the last change to any file of STATE."""
    return (now_ns - max(mtime for *_, mtime in state)) / 1e9


def _rel(path: Path, folder: Path) -> str:
    return os.path.relpath(path, folder).replace(os.sep, "/")


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
    """Every running mirror: where, last sync, files copied, what waits, last error."""
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
    """Mirror LOCAL to DRIVE_DIR: clear our leftovers in Drive, copy DRIVE_DIR back if
    LOCAL is empty, settle conflicts, then start the thread."""
    from .link import make_dir, prune_or_fail

    running = running_mirror(local)
    if running is not None and running.drive_dir != drive_dir:
        raise ColabMagicError(
            f"{local} is already mirrored to {drive.shown(running.drive_dir)}; "
            "%ckptlink --stop first"
        )
    action = "running"
    start = Start()
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
        try:
            cleared = source.retrying(lambda: clear_leftovers(drive_dir), what="clearing")
        except (OSError, ColabMagicError) as error:
            raise ColabMagicError(
                f"clearing leftovers in {drive.shown(drive_dir)} failed: {error}"
            ) from None
        try:
            if not holds_files(local) and list_checkpoints(drive_dir):
                start = copy_back(local, drive_dir)
                action = "resumed"
        except (OSError, ColabMagicError) as error:
            raise ColabMagicError(
                f"copying checkpoints back from {drive.shown(drive_dir)} failed: {error}"
            ) from None
        in_drive, newer = conflicts(local, drive_dir)
        start = Start(
            cleared, start.copied_back, start.skipped, start.unverified, tuple(sorted(newer))
        )
        pruned = prune_or_fail(drive_dir, keep)
        running.seed(in_drive, newer)
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
        copied_back=start.copied_back,
        pruned=tuple(pruned),
        every=running.every,
        mirror=running,
        skipped=start.skipped,
        cleared=start.cleared,
        unverified=start.unverified,
        replaced=start.replaced,
    )
