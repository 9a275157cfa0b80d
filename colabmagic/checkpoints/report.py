"""The results of %ckptlink (a link or a mirror start; --status and --stop), and the
small formatters they share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import drive
from ..results import Result, count, duration, size

if TYPE_CHECKING:
    from .mirror import Mirror
    from .names import Checkpoint

SHOWN = 3  # names listed in a row before "and N more"
TRASH_NOTE = (
    "Drive keeps deleted files in its trash, which still counts against your quota; "
    "empty it at drive.google.com/drive/trash."
)


def _link_target(local: Path) -> str:
    import os

    try:
        return drive.shown(os.readlink(local))
    except OSError:
        return "(not a link)"


def plural(n: int, word: str) -> str:
    if n == 1:
        return word
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def files(n: int) -> str:
    return f"{n:,} {plural(n, 'file')}"


def ago(when: float | None) -> str:
    if when is None:
        return "never"
    return duration(max(0.0, time.time() - when)) + " ago"


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
    skipped: tuple[str, ...] = ()  # units in Drive not brought back, with why
    cleared: tuple[str, ...] = ()  # leftovers of an interrupted upload, removed from Drive
    unverified: int = 0  # units brought back without a manifest to check them against
    replaced: tuple[str, ...] = ()  # LOCAL holds a newer version: it replaces Drive's

    title = "%ckptlink"

    def rows(self) -> list[tuple[str, str]]:
        if self.mode == "link":
            arrow = f"→ {_link_target(self.local)}"
        else:
            arrow = f"→ (copied every {self.every:g} s)"
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
            rows.append(("moved into Drive", f"{self.moved:,} " + plural(self.moved, "entry")))
        if self.copied_back:
            rows.append(("copied back from Drive", files(self.copied_back)))
        if self.skipped:
            rows.append(("not brought back", "; ".join(self.skipped)))
        if self.replaced:
            rows.append(("LOCAL is newer", ", ".join(self.replaced) + ": replaces Drive's copy"))
        if self.cleared:
            rows.append(("cleared in Drive", ", ".join(self.cleared)))
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
        if self.skipped:
            notes.append(
                f"{len(self.skipped)} {plural(len(self.skipped), 'checkpoint')} in Drive "
                "were not whole (an upload cut short) and were not brought back."
            )
        if self.unverified:
            notes.append(
                f"{self.unverified} brought back had no manifest (not written by the mirror): "
                "copied as they are."
            )
        if self.cleared:
            notes.append(
                f"Removed {len(self.cleared)} leftovers of an interrupted upload. {TRASH_NOTE}"
            )
        if self.latest is not None:
            notes.append(f"Resume from: {self.latest.path}")
        if self.pruned:
            notes.append(f"Deleted {len(self.pruned)} older checkpoints. {TRASH_NOTE}")
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
    pending: int  # units not yet in Drive: changing, being written, failing
    errors: int
    last_error: str | None
    last_error_at: float | None
    failing: bool  # the last scan hit an error
    pending_names: tuple[str, ...] = ()
    held_open: tuple[str, ...] = ()  # pending because a process has them open for writing
    kept_back: int = 0  # not uploaded: older than the --keep newest
    keep: int | None = None
    last_copy: float | None = None  # when the last file was renamed into place in DRIVE_DIR
    colab: bool = False  # DRIVE_DIR is Colab's DriveFS mount


def some(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


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
            pending = f"{m.pending:,} {plural(m.pending, 'checkpoint')} or files"
            if m.pending_names:
                pending += f": {some(m.pending_names)}"
            rows += [
                (f"{tag}local", str(m.local)),
                (f"{tag}drive dir", drive.shown(m.drive_dir)),
                (f"{tag}state", state),
                (f"{tag}last sync", ago(m.last_sync)),
                (f"{tag}copied", f"{files(m.files_copied)}, {size(m.bytes_copied)}"),
                (f"{tag}in Drive", self._in_drive(m)),
                (f"{tag}not yet in Drive", pending),
            ]
            if m.held_open:
                rows.append((f"{tag}being written", some(m.held_open)))
            if m.kept_back:
                rows.append(
                    (f"{tag}not uploaded", f"{m.kept_back:,} older than the --keep {m.keep} newest")
                )
            rows.append((f"{tag}errors", errors))
        return rows

    @staticmethod
    def _in_drive(m: MirrorState) -> str:
        if m.last_copy is None:
            return "nothing copied yet"
        if m.colab:
            return (
                f"copied into the mount {ago(m.last_copy)}; Drive's own upload is not "
                "observable from the VM"
            )
        return f"copied {ago(m.last_copy)}"

    def notes(self) -> list[str]:
        if not self.mirrors:
            return ["No mirror is running (start one with %ckptlink LOCAL DRIVE_DIR --mirror)."]
        if any(m.colab for m in self.mirrors):
            return [
                "DriveFS uploads to Google's servers in the background. Before a planned "
                "stop, %ckptlink --stop (a last sync), then drive.flush_and_unmount()."
            ]
        return []

    def __repr__(self) -> str:
        return f"MirrorStatus(action={self.action!r}, mirrors={len(self.mirrors)})"
