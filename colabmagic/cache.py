"""cache(): run a slow cell once, keep its outputs in Drive, restore them next session.

The recipe it replaces: compile darknet, ``!cp`` the binary into Drive, then in every
later session comment the build out and ``!cp`` + ``!chmod +x`` the binary back.

- The key is a sha256 of the cell's source, its ``--outputs`` and ``--key``; an entry is
  ``DRIVE_DIR/<key16>.tar.zst`` (``.tar.gz`` without zstandard) plus ``<key16>.json``.
- **Miss**: the cell runs; only if it succeeded are its outputs packed (modes, exec
  bits and links inside the outputs kept) into a tar on local disk, copied to Drive as
  ``.partial``, checked against its sha256, and renamed; the JSON is written last, so
  an entry without one does not exist.
- **Hit**: the cell does not run.  Every member of the archive must lie inside a
  declared output (a tampered or mistaken entry is refused before anything is
  written); then ``staging.stage(..., force=True)`` unpacks it, so the merge into
  existing folders and the backups of replaced files are stage's own.

Outputs are grouped by the folder they are restored into (a *root*): relative outputs
into the working directory at the start of the cell, an absolute one into its parent
folder.  One archive per root: one archive in the usual case.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import drive, fsio, interrupts, source
from .errors import ColabMagicError
from .results import Result, duration, size

LOCAL = Path(tempfile.gettempdir()) / "colabmagic-cache"  # archives on their way in
KEY_CHARS = 16  # of the sha256, in entry names: 64 bits, no collisions in a cache folder
FORMAT = 1  # of the JSON record; a newer one is treated as a miss


@dataclass(frozen=True, repr=False)
class CacheResult(Result):
    """What `%%cache` did: ran the cell (and cached it), restored its outputs, or cleared."""

    action: str  # "ran", "restored", "rerun", "present" (nothing to do) or "cleared"
    key: str  # the first 16 hex digits of the key: the entry's name in DRIVE_DIR
    outputs: tuple[Path, ...]
    bytes: int  # of the outputs, unpacked
    seconds: float  # what this call took
    saved_seconds: float | None = None  # the cell's recorded time less the restore's
    drive_dir: Path | None = None
    archive_bytes: int = 0  # of the entry in Drive
    cell_seconds: float | None = None  # what the cell took when it ran
    cached_at: str | None = None  # ISO time of the run that made the entry
    warnings: tuple[str, ...] = ()

    title = "%%cache"

    def summary(self) -> str:
        n = f"{len(self.outputs)} output{'s' if len(self.outputs) != 1 else ''}"
        if self.action == "restored":
            line = f"restored {n} ({size(self.bytes)}) in {duration(self.seconds)}"
            if self.cell_seconds is not None:
                line += f"; the cell took {duration(self.cell_seconds)} when cached"
                if self.cached_at:
                    line += f" on {self.cached_at}"
            return line
        if self.action == "cleared":
            return f"cleared entry {self.key}; the cell was not run"
        if self.action == "present":
            return (
                f"{n} already in place as cached (same names and sizes): nothing "
                "restored; --force runs the cell again"
            )
        verb = "ran the cell" if self.action == "ran" else "ran the cell again"
        return (
            f"{verb} in {duration(self.cell_seconds)} and cached {n} ({size(self.bytes)}, "
            f"{size(self.archive_bytes)} in Drive)"
        )

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("action", self.action),
            ("key", self.key),
            ("cache", drive.shown(self.drive_dir) if self.drive_dir else "unknown"),
            ("outputs", ", ".join(str(p) for p in self.outputs) or "(none)"),
        ]
        if self.action != "cleared":
            rows.append(("bytes", size(self.bytes)))
            rows.append(("in Drive", size(self.archive_bytes)))
        rows.append(("time", duration(self.seconds)))
        if self.cell_seconds is not None:
            rows.append(("cell took", duration(self.cell_seconds)))
        if self.saved_seconds is not None:
            rows.append(("saved", duration(max(self.saved_seconds, 0.0))))
        if self.cached_at:
            rows.append(("cached at", self.cached_at))
        return rows

    def notes(self) -> list[str]:
        return [self.summary(), *self.warnings]

    def __repr__(self) -> str:
        return f"CacheResult(action={self.action!r}, key={self.key!r}, bytes={self.bytes})"


def cache(
    drive_dir: str | os.PathLike,
    outputs: str | os.PathLike | Sequence[str | os.PathLike],
    run: Callable[[], Any],
    *,
    key: str | None = None,
    force: bool = False,
    clear: bool = False,
    quiet: bool = False,
    source: str | None = None,
) -> CacheResult:
    """Run RUN once and keep OUTPUTS in DRIVE_DIR; later, restore them instead of running.

    The entry is keyed by SOURCE (the code RUN stands for; by default RUN's own source
    text), OUTPUTS and KEY (a version string, say).  ``force`` runs again and replaces
    the entry; ``clear`` deletes it and runs nothing.  An exception from RUN caches
    nothing and propagates.
    """
    started = time.monotonic()
    names = (
        [os.fspath(outputs)]
        if isinstance(outputs, (str, os.PathLike))
        else [os.fspath(o) for o in outputs]
    )
    if not names:
        raise ColabMagicError("give at least one path to --outputs")
    if source is None:
        source = _source_of(run)
    digest = cache_key(source, names, key)
    short = digest[:KEY_CHARS]
    folder = drive.to_path(os.fspath(drive_dir))
    cwd = Path.cwd()
    roots = _roots(names, cwd)
    outputs_abs = tuple(_where(root, cwd) / m for root, members in roots.items() for m in members)
    record_path = folder / f"{short}.json"

    if clear:
        return _clear(folder, short, outputs_abs, started)

    record = _read_record(record_path)
    warnings: list[str] = []
    action = "ran"
    if record is not None:
        action = "rerun"
        if force:
            pass
        elif record.get("key") != digest or record.get("format") != FORMAT:
            warnings.append(f"{record_path.name} is not an entry for this cell; it is replaced")
        elif key is None and record.get("platform") != _platform():
            warnings.append(
                f"the entry was made on {record.get('platform')}, this is {_platform()}: "
                "the cell runs again (pin the entry with --key to restore it anyway)"
            )
        elif missing := _missing_archives(folder, record):
            warnings.append(f"{missing}; the cell runs again")
        else:
            with interrupts.deferred(), _local_errors("nothing was restored"):
                return _restore(folder, record, roots, cwd, outputs_abs, quiet, started)

    cell_started = time.monotonic()
    run()  # raises when the cell fails: nothing is cached
    cell_seconds = time.monotonic() - cell_started
    with interrupts.deferred(), _local_errors("nothing was cached"):
        saved = _save(folder, short, digest, names, roots, cwd, cell_seconds, quiet)
        record, unpacked, warned = saved
    return CacheResult(
        action=action,
        key=short,
        outputs=outputs_abs,
        bytes=unpacked,
        seconds=time.monotonic() - started,
        drive_dir=folder,
        archive_bytes=sum(a["archive_bytes"] for a in record["archives"]),
        cell_seconds=cell_seconds,
        cached_at=record["when"],
        warnings=tuple(warnings + warned),
    )


@contextlib.contextmanager
def _local_errors(outcome: str) -> Iterator[None]:
    """An OSError (a folder that cannot be read or written) as one line naming the path."""
    try:
        yield
    except OSError as error:
        if fsio.is_full(error):
            raise ColabMagicError(
                f"no space left on the disk ({error.strerror}); {outcome}"
            ) from None
        where = f'"{error.filename}": ' if error.filename else ""
        raise ColabMagicError(f"{where}{error.strerror or error}; {outcome}") from None


def cache_key(source: str, outputs: Sequence[str], key: str | None) -> str:
    """The sha256 (hex) that names a cell's entry: its source, outputs and --key."""
    text = "\n".join(line.rstrip() for line in source.replace("\r\n", "\n").strip().split("\n"))
    blob = json.dumps({"source": text, "outputs": list(outputs), "key": key}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cell_runner(shell: Any, cell: str) -> Callable[[], None]:
    """RUN for `%%cache`: CELL in SHELL as typed (``!`` lines, ``%cd``, Python), raising
    when it failed, so that a failed build is never cached.

    A ``!`` command that fails does not fail the cell in IPython; its status is in
    ``_exit_code``, so a non-zero status of the cell's last ``!`` command counts as a
    failure too (a ``make`` that stopped half-way leaves outputs that look whole).
    """

    def run() -> None:
        shell.user_ns["_exit_code"] = 0
        result = shell.run_cell(cell)
        if not result.success:
            raise ColabMagicError("the cell failed (see above); nothing was cached")
        status = shell.user_ns.get("_exit_code", 0)
        if status:
            raise ColabMagicError(
                f"the cell's last ! command exited with status {status}; nothing was cached"
            )

    return run


# --------------------------------------------------------------------------- entries


def _source_of(run: Callable[[], Any]) -> str:
    import inspect

    try:
        return inspect.getsource(run)
    except (OSError, TypeError):
        return getattr(run, "__qualname__", repr(run))


def _platform() -> str:
    """What a built output depends on: the Python minor version, the OS and the CPU."""
    return f"{platform.system()}-{platform.machine()}-py{sys.version_info[0]}.{sys.version_info[1]}"


def _roots(names: list[str], cwd: Path) -> dict[str, list[str]]:
    """{root folder: [member names]}: where each output is restored, and as what.

    Relative outputs are restored into the working directory of the session that
    restores them (root ``"."``: a new VM's ``/content``, wherever it was cached);
    absolute ones (and relative ones that climb out with ``..``) into the deepest
    folder that holds them all (``/usr/local`` for ``/usr/local/lib/x.so`` and
    ``/usr/local/include``), or, where that is ``/``, each into its own parent.
    """
    inside: list[str] = []
    outside: list[Path] = []
    for text in names:
        path = Path(os.path.normpath(cwd / Path(text).expanduser()))
        if path == cwd:
            raise ColabMagicError(
                f'cannot cache "{text}": it is the working directory itself; name what in it'
            )
        if path == path.parent:
            raise ColabMagicError(f'cannot cache "{text}": it is the whole file system')
        if not Path(text).expanduser().is_absolute() and path.is_relative_to(cwd):
            inside.append(path.relative_to(cwd).as_posix())
        else:
            outside.append(path)
    roots: dict[str, list[str]] = {".": inside} if inside else {}
    common = Path(os.path.commonpath([p.parent for p in outside])) if outside else None
    for path in outside:
        root = common if common is not None and common != common.parent else path.parent
        roots.setdefault(str(root), []).append(path.relative_to(root).as_posix())
    for members in roots.values():
        members[:] = list(dict.fromkeys(members))
        for member in members:
            for other in members:
                if other != member and member.startswith(other + "/"):
                    raise ColabMagicError(
                        f'--outputs names "{member}" and "{other}", which holds it; '
                        f'give only "{other}"'
                    )
    return roots


def _where(root: str, cwd: Path) -> Path:
    """The folder a root of `_roots` names: "." is the working directory."""
    return cwd if root == "." else Path(root)


def _archive_suffix() -> tuple[str, str]:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return ".tar.gz", "gz"
    return ".tar.zst", "zst"


def _read_record(path: Path) -> dict | None:
    try:
        text = source.retrying(path.read_text, what=f'reading "{path}"')
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ColabMagicError(f'cannot read "{path}": {error.strerror}') from None
    try:
        record = json.loads(text)
    except ValueError:
        return {}  # a damaged record: a miss that replaces it
    return record if isinstance(record, dict) else {}


def _missing_archives(folder: Path, record: dict) -> str | None:
    for archive in record.get("archives", []):
        path = folder / str(archive.get("name", ""))
        if path.name.endswith(".zst") and _archive_suffix()[1] != "zst":
            return f"{path.name} needs zstandard to be read (pip install zstandard)"
        try:
            st = path.stat()
        except OSError:
            return f"{path.name} of the entry is missing from Drive"
        if st.st_size != archive.get("archive_bytes"):
            return f"{path.name} in Drive is not the size its record says"
    return None if record.get("archives") else "the entry's record lists no archive"


def _entry_files(folder: Path, short: str) -> list[str]:
    """The files of entry SHORT in FOLDER: its record, archives and leftover partials."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith((short + ".", short + "-"))]


def _clear(folder: Path, short: str, outputs: tuple[Path, ...], started: float) -> CacheResult:
    removed = []
    freed = 0
    for entry in _entry_files(folder, short):
        path = folder / entry
        with contextlib.suppress(OSError):
            freed += path.stat().st_size
        source.retrying(lambda p=path: p.unlink(missing_ok=True), what=f'deleting "{path}"')
        removed.append(entry)
    if removed:
        note = (
            f"deleted {', '.join(removed)} ({size(freed)}) from {drive.shown(folder)}; "
            "Drive keeps deleted files in its trash, where they count against your quota "
            "until it is emptied (30 days)"
        )
    else:
        note = f"no entry {short} in {drive.shown(folder)}: nothing to clear"
    return CacheResult(
        action="cleared",
        key=short,
        outputs=outputs,
        bytes=0,
        seconds=time.monotonic() - started,
        drive_dir=folder,
        archive_bytes=freed,
        warnings=(note,),
    )


# --------------------------------------------------------------------------- packing


def _save(
    folder: Path,
    short: str,
    digest: str,
    names: list[str],
    roots: dict[str, list[str]],
    cwd: Path,
    cell_seconds: float,
    quiet: bool,
) -> tuple[dict, int, list[str]]:
    """Pack each root's outputs, put the archives in Drive, then the record."""
    suffix, compression = _archive_suffix()
    warnings: list[str] = []
    for root, members in roots.items():
        for member in members:
            if not os.path.lexists(_where(root, cwd) / member):
                raise ColabMagicError(
                    f'output "{_where(root, cwd) / member}" does not exist after the cell ran; '
                    "nothing was cached"
                )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColabMagicError(f'cannot create "{folder}": {error.strerror}') from None
    # An old entry's record goes first: cut short, the rewrite leaves no record that
    # names archives it has already replaced.
    old_record = folder / f"{short}.json"
    source.retrying(lambda: old_record.unlink(missing_ok=True), what=f'deleting "{old_record}"')
    archives = []
    unpacked = 0
    with tempfile.TemporaryDirectory(prefix="colabmagic-cache-") as work:
        for index, (root, members) in enumerate(roots.items()):
            name = f"{short}{suffix}" if index == 0 else f"{short}-{index}{suffix}"
            local = Path(work) / name
            packed = _pack(_where(root, cwd), members, local, compression, warnings)
            sha = _sha256_file(local)
            archive_bytes = local.stat().st_size
            _upload(local, folder / name, sha, archive_bytes, quiet)
            unpacked += packed["bytes"]
            archives.append(
                {
                    "name": name,
                    "root": root,
                    "outputs": members,
                    "sha256": sha,
                    "archive_bytes": archive_bytes,
                    **packed,
                }
            )
    record = {
        "format": FORMAT,
        "key": digest,
        "outputs": names,
        "archives": archives,
        "bytes": unpacked,
        "seconds": round(cell_seconds, 3),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "platform": _platform(),
    }
    path = folder / f"{short}.json"
    text = json.dumps(record, indent=1)
    source.retrying(lambda: fsio.write_text_atomic(path, text), what=f'writing "{path}"')
    kept = {path.name, *(a["name"] for a in archives)}
    for entry in _entry_files(folder, short):
        if entry not in kept:  # an older entry's archive (another format, more roots)
            source.retrying(lambda e=entry: (folder / e).unlink(missing_ok=True), what=entry)
    return record, unpacked, warnings


def _pack(root: Path, members: list[str], out: Path, compression: str, warnings: list[str]) -> dict:
    """Write ROOT's MEMBERS as a tar (compressed) to OUT; {"files", "bytes", "sizes"}.

    Names are checked as stage checks them, so that no entry is made that stage would
    refuse.  A link is kept as a link when its target lies inside the outputs; a link
    to a file elsewhere is stored as that file's bytes, with a warning.
    """
    import tarfile

    from .unpack.members import clean_name

    entries = list(_walk(root, members))
    need = sum(st.st_size for _, st in entries if stat.S_ISREG(st.st_mode))
    fsio.require_free(out.parent, need)
    files = total = 0
    sizes = {member: 0 for member in members}
    lines: list[str] = []  # what a restore puts on disk: see _listing
    with (
        fsio.create_file(out) as raw,
        _compressor(raw, compression) as stream,
        tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name, st in entries:
            interrupts.check()
            try:
                clean_name(name, is_dir=stat.S_ISDIR(st.st_mode))
            except ColabMagicError as error:
                raise ColabMagicError(f"cannot cache {root / name}: {error}") from None
            info = tarfile.TarInfo(name)
            info.mtime = int(st.st_mtime)
            info.mode = stat.S_IMODE(st.st_mode)
            top = next(m for m in members if name == m or name.startswith(m + "/"))
            path = root / name
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                inside = _link_inside(root, name, target, members)
                if inside is not None:
                    info.type, info.linkname = tarfile.SYMTYPE, inside
                    archive.addfile(info)
                    lines.append(f"{name}\0link\0{inside}")
                    continue
                try:
                    st = path.stat()
                except OSError:
                    raise ColabMagicError(
                        f'cannot cache the link "{path}" -> "{target}": its target is missing'
                    ) from None
                if not stat.S_ISREG(st.st_mode):
                    raise ColabMagicError(
                        f'cannot cache the link "{path}" -> "{target}": it points outside the '
                        "outputs, at a folder; add that folder to --outputs"
                    )
                warnings.append(
                    f'"{path}" links to "{target}", outside the outputs: its bytes were cached'
                )
                info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
                lines.append(f"{name}\0dir")
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as data:
                    info.size = os.fstat(data.fileno()).st_size
                    archive.addfile(info, data)
                lines.append(f"{name}\0file\0{info.size}\0{info.mode & 0o100:o}")
                files += 1
                total += info.size
                sizes[top] += info.size
            else:
                raise ColabMagicError(f'cannot cache "{path}": not a file, folder or link')
    return {"files": files, "bytes": total, "sizes": sizes, "listing": _digest(lines)}


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def _listing(root: Path, members: list[str]) -> str | None:
    """The digest `_pack` records, of what is on disk now: names, kinds, sizes, exec
    bits and link targets (not times: a restore does not keep them); None if an
    output is missing."""
    lines = []
    try:
        for name, st in _walk(root, members):
            if stat.S_ISLNK(st.st_mode):
                lines.append(f"{name}\0link\0{os.readlink(root / name)}")
            elif stat.S_ISDIR(st.st_mode):
                lines.append(f"{name}\0dir")
            else:
                lines.append(f"{name}\0file\0{st.st_size}\0{st.st_mode & 0o100:o}")
    except OSError:
        return None
    return _digest(lines)


def _walk(root: Path, members: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    """(name, lstat) of each output and everything under it, parents first, sorted."""
    for member in members:
        path = root / member
        st = os.lstat(path)
        yield member, st
        if not stat.S_ISDIR(st.st_mode):
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            base = Path(dirpath).relative_to(root).as_posix()
            for name in sorted(dirnames + filenames):
                yield f"{base}/{name}", os.lstat(os.path.join(dirpath, name))


def _link_inside(root: Path, name: str, target: str, members: list[str]) -> str | None:
    """TARGET as a relative link when it lies inside one of MEMBERS, else None."""
    link_dir = (root / name).parent
    resolved = Path(os.path.normpath(link_dir / target))
    try:
        rel = resolved.relative_to(root).as_posix()
    except ValueError:
        return None
    if not any(rel == m or rel.startswith(m + "/") for m in members):
        return None
    return target if not os.path.isabs(target) else os.path.relpath(resolved, link_dir)


@contextlib.contextmanager
def _compressor(raw: Any, compression: str) -> Iterator[Any]:
    if compression == "zst":
        import zstandard

        writer = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        try:
            yield writer
        finally:
            writer.close()
    else:
        import gzip

        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as writer:
            yield writer


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as data:
        while chunk := data.read(fsio.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _upload(local: Path, target: Path, sha: str, nbytes: int, quiet: bool) -> None:
    """Copy LOCAL to TARGET in Drive through TARGET.partial, checked before the rename."""
    from .progress import bar

    def chunks() -> Iterator[bytes]:
        with open(local, "rb", buffering=0) as data:
            while chunk := data.read(fsio.CHUNK):
                yield chunk

    def verify(partial: Path) -> None:
        if _sha256_file(partial) != sha:
            raise ColabMagicError(f'"{partial}" does not read back as written; nothing was cached')

    progress = bar(nbytes, f"cache {target.name}", quiet=quiet)

    def on_chunk(n: int) -> None:
        progress.update(n)
        interrupts.check()

    try:
        source.retrying(
            lambda: fsio.atomic_copy(
                chunks(), target, size=nbytes, on_chunk=on_chunk, before_publish=verify
            ),
            what=f'writing "{target}"',
        )
    finally:
        progress.close()


# --------------------------------------------------------------------------- restoring


def _restore(
    folder: Path,
    record: dict,
    roots: dict[str, list[str]],
    cwd: Path,
    outputs: tuple[Path, ...],
    quiet: bool,
    started: float,
) -> CacheResult:
    """Vet every archive of RECORD against the declared outputs, then stage each."""
    from .staging import stage

    wanted = {}
    for archive in record["archives"]:
        root = archive.get("root")
        if root not in roots or sorted(archive.get("outputs", [])) != sorted(roots[root]):
            raise ColabMagicError(
                f"{archive.get('name')} in {drive.shown(folder)} does not match --outputs; "
                "use --force to rebuild it"
            )
        wanted[archive["name"]] = (_where(root, cwd), roots[root], archive)
    if all(
        archive.get("listing") == _listing(root, members)
        for root, members, archive in wanted.values()
    ):
        # A second run in the same session: restoring again would only fill
        # .colabmagic/replaced/ with copies of the same files.
        return CacheResult(
            action="present",
            key=record["key"][:KEY_CHARS],
            outputs=outputs,
            bytes=sum(a.get("bytes", 0) for a in record["archives"]),
            seconds=time.monotonic() - started,
            drive_dir=folder,
            archive_bytes=sum(a["archive_bytes"] for a in record["archives"]),
            cell_seconds=record.get("seconds"),
            cached_at=record.get("when"),
        )
    # Each archive is read from Drive once: checked while it is copied to local disk,
    # then staged from there (a second read from Drive would cost as much again).
    LOCAL.mkdir(parents=True, exist_ok=True)
    fsio.require_free(LOCAL, sum(a["archive_bytes"] for a in record["archives"]))
    unpacked = 0
    warnings: list[str] = []
    try:
        for name, (_, members, archive) in wanted.items():
            _fetch(folder / name, LOCAL / name, members, archive["sha256"], quiet)
        for name, (root, _, archive) in wanted.items():
            result = stage(LOCAL / name, to=root, force=True, quiet=True, sha256=archive["sha256"])
            unpacked += result.bytes
            warnings += list(result.warnings)
    finally:
        for name in wanted:
            fsio.remove_quietly(LOCAL / name)
    seconds = time.monotonic() - started
    cell_seconds = record.get("seconds")
    return CacheResult(
        action="restored",
        key=record["key"][:KEY_CHARS],
        outputs=outputs,
        bytes=unpacked,
        seconds=seconds,
        saved_seconds=None if cell_seconds is None else cell_seconds - seconds,
        drive_dir=folder,
        archive_bytes=sum(a["archive_bytes"] for a in record["archives"]),
        cell_seconds=cell_seconds,
        cached_at=record.get("when"),
        warnings=tuple(warnings),
    )


def _fetch(path: Path, local: Path, members: list[str], sha: str, quiet: bool) -> None:
    """Copy PATH to LOCAL, refusing it unless every member lies inside MEMBERS and its
    bytes hash to SHA (LOCAL is then left absent)."""
    from .progress import bar
    from .source import Prefetch, SourceFile
    from .unpack.stream import Stream, decompressed
    from .unpack.tar import tar_members

    compression = "zst" if path.name.endswith(".zst") else "gz"
    digest = hashlib.sha256()
    reader = SourceFile(path)
    progress = bar(reader.size, f"restore {path.name}", quiet=quiet)

    def raw(out: Any) -> Iterator[bytes]:
        for chunk in reader.chunks():  # in Prefetch's thread: hashing overlaps the check
            digest.update(chunk)
            fsio.write_all(out, chunk)
            progress.update(len(chunk))
            yield chunk

    parents = {"/".join(m.split("/")[:i]) for m in members for i in range(1, m.count("/") + 1)}
    try:
        with fsio.atomic_write(local, sync=False) as out, Prefetch(raw(out)) as chunks:
            stream = Stream(decompressed(chunks, compression))
            for member, _ in tar_members(stream):
                interrupts.check()
                name = member.name
                if any(name == m or name.startswith(m + "/") for m in members):
                    continue
                if name in parents and member.kind == "dir":
                    continue
                raise ColabMagicError(
                    f'{path.name} holds "{name}", which is not inside --outputs '
                    f"({', '.join(members)}); nothing was restored"
                )
            stream.skip(1 << 62)
            if digest.hexdigest() != sha:
                raise ColabMagicError(
                    f"{path.name} in Drive does not match its record (sha256 differs); "
                    "nothing was restored; use --force to rebuild it"
                )
    finally:
        reader.close()
        progress.close()
