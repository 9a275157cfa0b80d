"""%drive: where Drive is and how it is doing; ``--fake`` puts a simulated Drive there.

`drive_status()` never mounts anything: it reports the Drive root in force (DESIGN §2),
what kind of mount serves it, the space left on both sides, how crowded the top of
MyDrive is, and on Colab what DriveFS has logged.  `fake()`, `unmount()` and
`remount()` change the Drive root and return the new status.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import drive, fsio
from .errors import ColabMagicError
from .results import Result, count, size

# Where DriveFS logs on Colab (colabtools' drive.py: $HOME/.config/Google/DriveFS/Logs;
# Colab's HOME is /root). It greps this file for "QueryManager timed out" itself, and
# users find "Failed to download content (QUOTA_EXCEEDED)" there (colabtools #1428).
DRIVEFS_LOG = "~/.config/Google/DriveFS/Logs/drive_fs.txt"
TIMEOUT_MARKERS = ("timed out", "DEADLINE_EXCEEDED")
QUOTA_MARKER = "QUOTA_EXCEEDED"
# Colab's FAQ ("drive-timeout"): a folder with thousands of direct children times out.
ROOT_ITEMS_LIMIT = 1000

_LOG_TAIL_BYTES = 8 << 20  # DriveFS logs grow large; recent trouble is at the end
_COLAB_FSTYPE = "fuse.drive"
_FAKE_FSTYPE = "fuse.colabmagic-fakedrive"

_KIND_LABELS = {
    "colab": "Colab Drive (DriveFS)",
    "simulated": "simulated Drive",
    "folder": "plain folder (no Drive latency)",
    "none": "not mounted",
}


@dataclass(frozen=True, repr=False)
class DriveStatus(Result):
    """What `%drive` shows; sizes in bytes, None where the system does not say."""

    kind: str  # "colab", "simulated", "folder" or "none"
    root: Path | None
    local_free: int | None
    drive_free: int | None
    root_items: int | None
    warnings: tuple[str, ...] = ()
    profile: str | None = None  # the simulated Drive's profile
    source: Path | None = None  # the folder a simulated Drive shows
    detail: str = ""  # the simulated Drive's latency and bandwidth, in words
    drive_used: int | None = None
    local_total: int | None = None
    local_dir: Path | None = None
    drivefs_timeouts: int | None = None  # lines in DriveFS's log (Colab only)
    drivefs_quota_errors: int | None = None

    title = "%drive"

    def rows(self) -> list[tuple[str, str]]:
        mount = _KIND_LABELS.get(self.kind, self.kind)
        if self.kind == "simulated" and self.detail:
            mount += f": {self.detail}"
        rows = [("mount", mount), ("root", str(self.root) if self.root else "(none)")]
        if self.source is not None:
            rows.append(("simulated from", str(self.source)))
        if self.root is not None:
            rows.append(("items in MyDrive", count(self.root_items)))
            space = f"{size(self.drive_used)} used, {size(self.drive_free)} free"
            if self.kind in ("simulated", "folder"):
                space += " (the local disk under it)"
            rows.append(("Drive space", space))
        if self.local_free is not None:
            local = f"{size(self.local_free)} free of {size(self.local_total)}"
            rows.append(("local disk", f"{local} at {self.local_dir}"))
        if self.drivefs_timeouts is not None:
            rows.append(
                (
                    "DriveFS log",
                    f"{count(self.drivefs_timeouts)} timeouts, "
                    f"{count(self.drivefs_quota_errors)} QUOTA_EXCEEDED",
                )
            )
        return rows

    def notes(self) -> list[str]:
        return list(self.warnings)

    # IPython's pretty printer takes the first __repr__ or _repr_pretty_ up the MRO;
    # without this, the __repr__ below would hide Result's text table.
    _repr_pretty_ = Result._repr_pretty_

    def __repr__(self) -> str:
        root = str(self.root) if self.root else None
        return f"DriveStatus(kind={self.kind!r}, root={root!r}, root_items={self.root_items})"


@dataclass
class _Fake:
    """The one Drive that `%drive --fake` put in place (a second --fake replaces it)."""

    source: Path
    profile: str
    handle: Any  # fakedrive.Mount, or None when we fell back to the plain folder
    previous_root: Path | None  # what --unmount goes back to
    warning: str | None = None


_fake: _Fake | None = None
_exit_hook_registered = False


def drive_status() -> DriveStatus:
    """The status table of the Drive in force now; mounts nothing."""
    warnings: list[str] = []
    local_dir = Path.cwd()
    local_total, _, local_free = _space(local_dir)
    root = drive.current_root()
    if root is None:
        if drive.in_colab():
            warnings.append(
                "Drive is not mounted: the first magic that reads it mounts it "
                "(or run %drive --remount now)"
            )
        else:
            warnings.append(_not_mounted_message())
        return DriveStatus(
            kind="none",
            root=None,
            local_free=local_free,
            drive_free=None,
            root_items=None,
            warnings=tuple(warnings),
            local_total=local_total,
            local_dir=local_dir,
        )

    kind, profile, source, detail = _kind_of(root)
    if _fake is not None and _fake.warning and root == _fake.source:
        warnings.append(_fake.warning)
    my_drive = root / "MyDrive"
    root_items = None
    try:
        root_items = len(os.listdir(my_drive))
    except FileNotFoundError:
        warnings.append(f"no MyDrive folder in {root}: Drive paths will not resolve")
    except OSError as error:
        warnings.append(oserror_advice(my_drive, error))
    if root_items is not None and root_items > ROOT_ITEMS_LIMIT:
        warnings.append(
            f"MyDrive's top level holds {root_items:,} items: above about "
            f"{ROOT_ITEMS_LIMIT:,}, Drive mounts and listings time out (Colab FAQ, "
            '"drive-timeout"); move them into subfolders'
        )
    _, drive_used, drive_free = _space(my_drive if root_items is not None else root)
    timeouts = quota = None
    if kind == "colab":
        timeouts, quota, log_notes = _drivefs_log(Path(DRIVEFS_LOG).expanduser())
        warnings += log_notes
    return DriveStatus(
        kind=kind,
        root=root,
        local_free=local_free,
        drive_free=drive_free,
        root_items=root_items,
        warnings=tuple(warnings),
        profile=profile,
        source=source,
        detail=detail,
        drive_used=drive_used,
        local_total=local_total,
        local_dir=local_dir,
        drivefs_timeouts=timeouts,
        drivefs_quota_errors=quota,
    )


def fake(folder: str | os.PathLike, profile: str = "bench") -> DriveStatus:
    """Make FOLDER the Drive for every magic, as slow as PROFILE's simulated DriveFS.

    FOLDER holds MyDrive (created if missing).  With profile "none", or where FUSE is
    not available, the plain folder serves and the status says so.  A second call
    replaces the first mount; `unmount()` ends it.
    """
    global _fake
    from . import fakedrive

    if profile not in fakedrive.PROFILES:
        raise ColabMagicError(
            f"unknown profile {profile!r}; choose from {', '.join(fakedrive.PROFILES)}"
        )
    previous = _fake.previous_root if _fake is not None else drive.root_override()
    _stop_fake()
    source = Path(folder).expanduser().resolve()
    try:
        (source / "MyDrive").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColabMagicError(f"cannot create {source / 'MyDrive'}: {error.strerror}") from None
    handle = None
    warning = None
    if profile != "none":
        reason = fakedrive.available()
        if reason is None:
            try:
                handle = fakedrive.start(source, profile=profile)
            except fakedrive.FakeDriveError as error:
                reason = str(error)
        if handle is None:
            warning = (
                f"simulated Drive unavailable ({reason}); using the plain folder "
                f"{source}, without Drive's latency"
            )
    _fake = _Fake(source, profile, handle, previous, warning)
    _register_exit_hook()
    drive.use_root(handle.root if handle is not None else source)
    return drive_status()


def unmount() -> DriveStatus:
    """End the simulated Drive (the Drive root goes back to what it was before
    ``--fake``), or on Colab flush and unmount Drive."""
    if _fake is not None:
        previous = _fake.previous_root
        _stop_fake()
        drive.use_root(previous)
        return drive_status()
    if drive.in_colab() and drive.root_override() is None and not os.environ.get(drive.ENV_VAR):
        from google.colab import drive as colab_drive

        try:
            colab_drive.flush_and_unmount()
        except (ValueError, OSError) as error:
            raise ColabMagicError(f"unmount failed: {error}") from None
        return drive_status()
    status = drive_status()
    note = "nothing to unmount: no simulated Drive is mounted and this is not Colab's Drive"
    return _with_warning(status, note)


def remount() -> DriveStatus:
    """Flush and remount Colab's Drive, or restart the simulated Drive (every file cold
    again)."""
    if _fake is not None:
        if _fake.handle is None:
            return _with_warning(drive_status(), "a plain folder has nothing to remount")
        return fake(_fake.source, _fake.profile)
    if drive.in_colab() and drive.root_override() is None and not os.environ.get(drive.ENV_VAR):
        from google.colab import drive as colab_drive

        mount_point = drive.mount_point()
        try:
            colab_drive.flush_and_unmount()
            colab_drive.mount(str(mount_point), force_remount=True)
        except (ValueError, OSError) as error:
            raise ColabMagicError(f"remount failed: {error}") from None
        return drive_status()
    raise ColabMagicError(
        "--remount works on Colab's Drive or on a simulated one (%drive --fake DIR); "
        "neither is mounted here"
    )


# --- where Drive is ------------------------------------------------------------------


def _not_mounted_message() -> str:
    try:
        drive.root()  # outside Colab this only explains; it mounts nothing
    except ColabMagicError as error:
        return str(error)
    return "Drive is not mounted"


def _kind_of(root: Path) -> tuple[str, str | None, Path | None, str]:
    """(kind, profile, source, detail) of the mount that serves ROOT."""
    fstype = mount_type(root)
    if fstype == _FAKE_FSTYPE:
        from . import fakedrive

        try:
            state = fakedrive.status(root)
        except fakedrive.FakeDriveError:
            return "simulated", None, None, "not answering"
        settings = state.get("settings", {})
        return "simulated", settings.get("profile"), Path(state["src"]), _describe(settings)
    if fstype is not None and fstype.startswith(_COLAB_FSTYPE):
        return "colab", None, None, ""
    if drive.in_colab() and root == drive.mount_point():
        return "colab", None, None, ""
    return "folder", None, None, ""


def _describe(settings: dict[str, Any]) -> str:
    """The simulated Drive's SETTINGS in words, as its Profile says them."""
    import dataclasses

    from . import fakedrive

    name = f"{settings.get('profile')} profile"
    try:
        fields = {f.name: settings[f.name] for f in dataclasses.fields(fakedrive.Profile)}
        return f"{name} ({fakedrive.Profile(**fields)})"
    except (KeyError, TypeError, ValueError):  # a server of another version
        return name


def mount_type(path: Path) -> str | None:
    """The file-system type of the mount that holds PATH ("ext4", "fuse.drive", ...),
    from /proc/self/mountinfo; None where that is not readable."""
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    try:
        with open("/proc/self/mountinfo", "rb") as table:
            for line in table:
                fields = line.split()
                if b"-" not in fields:
                    continue
                point = _unescape(fields[4])
                fstype = os.fsdecode(fields[fields.index(b"-") + 1])
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) >= best[0]):
                    best = (len(point), fstype)
    except OSError:
        return None
    return best[1] if best else None


def _unescape(field: bytes) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...).
    import re

    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field))


def _space(path: Path) -> tuple[int | None, int | None, int | None]:
    """(total, used, free) bytes of the file system holding PATH; None where unknown.
    Free is what every command's preflight counts (`fsio.free_bytes`)."""
    import shutil

    free = fsio.free_bytes(path)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None, None, None
    if free is None or not usage.total:  # a FUSE mount that reports no blocks
        return None, None, None
    return usage.total, usage.used, free


def oserror_advice(path: Path, error: OSError) -> str:
    """One line on a failed Drive listing; a disconnected Drive gets its cure."""
    import errno

    if error.errno == errno.ENOTCONN:
        return f"Drive is disconnected ({error.strerror}): run %drive --remount"
    return f"cannot list {path}: {error.strerror or error}"


def _drivefs_log(log: Path) -> tuple[int | None, int | None, list[str]]:
    """(timeout lines, QUOTA_EXCEEDED lines, warnings) from the end of DriveFS's log."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None, None, []
    lines = text.splitlines()
    timeouts = [ln for ln in lines if any(m in ln for m in TIMEOUT_MARKERS)]
    quota = [ln for ln in lines if QUOTA_MARKER in ln]
    notes = []
    if timeouts:
        notes.append(
            f"DriveFS logged {len(timeouts):,} timeouts (last: {_shorten(timeouts[-1])}); "
            "folders with thousands of files time out: pack them (%packdrive) and %stage"
        )
    if quota:
        notes.append(
            f"DriveFS logged {len(quota):,} QUOTA_EXCEEDED (last: {_shorten(quota[-1])}): "
            "Drive refuses files read too often or too much in a day; copy the file "
            "within Drive, or wait"
        )
    return len(timeouts), len(quota), notes


def _shorten(line: str, limit: int = 120) -> str:
    line = line.strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _with_warning(status: DriveStatus, note: str) -> DriveStatus:
    import dataclasses

    return dataclasses.replace(status, warnings=(note, *status.warnings))


# --- the simulated Drive's life ------------------------------------------------------


def _stop_fake() -> None:
    global _fake
    current, _fake = _fake, None
    if current is not None and current.handle is not None:
        from . import fakedrive

        try:
            current.handle.stop()
        except fakedrive.FakeDriveError as error:
            raise ColabMagicError(str(error)) from None


def _register_exit_hook() -> None:
    # No stale FUSE mount may outlive the kernel (fakedrive also stops its own
    # mounts at exit; stopping twice is harmless).
    global _exit_hook_registered
    if not _exit_hook_registered:
        import atexit

        atexit.register(_stop_at_exit)
        _exit_hook_registered = True


def _stop_at_exit() -> None:
    import contextlib

    with contextlib.suppress(Exception):  # at exit there is no one left to tell
        _stop_fake()
