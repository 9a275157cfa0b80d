"""Result objects: one set of rows, two views (an HTML table and an aligned text table)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def size(n: int | None) -> str:
    if n is None:
        return "unknown"
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


class Result:
    """Mixin: subclasses give a title and rows of (label, text)."""

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
        return [(printable(label), printable(value)) for label, value in self.rows()]

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
        body = "".join(
            f'<tr><th style="text-align:left">{html.escape(label)}</th>'
            f'<td style="text-align:left">{html.escape(value)}</td></tr>'
            for label, value in self._rows()
        )
        notes = "".join(f"<p>{html.escape(printable(note))}</p>" for note in self.notes())
        return (
            f'<div class="colabmagic"><table><caption style="text-align:left">'
            f"<b>{html.escape(self.title)}</b></caption>{body}</table>"
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
