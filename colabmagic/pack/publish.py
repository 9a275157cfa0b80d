"""Putting the archive in Drive: where it goes, the copy, the check, the rename.

Each archive is copied into Drive as ``ARCHIVE.partial`` with large writes and an
fsync, re-opened from Drive and verified, and only when every archive (every shard)
is verified are they renamed into place, so that a glob over the shards never meets
half a set.  The folder's manifest (names, sizes, mtimes) goes into a sidecar beside
the archive, ``ARCHIVE.colabmagic.json``, written last.  A sidecar rather than a zip
comment: it works the same for zip, tar and a set of shards (tar has no comment, and a
comment holds at most 64 KiB, too little for the manifest of 10,000 files); it is read
without opening the archive; and, being written after verification, its presence says
the archive beside it is complete.  A failure, or Ctrl-C, takes back what this run wrote.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import drive, fsio, source
from ..errors import ColabMagicError
from .read import READ_CHUNK, Entry, StepFailed, gave_up
from .write import Member

SIDECAR_SUFFIX = ".colabmagic.json"
SIDECAR_VERSION = 1
UPLOAD_CHUNK = READ_CHUNK  # writes into Drive: large, as DriveFS uploads best
# Members whose bytes are re-read from the Drive copy and checked against their CRC.
VERIFY_SAMPLE = 16
VERIFY_MAX_MEMBER = 64 << 20
VERIFY_BUFFER = 1 << 20  # reads of a tar's copy whose members are SMALL_MEMBERS or less
SMALL_MEMBERS = 128 << 10


@dataclass(frozen=True)
class Plan:
    fmt: str
    archive: Path | None  # the single archive; None for shards
    shard_base: Path | None  # ".../train" for train-000000.tar, train-000001.tar, ...
    shard_size: int | None
    sidecar: Path

    def shard(self, index: int) -> Path:
        assert self.shard_base is not None
        return self.shard_base.parent / f"{self.shard_base.name}-{index:06d}.tar"

    def pattern(self, shards: int) -> str | None:
        if self.shard_base is None:
            return None
        return f"{self.shard_base.name}-{{000000..{shards - 1:06d}}}.tar"


def plan(
    source_dir: Path, archive: str | os.PathLike | None, fmt: str, shard_size: int | None
) -> Plan:
    """Where the archive (or the shards) and the sidecar go, and in which format.

    A given ARCHIVE ending in .tar means tar; an existing folder (or a trailing "/")
    means "FOLDER.zip in there"."""
    explicit = archive is not None
    if archive is None:
        target = source_dir.parent / source_dir.name
    else:
        target = drive.to_path(archive) if isinstance(archive, str) else Path(archive)
        if target.is_dir() or str(archive).endswith("/"):
            target, explicit = target / source_dir.name, False
    lower = target.name.lower()
    if explicit and lower.endswith(".tar"):
        fmt = "tar"
    elif explicit and lower.endswith(".zip") and fmt == "tar":
        raise ColabMagicError(f'"{target.name}" ends in .zip but --format is tar')
    elif explicit and lower.endswith((".tgz", ".gz", ".bz2", ".xz", ".zst")):
        raise ColabMagicError(f'"{target.name}": %packdrive writes .zip or .tar archives')

    if shard_size is not None:
        stem = re.sub(r"\.(zip|tar)$", "", target.name, flags=re.IGNORECASE)
        base = target.parent / stem
        where = Plan("tar", None, base, shard_size, target.parent / (stem + SIDECAR_SUFFIX))
    else:
        if not lower.endswith("." + fmt):
            target = target.parent / f"{target.name}.{fmt}"
        where = Plan(fmt, target, None, None, target.parent / (target.name + SIDECAR_SUFFIX))

    first = where.archive or where.shard(0)
    at, inside = first.resolve(), source_dir.resolve()
    if at == inside or inside in at.parents:
        raise ColabMagicError(
            f"the archive {drive.shown(first)} would be inside the folder it packs; "
            "put it beside the folder (the default) or elsewhere"
        )
    return where


def refuse_foreign_archive(where: Plan, force: bool) -> None:
    """An archive at the target that %packdrive did not make (no sidecar) may be the
    user's own, with other contents: it is replaced only with --force."""
    if force:
        return
    if where.archive is not None:
        existing = where.archive if where.archive.exists() else None
    else:
        assert where.shard_base is not None
        shards = sorted(where.shard_base.parent.glob(where.shard_base.name + "-[0-9]*.tar"))
        existing = shards[0] if shards else None
    if existing is not None:
        raise ColabMagicError(
            f"{drive.shown(existing)} exists and was not made by %packdrive; --force replaces it"
        )


# --------------------------------------------------------------------------- sidecar


def read_sidecar(path: Path) -> dict | None:
    import json

    try:
        with open(path, "rb") as f:
            body = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("colabmagic") != SIDECAR_VERSION:
        return None
    if not isinstance(body.get("archives"), list) or not body["archives"]:
        return None
    return body


def up_to_date(previous: dict, folder: Path, settings: dict, manifest: list) -> bool:
    """Same settings, same names/sizes/mtimes, and every archive still there whole."""
    if any(previous.get(k) != v for k, v in settings.items()):
        return False
    if previous.get("manifest") != manifest:
        return False
    try:
        return all(os.stat(folder / a["name"]).st_size == a["bytes"] for a in previous["archives"])
    except (OSError, KeyError, TypeError):
        return False


def what_changed(previous: dict, settings: dict, manifest: list) -> str:
    changed = [k for k, v in settings.items() if previous.get(k) != v]
    if changed:
        return "new " + ", ".join(k.replace("_", " ") for k in changed)
    old = {row[0]: row[1:] for row in previous.get("manifest", [])}
    new = {row[0]: row[1:] for row in manifest}
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    modified = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
    if added or removed or modified:
        return f"folder changed: {added} added, {modified} changed, {removed} removed"
    return "archive missing or changed"


def write_sidecar(path: Path, body: dict) -> None:
    import json

    fsio.write_text_atomic(path, json.dumps(body, separators=(",", ":")))


# --------------------------------------------------------------------------- space


def estimate(entries: list[Entry], where: Plan) -> tuple[int, int]:
    """Bytes the archive(s) take in Drive, and on local disk while building."""
    total = sum(e.size + 1024 + 2 * len(e.arcname) for e in entries) + (1 << 20)
    if where.shard_size is None:
        return total, total
    largest = max(e.size for e in entries)
    # One shard being built while the previous one is copied to Drive.
    return total, min(total, 2 * (where.shard_size + largest) + (1 << 20))


def preflight(where: Plan, entries: list[Entry], tmp: Path) -> None:
    """Refuse, before anything is read, when the build or the copy would not fit."""
    drive_need, local_need = estimate(entries, where)
    try:
        fsio.require_free(tmp, local_need)
    except ColabMagicError as error:
        raise ColabMagicError(f"not enough local disk to build the archive: {error}") from None
    dest = where.sidecar.parent
    try:
        fsio.require_free(dest, drive_need, shown_as=drive.shown(dest))
    except ColabMagicError as error:
        raise ColabMagicError(f"not enough space in Drive for the archive: {error}") from None


# --------------------------------------------------------------------------- copy, check


@dataclass
class Output:
    """What this run has written to Drive, so that a failure can take it back."""

    partials: list[Path] = field(default_factory=list)
    renamed: list[Path] = field(default_factory=list)
    published: list[tuple[Path, Path, int]] = field(default_factory=list)  # partial, final, bytes
    had_previous: bool = False
    touched_previous: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)  # set: being abandoned


def upload(
    local: Path, final: Path, out: Output, *, quiet: bool, retries: int | None = None
) -> Path:
    """Copy LOCAL to FINAL's partial name in Drive, in large writes, fsynced; return
    that name.  A Drive drop-out starts the copy over (the one retry policy)."""
    from .. import progress

    partial = fsio.partial_of(final)
    length = local.stat().st_size
    if partial not in out.partials:
        out.partials.append(partial)

    def chunks(src: object) -> object:
        while chunk := src.read(UPLOAD_CHUNK):  # type: ignore[attr-defined]
            if out.cancel.is_set():
                raise StepFailed("copying to Drive", "stopped")
            yield chunk

    def attempt() -> None:
        bar = progress.bar(length, f"to Drive: {final.name}", quiet=quiet)
        try:
            fsio.remove_quietly(partial)  # a leftover, or the previous try's
            with open(local, "rb") as src, fsio.create_file(partial) as dst:
                fsio.copy_chunks(chunks(src), dst, on_chunk=bar.update)
                fsio.fsync(dst)
        finally:
            bar.close()

    try:
        source.retrying(attempt, what=f'copying "{final.name}" to Drive', count=retries)
    except source.DriveDropped as dropped:
        raise StepFailed("copying to Drive", gave_up(dropped, retries)) from None
    except OSError as error:
        raise StepFailed("copying to Drive", str(error)) from None
    return partial


def verify(path: Path, fmt: str, members: list[Member]) -> None:
    """Re-open the copy in Drive: same member names and sizes in the same order, and
    the bytes of a sample of members match the CRC of what was read from the folder."""
    import tarfile
    import zipfile
    import zlib

    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as archive:
                listed = [(i.filename, i.file_size) for i in archive.infolist()]
                _compare(path, listed, members)
                for m in _sample(members):
                    if zlib.crc32(archive.read(m.name)) != m.crc:
                        raise StepFailed("verifying the copy in Drive", f"{m.name}: wrong bytes")
        else:
            # tarfile reads a 512-byte header per member and seeks past the data.  Each
            # read is a round trip to Drive (~1.5 ms on the simulated one): for small
            # members, reading the whole copy in large reads costs less than one trip
            # per member (2,000 members of 24 kB: 1.0 s instead of 3.0 s).
            average = sum(m.size for m in members) // max(1, len(members))
            buffering = VERIFY_BUFFER if average <= SMALL_MEMBERS else -1
            with (
                open(path, "rb", buffering=buffering) as raw,
                tarfile.open(fileobj=raw, mode="r:") as archive,
            ):
                infos = archive.getmembers()
                _compare(path, [(i.name, i.size) for i in infos], members)
                by_name = {i.name: i for i in infos}
                for m in _sample(members):
                    data = archive.extractfile(by_name[m.name]).read()
                    if zlib.crc32(data) != m.crc:
                        raise StepFailed("verifying the copy in Drive", f"{m.name}: wrong bytes")
    except StepFailed:
        raise
    except Exception as error:  # OSError, BadZipFile, TarError, EOFError, a missing member
        raise StepFailed("verifying the copy in Drive", f"{path.name}: {error}") from None


def _compare(path: Path, listed: list[tuple[str, int]], members: list[Member]) -> None:
    if len(listed) != len(members):
        raise StepFailed(
            "verifying the copy in Drive",
            f"{path.name} lists {len(listed):,} members, {len(members):,} were written",
        )
    for (name, length), m in zip(listed, members, strict=True):
        if name != m.name or length != m.size:
            raise StepFailed(
                "verifying the copy in Drive",
                f"{path.name}: {name} ({length:,} bytes) where {m.name} ({m.size:,}) was written",
            )


def _sample(members: list[Member]) -> list[Member]:
    """Up to VERIFY_SAMPLE files spread over the archive, first and last included."""
    files = [m for m in members if m.crc is not None and m.size <= VERIFY_MAX_MEMBER]
    if len(files) <= VERIFY_SAMPLE:
        return files
    step = (len(files) - 1) / (VERIFY_SAMPLE - 1)
    return [files[round(i * step)] for i in range(VERIFY_SAMPLE)]


# --------------------------------------------------------------------------- into place


def put_in_place(where: Plan, out: Output, previous: dict | None, archives: list[Path]) -> None:
    """Rename every verified copy over its final name (the old sidecar goes first: it
    no longer describes what is there), then drop shards of the previous build that
    the new one does not have."""
    step = "renaming into place"
    try:
        if previous is not None:
            out.touched_previous = True
            where.sidecar.unlink(missing_ok=True)
        for partial, final, length in out.published:
            os.replace(partial, final)
            out.partials.remove(partial)
            out.renamed.append(final)
            if final.stat().st_size != length:
                raise StepFailed(step, f"{final.name} has the wrong size after the rename")
    except OSError as error:
        raise StepFailed(step, str(error)) from None
    if previous is not None:
        _remove_stale_shards(where, previous, archives)


def _remove_stale_shards(where: Plan, previous: dict, archives: list[Path]) -> None:
    """Shards of the previous build beyond the new count would be staged by the glob."""
    keep = {a.name for a in archives}
    for old in previous.get("archives", []):
        name = old.get("name", "")
        if name not in keep and "/" not in name and name.endswith(".tar"):
            with contextlib.suppress(OSError):
                (where.sidecar.parent / name).unlink(missing_ok=True)


def take_back(out: Output, where: Plan) -> str:
    """Remove every .partial and every renamed archive of this run; say what was left."""
    if out.renamed:
        with contextlib.suppress(OSError):
            where.sidecar.unlink(missing_ok=True)
    left = []
    for path in out.partials + out.renamed:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            left.append(f"could not remove {drive.shown(path)}: {error}")
    if left:
        return "; ".join(left)
    if out.touched_previous:
        return "nothing of this run was left in Drive, and the previous archive is gone"
    if out.had_previous:
        return "nothing of this run was left in Drive; the previous archive is as it was"
    return "nothing was left in Drive"
