"""What %packdrive returns: the archive(s) in Drive, what went in, the %stage line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import drive
from ..results import Result, count, duration, size

SHOWN_LEFT_OUT = 5  # names in the note; `PackResult.left_out` holds them all


def _quoted(text: str) -> str:
    # Double quotes read best; a name that holds a quote or backslash needs shlex.
    if any(c in text for c in '"\\`'):
        import shlex

        return shlex.quote(text)
    return f'"{text}"'


@dataclass(frozen=True, repr=False)
class PackResult(Result):
    """What %packdrive did: the archive(s) in Drive and what went into them."""

    action: str  # "packed", "skipped" or "repacked"
    source: Path
    archives: tuple[Path, ...]
    files: int
    bytes: int
    archive_bytes: int
    seconds: float
    format: str = "zip"
    pattern: str | None = None  # shards: "train-{000000..000003}.tar"
    stored: int = 0
    deflated: int = 0
    reason: str = ""
    warnings: tuple[str, ...] = ()
    # (member name, why) of each entry not packed: a name %stage would refuse (a
    # backslash, a control character, ...), or not a file (a FIFO, a broken link).
    left_out: tuple[tuple[str, str], ...] = ()

    title = "%packdrive"

    @property
    def files_per_s(self) -> float | None:
        return self.files / self.seconds if self.seconds > 0 else None

    @property
    def stage_line(self) -> str:
        """The %stage line that brings the archive (or every shard) to local disk."""
        if not self.archives:
            return ""
        if self.pattern is not None:
            stem = self.archives[0].name[: -len("-000000.tar")]
            target = drive.shown(self.archives[0].parent / f"{stem}-*.tar")
        else:
            target = drive.shown(self.archives[0])
        return f"%stage {_quoted(target)}"

    def rows(self) -> list[tuple[str, str]]:
        if self.pattern is not None and self.archives:
            where = drive.shown(self.archives[0].parent / self.pattern)
            shown = f"{where} ({len(self.archives)} shards)"
        else:
            shown = ", ".join(drive.shown(p) for p in self.archives)
        ratio = f" ({self.archive_bytes / self.bytes:.0%} of the input)" if self.bytes else ""
        rows = [
            ("action", self.action + (f" ({self.reason})" if self.reason else "")),
            ("source", drive.shown(self.source)),
            ("archive" if self.pattern is None else "shards", shown),
            ("files", count(self.files)),
            ("bytes in", size(self.bytes)),
            ("archive bytes", size(self.archive_bytes) + ratio),
            ("time", duration(self.seconds)),
        ]
        if self.action != "skipped" and self.seconds > 0:
            per_second = size(int(self.bytes / self.seconds))
            rows.append(("speed", f"{self.files / self.seconds:,.0f} files/s, {per_second}/s"))
        if self.format == "zip":
            rows.append(("members", f"{self.deflated:,} deflated, {self.stored:,} stored"))
        return rows

    def notes(self) -> list[str]:
        notes = list(self.warnings)
        if self.left_out:
            notes.append(f"Left out {left_out_line(self.left_out)}.")
        if self.action == "skipped":
            notes.append(
                "Up to date with the folder (same names, sizes, mtimes); --force rebuilds."
            )
        if self.stage_line:
            notes.append(f"Next, in the training notebook: {self.stage_line}")
        return notes

    def __repr__(self) -> str:
        names = [str(p) for p in self.archives]
        return f"PackResult(action={self.action!r}, archives={names!r}, files={self.files})"


def left_out_line(left_out: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str:
    """How many entries were left out and why, the first few named (quoted and escaped,
    so that a control character cannot break the line)."""
    from ..unpack.members import shown

    n = len(left_out)
    listed = ", ".join(f"{shown(name)} ({why})" for name, why in left_out[:SHOWN_LEFT_OUT])
    more = (
        f", and {n - SHOWN_LEFT_OUT:,} more (PackResult.left_out lists all)"
        if n > SHOWN_LEFT_OUT
        else ""
    )
    return f"{n:,} {'entry' if n == 1 else 'entries'}: {listed}{more}"
