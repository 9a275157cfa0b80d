"""Result objects: one set of rows, two views (an HTML table and an aligned text table)."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def size(n: int | None) -> str:
    """Bytes in one unit style: "0 B", "512 B", "797.8 kB", "1.2 GB" (powers of 1000)."""
    if n is None:
        return "unknown"
    if abs(n) < 1000:  # humanize says "0 Bytes" and "1 Byte", beside its "797.8 kB"
        return f"{n} B"
    import humanize

    return humanize.naturalsize(n)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    import datetime

    import humanize

    return humanize.precisedelta(
        datetime.timedelta(seconds=seconds), minimum_unit="seconds", format="%0.0f"
    )


def count(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def printable(text: str) -> str:
    """TEXT with undecodable bytes of file names (lone surrogates) shown as \\x80:
    neither a terminal nor a notebook's JSON messages can carry them raw."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: Any) -> str:
    """VALUE as a table shows it: a path inside Drive as the user types it
    ("My Drive/data/x.zip", `drive.shown`), anything else as it is."""
    from . import drive

    if isinstance(value, os.PathLike):
        return drive.shown(value)
    text = str(value)
    if text.startswith("/") and "\n" not in text:
        spelled = drive.shown(text)
        if spelled != str(Path(text)):
            return spelled
    return text


# The colour of an action's badge: done (green), nothing to do (grey), refused (red).
_DONE = "#137333"
_IDLE = "#5f6368"
_REFUSED = "#b3261e"
BADGE_COLOURS = {
    **dict.fromkeys(("skipped", "unchanged", "status", "running", "stopped"), _IDLE),
    **dict.fromkeys(("refused", "failed", "error"), _REFUSED),
}


def badge(action: str) -> str:
    """ACTION as a small coloured label whose text is the word itself."""
    colour = BADGE_COLOURS.get(action, _DONE)
    return (
        f'<span class="colabmagic-badge" data-action="{html.escape(action)}" '
        f'style="display:inline-block;margin-left:.6em;padding:0 .55em;border-radius:.8em;'
        f'background:{colour};color:#fff;font-size:85%;font-weight:600">'
        f"{html.escape(action)}</span>"
    )


class Result:
    """Mixin: subclasses give a title and rows of (label, text).

    A value that is a path inside Drive is shown as the user types it; a result
    with an ``action`` shows it as a badge beside the title in HTML.
    """

    title = "colabmagic"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # IPython's pretty printer takes the first of _repr_pretty_ / __repr__ it
        # meets going up the MRO; a subclass's own __repr__ would hide the table.
        super().__init_subclass__(**kwargs)
        cls._repr_pretty_ = Result._repr_pretty_

    def rows(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Lines shown under the table (advice, warnings, the next step)."""
        return []

    def extra_html(self) -> str:
        """Markup appended under the table (a chart); already safe."""
        return ""

    def _rows(self) -> list[tuple[str, str]]:
        return [(printable(label), printable(shown(value))) for label, value in self.rows()]

    def __str__(self) -> str:
        rows = self._rows()
        width = max((len(label) for label, _ in rows), default=0)
        lines = [self.title]
        lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
        lines += [f"  {printable(note)}" for note in self.notes()]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        # Narrow: long values (paths) wrap inside the cell instead of widening the page.
        body = "".join(
            f'<tr><th style="text-align:left;vertical-align:top;white-space:nowrap">'
            f"{html.escape(label)}</th>"
            f'<td style="text-align:left;max-width:48em;overflow-wrap:anywhere">'
            f"{html.escape(value)}</td></tr>"
            for label, value in self._rows()
        )
        notes = "".join(
            f'<p style="max-width:60em">{html.escape(printable(note))}</p>' for note in self.notes()
        )
        action = getattr(self, "action", None)
        status = badge(action) if isinstance(action, str) and action else ""
        return (
            f'<div class="colabmagic"><table><caption style="text-align:left">'
            f"<b>{html.escape(self.title)}</b>{status}</caption>{body}</table>"
            f"{notes}{self.extra_html()}</div>"
        )


@dataclass(frozen=True, repr=False)
class StageResult(Result):
    action: str  # "staged", "skipped" or "restaged"
    source: Path
    dest: Path
    files: int
    bytes: int
    archive_bytes: int
    seconds: float
    entries: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    replaced: int = 0  # entries in the way that --force moved aside (kept)
    replaced_to: Path | None = None  # where they were moved: DIR/.colabmagic/replaced/<time>

    title = "%stage"

    def rows(self) -> list[tuple[str, str]]:
        rate = self.bytes / self.seconds if self.seconds > 0 else None
        rows = [
            ("action", self.action),
            ("source", str(self.source)),
            ("dest", str(self.dest)),
            ("files", count(self.files)),
            ("bytes", size(self.bytes)),
            ("read from source", size(self.archive_bytes)),
            ("time", duration(self.seconds)),
        ]
        if rate and self.action != "skipped":
            rows.append(("speed", f"{size(int(rate))}/s"))
        shown = ", ".join(p.name for p in self.entries[:5])
        if len(self.entries) > 5:
            shown += f", … ({len(self.entries)} in all)"
        rows.append(("entries", shown or "(none)"))
        if self.replaced:
            rows.append(("replaced", f"{count(self.replaced)} moved to {self.replaced_to}"))
        return rows

    def notes(self) -> list[str]:
        return list(self.warnings)

    def __repr__(self) -> str:
        return f"StageResult(action={self.action!r}, dest={str(self.dest)!r}, files={self.files})"
