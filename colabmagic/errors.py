"""The one exception colabmagic raises for expected failures."""

from __future__ import annotations


class ColabMagicError(Exception):
    """An expected failure: a wrong path, a refused archive, a full disk.

    The magics turn it into IPython's ``UsageError`` (one short line); the CLI prints
    it and exits 2.  Raised from the Python twins inside a notebook, it still shows
    as one line, because IPython asks ``_render_traceback_`` before formatting a
    traceback.
    """

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]
