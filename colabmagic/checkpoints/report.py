"""The result of `%ckptlink LOCAL DRIVE_DIR`, and the small formatters it shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import drive
from ..results import Result, count, duration

if TYPE_CHECKING:
    from .mirror import Mirror
    from .names import Checkpoint

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
