"""%packdrive: pack a Drive folder of many small files into one archive beside it.

Reading thousands of files from Drive one at a time is what makes `zip -r` slow there
(every cold open is a round trip), so a pool of threads keeps many reads in flight
(`read`) while one thread writes the members into a local archive in sorted order
(`write`); the archive is then copied into Drive as ``ARCHIVE.partial``, verified and
renamed into place, with a sidecar manifest beside it (`publish`).  This module holds
`pack()` and the pipeline that joins the three.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .. import drive, interrupts, source
from ..errors import ColabMagicError
from . import publish
from .publish import Output, Plan
from .read import Entry, Reader, StepFailed, scan
from .result import PackResult, left_out_line
from .write import ArchiveWriter, deflate_judge, parse_size, sample_key

__all__ = ["PackResult", "pack", "parse_size"]

log = logging.getLogger(__name__)


def pack(
    folder: str | os.PathLike,
    archive: str | os.PathLike | None = None,
    *,
    format: str = "zip",
    shard_size: str | int | None = None,
    compress: str = "auto",
    workers: int = source.WORKERS,
    force: bool = False,
    quiet: bool = False,
    retries: int | None = None,
) -> PackResult:
    """Pack FOLDER (in Drive) into one archive beside it, or into tar shards, once.

    An archive already up to date with the folder is not rebuilt.  The result's
    ``stage_line`` is the %stage line that brings the archive to local disk.
    RETRIES (default: the ``ColabMagic.retries`` trait) is how often a read or the
    copy is tried again after a Drive drop-out.
    """
    started = time.monotonic()
    if format not in ("zip", "tar"):
        raise ColabMagicError(f'--format must be zip or tar, not "{format}"')
    if compress not in ("auto", "store", "deflate"):
        raise ColabMagicError(f'--compress must be auto, store or deflate, not "{compress}"')
    workers = source.workers(workers)
    folder_path = _existing_folder(folder)
    where = publish.plan(
        folder_path, archive, format, None if shard_size is None else parse_size(shard_size)
    )
    if where.fmt == "tar" and compress == "deflate":
        raise ColabMagicError(
            "--compress deflate needs --format zip: tar stores members as they are"
        )
    return _pack(folder_path, where, compress, workers, force, quiet, retries, started)


def _existing_folder(text: str | os.PathLike) -> Path:
    path = drive.resolve(text) if isinstance(text, str) else Path(text)
    if not path.exists():
        raise ColabMagicError(f"no such folder: {path}")
    if not path.is_dir():
        raise ColabMagicError(f"{drive.shown(path)} is a file, not a folder: nothing to pack")
    return path


@interrupts.deferred()  # after the paths are resolved: mounting Drive stays interruptible
def _pack(
    folder: Path,
    where: Plan,
    compress: str,
    workers: int,
    force: bool,
    quiet: bool,
    retries: int | None,
    started: float,
) -> PackResult:
    try:
        entries, left_out = scan(folder, workers, retries, fmt=where.fmt)
        log.debug("listed %d entries in %.2f s", len(entries), time.monotonic() - started)
    except OSError as error:
        raise ColabMagicError(f"listing {drive.shown(folder)} failed: {error}") from None
    files = [e for e in entries if not e.is_dir]
    if not files:
        why = f" but what it left out: {left_out_line(left_out)}" if left_out else ""
        raise ColabMagicError(f"nothing to pack: {drive.shown(folder)} holds no files{why}")

    settings = {
        "format": where.fmt,
        "compress": compress,
        "shard_size": where.shard_size,
        "source_name": folder.name,
    }
    manifest = [[e.arcname, e.size, e.mtime_ns] for e in entries]
    total = sum(e.size for e in files)
    previous = publish.read_sidecar(where.sidecar)
    reason = ""
    if previous is None:
        publish.refuse_foreign_archive(where, force)
    elif not force and publish.up_to_date(previous, where.sidecar.parent, settings, manifest):
        return PackResult(
            action="skipped",
            source=folder,
            archives=tuple(where.sidecar.parent / a["name"] for a in previous["archives"]),
            files=len(files),
            bytes=total,
            archive_bytes=sum(a["bytes"] for a in previous["archives"]),
            seconds=time.monotonic() - started,
            format=where.fmt,
            pattern=previous.get("pattern"),
            stored=previous.get("stored", 0),
            deflated=previous.get("deflated", 0),
            left_out=tuple(left_out),
        )
    else:
        reason = "--force" if force else publish.what_changed(previous, settings, manifest)

    sidecar = {
        "colabmagic": publish.SIDECAR_VERSION,
        "made_by": "%packdrive",
        "source": str(folder),
        **settings,
        "files": len(files),
        "bytes": total,
        "manifest": manifest,
    }
    built = _build_and_publish(where, entries, compress, workers, quiet, retries, previous, sidecar)
    return PackResult(
        action="packed" if previous is None else "repacked",
        source=folder,
        archives=built["archives"],
        files=len(files),
        bytes=total,
        archive_bytes=built["archive_bytes"],
        seconds=time.monotonic() - started,
        format=where.fmt,
        pattern=where.pattern(len(built["archives"])),
        stored=built["stored"],
        deflated=built["deflated"],
        reason=reason,
        left_out=tuple(left_out),
    )


def _build_and_publish(
    where: Plan,
    entries: list[Entry],
    compress: str,
    workers: int,
    quiet: bool,
    retries: int | None,
    previous: dict | None,
    sidecar: dict,
) -> dict:
    """Read, build locally, copy each archive to Drive as .partial and verify it (one
    at a time, while the next is built), rename them all, write the sidecar.  Any
    failure (or Ctrl-C) removes what this run wrote to Drive."""
    import shutil
    import tempfile

    from .. import progress

    tmp = Path(tempfile.gettempdir())
    publish.preflight(where, entries, tmp)
    try:
        where.sidecar.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColabMagicError(
            f"cannot create {drive.shown(where.sidecar.parent)}: {error}"
        ) from None
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="colabmagic-pack-", dir=tmp))
    out = Output(had_previous=previous is not None)
    n_files = sum(1 for e in entries if not e.is_dir)
    bar = progress.bar(
        sum(e.size for e in entries), f"packing {entries[0].arcname.split('/')[0]}", quiet=quiet
    )
    archives: list[Path] = []
    counts = {"stored": 0, "deflated": 0, "files": 0}
    step = "building the archive on local disk"

    def copy_and_verify(writer: ArchiveWriter, final: Path) -> None:
        began = time.monotonic()
        partial = publish.upload(writer.path, final, out, quiet=quiet, retries=retries)
        uploaded = time.monotonic()
        publish.verify(partial, writer.fmt, writer.members)
        log.debug(
            "%s: copied to Drive in %.2f s, verified in %.2f s",
            final.name,
            uploaded - began,
            time.monotonic() - uploaded,
        )
        out.published.append((partial, final, writer.path.stat().st_size))
        writer.path.unlink()

    def finish(uploader: Any, writer: ArchiveWriter, upload: Any) -> Any:
        writer.close()
        counts["stored"] += writer.stored
        counts["deflated"] += writer.deflated
        if upload is not None:
            interrupts.result(upload)  # one archive in flight to Drive at a time
        final = where.archive if where.archive is not None else where.shard(len(archives))
        archives.append(final)
        return uploader.submit(copy_and_verify, writer, final)

    reader = Reader(entries, workers, deflate=deflate_judge(where.fmt, compress), retries=retries)
    try:
        with interrupts.pool(1, "colabmagic-upload") as uploader:
            try:
                writer = ArchiveWriter(workdir / "0", where.fmt, retries=retries)
                upload = None
                for entry, loaded in reader:
                    if (
                        where.shard_size is not None
                        and writer.members
                        and writer.size_with(entry) > where.shard_size
                        and sample_key(entry.arcname) != writer.last_key
                    ):
                        upload = finish(uploader, writer, upload)
                        writer = ArchiveWriter(
                            workdir / str(len(archives)), where.fmt, retries=retries
                        )
                    writer.add(entry, loaded)
                    if not entry.is_dir:
                        counts["files"] += 1
                        bar.update(entry.size)
                        if counts["files"] % 64 == 0 or counts["files"] == n_files:
                            bar.set_postfix(files=f"{counts['files']:,}/{n_files:,}", refresh=False)
                log.debug("read and built %d files in %.2f s", n_files, time.monotonic() - started)
                interrupts.result(finish(uploader, writer, upload))
            except BaseException:
                # Stop the upload in flight at its next write, so that nothing reaches
                # Drive after the clean-up below; leaving the pool waits for it.
                out.cancel.set()
                raise
            finally:
                reader.close()

        step = "renaming into place"
        publish.put_in_place(where, out, previous, archives)
        step = "writing the manifest"
        sidecar["archives"] = [{"name": f.name, "bytes": n} for _, f, n in out.published]
        sidecar["pattern"] = where.pattern(len(archives))
        sidecar["stored"], sidecar["deflated"] = counts["stored"], counts["deflated"]
        publish.write_sidecar(where.sidecar, sidecar)
    except BaseException as error:
        left = publish.take_back(out, where)
        if isinstance(error, StepFailed):
            raise ColabMagicError(f"{error}; {left}") from None
        if isinstance(error, OSError):
            raise ColabMagicError(f"{step} failed: {error}; {left}") from None
        raise
    finally:
        bar.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "archives": tuple(archives),
        "archive_bytes": sum(n for _, _, n in out.published),
        "stored": counts["stored"],
        "deflated": counts["deflated"],
    }
