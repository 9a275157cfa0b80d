"""%timeread: what reading a Drive folder costs, against local disk, measured on a sample.

`timeread()` lists PATH, reads a sample of it from Drive and from local disk
(`measure`: how the sample is drawn so that every read is a first read), and turns
the clock readings into figures, projections and one line of advice (`report`).  On
the simulated Drive's colab profile (0.5 s a cold open) the default measurement of a
folder of small files takes about 20 s, 15 of them in the serial pass.

``colabmagic.timeread`` is the function, not this package (see ``colabmagic/__init__``):
import the parts as ``from colabmagic.timeread import measure``.
"""

from __future__ import annotations

import os
import time

from .. import drive, interrupts, source
from ..errors import ColabMagicError
from . import measure, report
from .report import TimeReadResult

__all__ = ["TimeReadResult", "timeread"]


def timeread(
    path: str | os.PathLike | None = None,
    *,
    files: int = 100,
    workers: int | None = None,
    local: str | os.PathLike | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> TimeReadResult:
    """How long reading PATH (default: all of MyDrive) takes from Drive and from local
    disk, per file and per epoch, what `%stage` would cost, and which to use.

    FILES is the size of the random sample, WORKERS the files in flight in the
    parallel pass (default: the `ColabMagic.workers` trait's default, 16), LOCAL the
    folder on local disk for the cold copies, SEED picks the sample (the same seed
    picks the same files, which are then warm: the result says so).  Takes well under
    a minute even on a slow Drive: see `measure`.
    """
    if files < 1:
        raise ColabMagicError("--files must be 1 or more")
    workers = source.workers(workers)
    text = "My Drive" if path is None else os.fspath(path)
    top = drive.resolve(text)
    with interrupts.deferred():  # after resolve: mounting Drive must stay interruptible
        started = time.perf_counter()
        entries = measure.list_files(top)
        list_s = time.perf_counter() - started
        if not entries:
            raise ColabMagicError(f'"{text}" holds no files to read')
        local_dir = measure.local_dir(local)
        plan = measure.plan_sample(entries, files, seed=seed)
        warnings: list[str] = []

        from ..progress import bar

        with bar(None, "timeread", quiet=quiet) as progress:
            m = measure.measure(plan, workers, local_dir, progress, warnings)
        seconds = time.perf_counter() - started

        return report.summarise(
            m,
            text=text,
            top=top,
            entries=entries,
            workers=workers,
            list_s=list_s if top.is_dir() else None,
            seconds=seconds,
            warnings=warnings,
        )
