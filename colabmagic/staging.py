"""stage(): bring an archive, folder or file from Drive to local disk, once.

The shape of one stage, whatever the source:
1. lock DIR (exclusively) and every folder above it (shared), so that no other stage
   that can touch DIR's entries runs meanwhile, and clear what an interrupted run
   left in ``DIR/.colabmagic/``;
2. skip at once if the marker says this source (same size and mtime) is staged and
   every path it made is still there as it was left (its manifest);
3. write everything under ``DIR/.colabmagic/tmp-*``: archives are unpacked while they
   stream in from Drive, folders copied with many reads in flight.  A glob's matches
   all go through one Plan and one Writer: they are one unit;
4. judge the links against DIR's own entries, journal the marker, and merge the work
   folder into DIR as one transaction (`unpack.place`): each rename a no-replace
   rename, everything undone on failure, what is in the way replaced only when the
   previous stage of this source made it (or with --force), and then kept.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import drive, fsio, interrupts, ranged
from .errors import ColabMagicError
from .results import StageResult, size
from .source import WORKERS, Prefetch, SourceFile
from .source import retries as retries_in_force
from .source import workers as valid_workers

STATE_DIR = ".colabmagic"
FORMATS = ("auto", "zip", "tar", "file")

_COMPRESSED_TAR = {
    ".tar.gz": "gz",
    ".tgz": "gz",
    ".tar.bz2": "bz2",
    ".tbz2": "bz2",
    ".tbz": "bz2",
    ".tar.xz": "xz",
    ".txz": "xz",
    ".tar.zst": "zst",
    ".tzst": "zst",
}
_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zst"}


def stage(
    src: str | os.PathLike,
    to: str | os.PathLike | None = None,
    *,
    force: bool = False,
    keep_archive: bool = False,
    sha256: str | None = None,
    workers: int = WORKERS,
    quiet: bool = False,
    retries: int | None = None,
    format: str = "auto",
    allow_ratio: bool = False,
    streams: int | None = None,
) -> StageResult:
    """Bring SRC from Drive to local disk once; a StageResult says what was done.

    SRC is an archive (unpacked into TO, default the working directory), a folder
    (copied to TO/<name>), a file (copied) or a glob (each match).  Nothing in TO is
    replaced unless it was staged from the same source, or ``force`` is set.
    RETRIES is the count of Drive retries (None: the count in force).  STREAMS is how
    many ranged readers read one archive at once (None: `ranged.chosen` decides).
    """
    text = os.fspath(src)
    workers = valid_workers(workers)  # the one --workers check, as every twin does
    streams = ranged.valid(streams)
    if format not in FORMATS:
        raise ColabMagicError(f"--format must be one of {', '.join(FORMATS)}")
    if sha256 is not None and not _is_sha256(sha256):
        raise ColabMagicError("--sha256 takes 64 hexadecimal digits")
    sources = drive.resolve_glob(text)
    if sha256 is not None and len(sources) > 1:
        raise ColabMagicError("--sha256 checks a single source, not a glob")
    dest = _target(to)
    retries = retries_in_force(retries)
    options = _Options(
        force, keep_archive, sha256, workers, quiet, retries, format, allow_ratio, streams
    )
    # A glob is one unit: its matches (WebDataset shards, say) may share a top-level
    # folder, so they are unpacked into one work folder and moved into place together.
    label = Path(os.path.abspath(drive.to_path(text))) if glob.has_magic(text) else sources[0]
    in_drive = _in_drive(dest)
    try:
        with interrupts.deferred(), _locked(dest):
            result = _stage_sources(sources, label, dest, options)
    except OSError as error:
        # A local error nothing above turned into words (a read-only DIR, EACCES on a
        # folder of it, a file system that refuses renames): one line, DIR as it was.
        raise ColabMagicError(_os_error(error, dest)) from None
    if in_drive and result.action != "skipped":
        import dataclasses

        note = (
            f"{drive.shown(dest)} is in Drive: unpacking many files into Drive is the slow "
            "pattern %stage exists to avoid (each file costs Drive a round trip); stage to "
            "local disk instead, and use %packdrive to go the other way"
        )
        result = dataclasses.replace(result, warnings=(*result.warnings, note))
    return result


@dataclass(frozen=True)
class _Options:
    force: bool
    keep_archive: bool
    sha256: str | None
    workers: int
    quiet: bool
    retries: int
    format: str
    allow_ratio: bool
    streams: int | None = None


@dataclass
class _Outcome:
    """What unpacking or copying into the work folder produced."""

    names: list[str] = field(default_factory=list)  # top-level names, in order
    files: int = 0
    bytes: int = 0
    read: int = 0
    digest: str | None = None
    warnings: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (member, target)

    def add(self, other: _Outcome) -> None:
        """Fold in what one more source of a glob produced."""
        self.names += [name for name in other.names if name not in self.names]
        self.files += other.files
        self.bytes += other.bytes
        self.read += other.read
        self.warnings += other.warnings


def _in_drive(path: Path) -> bool:
    root = drive.current_root()
    if root is None:
        return False
    real = os.path.realpath(path)
    top = os.path.realpath(root)
    return real == top or real.startswith(top + os.sep)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _os_error(error: OSError, dest: Path) -> str:
    where = error.filename if error.filename else dest
    cause = error.strerror or str(error)
    return f'cannot stage into {dest}: "{os.fsdecode(where)}": {cause}; nothing was staged'


def _target(to: str | os.PathLike | None) -> Path:
    """--to names local disk unless it is spelled as a Drive path; created if missing."""
    if to is None:
        path = Path.cwd()
    else:
        text = os.fspath(to)
        split = drive.split_drive_prefix(text.strip())
        path = drive.to_path(text) if split else Path(text).expanduser()
    if os.path.lexists(path) and not path.is_dir():
        raise ColabMagicError(
            f'--to "{path}" is a file, not a folder: name the folder to stage into'
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ColabMagicError(f'cannot create "{path}": {error.strerror}') from None
    if not path.is_dir():
        raise ColabMagicError(f'"{path}" is not a folder')
    return path.resolve()


class _locked:
    """Exclusive locks on DIR, shared ones on each folder above it, held for the whole
    stage: a stage into DIR and one into DIR/sub (which touch the same entries) never
    run at once, while stages into unrelated folders, or two sibling folders, do.

    The locks are LOCK_SLOTS files in one folder per user in the temporary
    directory, a folder's slot chosen by a hash of its real path, so that every
    ancestor has a lock without a ``.colabmagic`` folder being made in it, and the
    files stay few however many folders are staged into.  Two folders that share a
    slot only make two stages wait for each other.  Slots are taken in order (one
    order for every process: no deadlock), exclusively where DIR's own slot is.
    ``DIR/.colabmagic/lock`` is locked too, as it always was.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.state = dest / STATE_DIR
        self.files: list = []

    def _lock_file(self, slot: int):
        import tempfile

        folder = Path(tempfile.gettempdir()) / f"colabmagic-locks-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        # A file object, not a raw descriptor: see fsio.create_file.
        return open(folder / f"slot-{slot:03d}.lock", "ab", buffering=0)  # noqa: SIM115

    def _take(self, file, exclusive: bool, owner: Path) -> None:
        self.files.append(file)
        if _try_lock(file.fileno(), exclusive):
            return
        import sys

        print(
            f"colabmagic: another stage into {owner} is running; waiting for it",
            file=sys.stderr,
        )
        while not _try_lock(file.fileno(), exclusive):
            interrupts.sleep(interrupts.POLL)

    def __enter__(self) -> None:
        try:
            real = Path(os.path.realpath(self.dest))
            wanted: dict[int, tuple[bool, Path]] = {}
            for ancestor in real.parents:
                wanted.setdefault(_slot(ancestor), (False, ancestor))
            wanted[_slot(real)] = (True, self.dest)
            for slot in sorted(wanted):
                exclusive, owner = wanted[slot]
                self._take(self._lock_file(slot), exclusive, owner)
            self.state.mkdir(exist_ok=True)
            self._take(open(self.state / "lock", "ab", buffering=0), True, self.dest)  # noqa: SIM115
            _clear_leftovers(self.state)
        except BaseException:
            # Ctrl-C while waiting or clearing: a leaked descriptor would hold the lock,
            # and the next stage in this kernel would wait for itself forever.
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        for file in reversed(self.files):
            file.close()  # closing releases the flock
        self.files = []


LOCK_SLOTS = 4096  # two unrelated stages (DIR and 5 parents each) share a slot about 1 time in 340


def _slot(path: Path) -> int:
    return int.from_bytes(hashlib.sha1(os.fsencode(path)).digest()[:4], "big") % LOCK_SLOTS


def _try_lock(fd: int, exclusive: bool = True) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _clear_leftovers(state: Path) -> None:
    import shutil

    for leftover in state.iterdir():
        if leftover.name.startswith(("tmp-", "trash-")):
            shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------- markers


def _marker_path(dest: Path, source: Path) -> Path:
    key = hashlib.sha1(os.fsencode(source.absolute())).hexdigest()[:16]
    return dest / STATE_DIR / f"marker-{key}.json"


def _read_marker(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    at = text.find(_MANIFEST_KEY)
    if at >= 0:
        # The manifest (a million paths, maybe) is read into a compact Manifest as it
        # is parsed, not into a dict of lists first.
        try:
            manifest, end = _scan_manifest(text, at + len(_MANIFEST_KEY))
            head, tail = text[:at], text[end:]
            if head.endswith(","):
                head = head[:-1]
            elif tail.startswith(","):
                tail = tail[1:]
            marker = json.loads(head + tail)
            if isinstance(marker, dict) and "manifest" not in marker:
                marker["manifest"] = manifest
                return marker
        except (ValueError, IndexError):
            pass  # not as _write_marker writes it: json reads it whole
    try:
        marker = json.loads(text)
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


_MANIFEST_KEY = '"manifest":{'


def _scan_manifest(text: str, pos: int):
    """The Manifest whose members start at POS in TEXT, and the index past its "}"."""
    import re
    from json.decoder import scanstring

    from .unpack.place import Manifest

    record = re.compile(r'\["([dfl])",(\d+),(-?\d+)\]')
    manifest = Manifest()
    if text[pos] == "}":
        return manifest, pos + 1
    while True:
        if text[pos] != '"':
            raise ValueError(pos)
        rel, pos = scanstring(text, pos + 1)
        found = record.match(text, pos + 1) if text[pos] == ":" else None
        if found is None:
            raise ValueError(pos)
        manifest.set(rel, [found[1], int(found[2]), int(found[3])])
        pos = found.end()
        if text[pos] == "}":
            return manifest, pos + 1
        if text[pos] != ",":
            raise ValueError(pos)
        pos += 1


def _write_marker(path: Path, marker: dict) -> None:
    """MARKER as JSON at PATH.  Its manifest, a Manifest or (made, previous) whose
    union it records, is written last and a few thousand paths at a time."""
    from .unpack.place import Manifest

    recorded = marker.get("manifest")
    if not isinstance(recorded, (Manifest, tuple)):
        fsio.write_text_atomic(path, json.dumps(marker, separators=(",", ":")))
        return
    made, previous = recorded if isinstance(recorded, tuple) else (recorded, {})
    head = json.dumps({k: v for k, v in marker.items() if k != "manifest"}, separators=(",", ":"))
    with fsio.atomic_write(path) as out:
        fsio.write_all(out, (head[:-1] + ("," if len(head) > 2 else "") + _MANIFEST_KEY).encode())
        chunks = Manifest.of(made).json_chunks()
        if previous:
            import itertools

            older = Manifest.of(previous).json_chunks(skip=made)
            chunks = itertools.chain(chunks, older)
        for n, chunk in enumerate(chunks):
            fsio.write_all(out, ("," if n else "").encode() + chunk.encode())
        fsio.write_all(out, b"}}")


def _restore_marker(path: Path, marker: dict | None) -> None:
    """Put back the marker a failed stage found (or none, if there was none)."""
    if marker is None:
        fsio.remove_quietly(path)
    else:
        _write_marker(path, marker)


def _fingerprint(source: Path) -> dict:
    """What says the source is unchanged: size and mtime, or for a folder, its listing."""
    if source.is_dir():
        listing = hashlib.sha256()
        count = total = 0
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.lstat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), source)
                listing.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(errors="replace"))
                count += 1
                total += st.st_size
        return {"size": total, "files": count, "listing": listing.hexdigest()}
    st = source.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _intact(dest: Path, marker: dict) -> bool:
    """Whether everything MARKER says was staged is still in DEST as it was left: each
    path's kind, and each file's size and mtime (one lstat per path, no reads)."""
    from .unpack.place import Manifest, describe

    recorded = marker.get("manifest")
    if not isinstance(recorded, (dict, Manifest)):  # an older marker: its entries are there
        return all(os.path.lexists(dest / name) for name in marker.get("entries", []))
    base = os.fspath(dest) + os.sep  # strings, not Paths: 10,000 of them, at once
    for rel, seen in recorded.items():
        try:
            if describe(os.lstat(base + rel)) != seen:
                return False
        except OSError:
            return False
    return True


def _claims(marker: dict | None, force: bool):
    """What this stage may replace: what the previous stage of its source made."""
    from .unpack.place import Claims, Manifest

    if marker is None:
        return Claims(force=force)
    recorded = marker.get("manifest")
    if isinstance(recorded, (dict, Manifest)):
        return Claims(ours=recorded, force=force)
    return Claims(tops=set(marker.get("entries", [])), force=force)


# --------------------------------------------------------------------------- one source


def _stage_sources(sources: list[Path], label: Path, dest: Path, options: _Options) -> StageResult:
    """Stage SOURCES (one path, or a glob's matches, named LABEL) into DEST."""
    started = time.monotonic()
    sources = [source.absolute() for source in sources]
    kinds = [_detect(source, options.format, options.retries) for source in sources]
    if options.sha256 and kinds[0][0] == "folder":
        raise ColabMagicError("--sha256 checks a file or an archive, not a folder")
    marker_path = _marker_path(dest, label)
    marker = _read_marker(marker_path)
    fingerprint = {str(source): _fingerprint(source) for source in sources}
    if (
        marker is not None
        and not options.force
        and marker.get("state") == "complete"
        and marker.get("source") == str(label)
        and marker.get("fingerprint") == fingerprint
        and _intact(dest, marker)
    ):
        if options.sha256 and marker.get("sha256") != options.sha256.lower():
            raise ColabMagicError(
                f"{label.name} has sha256 {marker.get('sha256')}, not {options.sha256}"
            )
        return StageResult(
            action="skipped",
            source=label,
            dest=dest,
            files=marker.get("files", 0),
            bytes=marker.get("bytes", 0),
            archive_bytes=0,
            seconds=time.monotonic() - started,
            entries=tuple(dest / name for name in marker.get("entries", [])),
        )
    claims = _claims(marker, options.force)

    def check_top(name: str) -> None:
        """Refuse, before writing, to replace an entry this source did not stage."""
        if name == STATE_DIR:
            raise ColabMagicError(
                f'"{name}" is the name of colabmagic\'s own folder in {dest}; nothing was staged'
            )
        if not claims.may_merge_top(name) and os.path.lexists(dest / name):
            raise ColabMagicError(
                f'"{dest / name}" already exists and was not staged from {label.name}; '
                "move it away or use --force to merge into it (what is replaced is kept "
                f"in {dest.name}/{STATE_DIR}/replaced/)"
            )

    work = Path(_mkdtemp(dest / STATE_DIR, "tmp-"))
    try:
        outcome = _fill(work, sources, kinds, fingerprint, options, check_top)
        if options.sha256 and outcome.digest != options.sha256.lower():
            raise ColabMagicError(
                f"{label.name} has sha256 {outcome.digest}, not {options.sha256}: "
                "nothing was staged"
            )
        placed = _move_into_place(
            work,
            dest,
            outcome,
            claims,
            marker_path,
            marker,
            {
                "source": str(label),
                "fingerprint": fingerprint,
                "sha256": outcome.digest,
                "files": outcome.files,
                "bytes": outcome.bytes,
            },
        )
    except OSError as error:
        if not fsio.is_full(error):
            raise
        import shutil

        shutil.rmtree(work, ignore_errors=True)  # first: the free space shown is then real
        code = errno.errorcode[error.errno]
        raise ColabMagicError(
            f"no space left on the disk holding {dest} ({code}); nothing was staged and its "
            f"partial output is removed ({size(fsio.free_bytes(dest))} free); free some space or "
            "stage to another disk with --to"
        ) from None
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return StageResult(
        action="restaged" if marker is not None else "staged",
        source=label,
        dest=dest,
        files=outcome.files,
        bytes=outcome.bytes,
        archive_bytes=outcome.read,
        seconds=time.monotonic() - started,
        entries=tuple(dest / name for name in outcome.names),
        warnings=tuple(outcome.warnings),
        replaced=placed.displaced,
        replaced_to=placed.replaced_to,
    )


def _fill(work: Path, sources, kinds, fingerprint, options: _Options, check_top) -> _Outcome:
    """Unpack or copy every source into WORK, as one unit: one Plan over the members
    of every archive (names, clashes, links), one Writer whose links are made last."""
    from contextlib import ExitStack

    from .unpack import Member, Plan, Writer

    plan = Plan()
    outcome = _Outcome()
    with ExitStack() as cleanup:
        writers: list[Writer] = []

        def writer(free: int) -> Writer:
            if not writers:
                writers.append(cleanup.enter_context(Writer(work, budget=free)))
            return writers[0]

        for source, (kind, compression) in zip(sources, kinds, strict=True):
            try:
                if kind in ("folder", "file"):
                    # In the plan as one entry: no other match may write into it.
                    plan.add(Member(source.name, "file"))
                    if kind == "folder":
                        total = fingerprint[str(source)]["size"]
                        one = _copy_folder(source, work, options, check_top, total)
                    else:
                        one = _copy_file(source, work, options, check_top)
                else:
                    one = _unpack(source, work, kind, compression, options, check_top, plan, writer)
                outcome.add(one)
            except ColabMagicError as error:
                if len(sources) == 1:
                    raise
                message = _in_glob(error, source, sources)
                try:
                    named = type(error)(message)
                except TypeError:  # an error class that takes more than a message
                    named = ColabMagicError(message)
                raise named from None
        if writers:
            writers[0].finish()
            outcome.files += writers[0].files
            outcome.bytes += writers[0].written
            outcome.links = writers[0].symlinks()
    if len(sources) == 1:
        outcome.digest = one.digest  # the sha256 of the one source, for the marker
    outcome.names = list(plan.top)
    return outcome


def _in_glob(error: ColabMagicError, source: Path, sources: list[Path]) -> str:
    others = len(sources) - 1
    return (
        f"{source.name}: {error}; nothing was staged: a glob is one unit, and none of its "
        f"other {others} match{'es' if others != 1 else ''} was put in place either"
    )


def _mkdtemp(parent: Path, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent)


def _move_into_place(work, dest, outcome, claims, marker_path, previous, record):
    """Merge WORK into DEST as one transaction, journalled in the marker."""
    from .unpack import Refused, shown
    from .unpack.place import Transaction, check_links, manifest

    def escape(name: str, target: str) -> None:
        raise Refused(
            f"member {shown(name)} links to {shown(target)}, which would resolve "
            f"outside {dest} through what is already there"
        )

    # Links judged once everything is on disk and right before the moves, under the
    # lock: through the archive's own members and through DEST's entries alike.
    check_links(work, dest, outcome.links, escape)
    made = manifest(work, outcome.names)
    record.update(
        # Journal first: should the process die during the moves, the next run knows
        # these paths are ours and replaces them instead of refusing.
        entries=outcome.names,
        manifest=(made, claims.ours),  # the union: made, and what was ours before
        staged_at=time.time(),
        state="moving",
    )
    _write_marker(marker_path, record)
    try:
        with Transaction(work, dest, dest / STATE_DIR, claims) as transaction:
            transaction.expected = made
            transaction.place(outcome.names)
            transaction.remove_stale(made)
            placed = transaction.commit()
    except BaseException:
        _restore_marker(marker_path, previous)
        raise
    record["manifest"] = made
    record["state"] = "complete"
    _write_marker(marker_path, record)
    return placed


def _preflight(work: Path, need: int) -> int:
    """Free bytes where WORK is; refuse before writing when NEED does not fit."""
    # work is DIR/.colabmagic/tmp-*: name the folder the user knows
    return fsio.require_free(work, need, shown_as=str(work.parent.parent))


# --------------------------------------------------------------------------- detection


def _detect(source: Path, format: str, retries: int | None = None) -> tuple[str, str | None]:
    """("zip" | "tar" | "folder" | "file", compression of a tar or None)."""
    if source.is_dir():
        return "folder", None
    if format == "file":
        return "file", None
    name = source.name.lower()
    if format == "auto":
        if name.endswith(".zip"):
            return "zip", None
        for suffix, compression in _COMPRESSED_TAR.items():
            if name.endswith(suffix):
                return "tar", compression
        if name.endswith(".tar"):
            return "tar", None
    if format == "zip":
        return "zip", None
    reader = SourceFile(source, retries=retries)  # Drive may drop here too
    try:
        head = reader.pread(0, 4096)
        compression = next((c for magic, c in _MAGIC.items() if head.startswith(magic)), None)
        if format == "tar":
            return "tar", compression
        # Sniff what the name does not say: a tar (maybe compressed), a zip, or else a file.
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            return "zip", None
        if compression:
            from .unpack import decompressed

            try:
                head = next(decompressed(iter([head]), compression), b"")
            except ColabMagicError:
                head = b""
            return ("tar", compression) if head[257:262] == b"ustar" else ("file", None)
        if head[257:262] == b"ustar":
            return "tar", None
        tail_at = max(0, reader.size - 66000)
        if b"PK\x05\x06" in reader.pread(tail_at, reader.size - tail_at):
            return "zip", None  # a self-extracting stub with a zip after it
        return "file", None
    finally:
        reader.close()


# --------------------------------------------------------------------------- archives


def _unpack(
    source: Path,
    work: Path,
    kind: str,
    compression: str | None,
    options: _Options,
    check_top,
    plan,
    writer_for,
) -> _Outcome:
    """Unpack SOURCE into WORK through the shared PLAN and the Writer WRITER_FOR(free)
    gives (one for every archive of a glob)."""
    from contextlib import ExitStack, closing

    from . import unpack
    from .progress import bar

    outcome = _Outcome()
    digest = hashlib.sha256()
    read = [0]
    before = len(plan)
    # Released last in, first out, on success, error or Ctrl-C alike: the reader
    # threads are stopped before the file they read and the copy they write close.
    with ExitStack() as cleanup:
        reader = SourceFile(source, retries=options.retries)
        cleanup.callback(reader.close)
        keep = None
        if options.keep_archive:
            check_top(source.name)
            plan.add(unpack.Member(source.name, "file"))
            _preflight(work, reader.size)  # the copy is written from the first chunk on
            keep = cleanup.enter_context(fsio.create_file(work / source.name))
        parallel = _ranged(reader, options, cleanup)
        arriving = iter(parallel) if parallel is not None else reader.chunks()

        def raw_chunks():
            # Runs in the reader thread: hashing (and the optional copy) overlap with
            # unpacking in the caller, and hashlib releases the GIL on large chunks.
            for chunk in arriving:
                digest.update(chunk)
                if keep is not None:
                    fsio.write_all(keep, chunk)
                read[0] += len(chunk)
                yield chunk

        kept = reader.size if keep is not None else 0
        # Reading starts now: the zip index below is read and vetted while the first
        # chunks arrive, instead of before.
        chunks = cleanup.enter_context(Prefetch(raw_chunks()))
        if parallel is not None:
            # Runs before Prefetch.close joins its thread, which may be waiting on a
            # segment: stopped, the ranged readers let it go at once.
            cleanup.callback(parallel.stop)
        if kind == "zip":
            tail = reader.twin()  # its own descriptor, the same version of the file
            try:
                # Judged with every other match's members: one Plan for the glob.
                index = unpack.read_zip_index(tail.size, tail.pread, plan)
            finally:
                tail.close()
            if not options.allow_ratio:
                unpack.check_ratio(index.declared, reader.size, source.name)
            # The part of the kept copy already written is no longer free space.
            written = read[0] if keep is not None else 0
            free = _preflight(work, index.declared + kept - written)
            for name in index.new_top:
                check_top(name)
            if index.cp437_names:
                outcome.warnings.append(
                    f"{index.cp437_names} member names had no UTF-8 flag and were "
                    "decoded as cp437, as zipfile does"
                )
        else:
            # A tar's total is only known once it has been read: the running counts in
            # Writer (bytes against the free space) and ratio_capped enforce it.
            free = _preflight(work, reader.size + kept)
        progress = cleanup.enter_context(
            closing(bar(reader.size, f"stage {source.name}", quiet=options.quiet))
        )
        if compression:
            expanded = unpack.decompressed(chunks, compression)
            if not options.allow_ratio:
                expanded = unpack.ratio_capped(expanded, reader.size, source.name)
            chunks = cleanup.enter_context(Prefetch(expanded))
        stream = unpack.Stream(chunks)
        writer = writer_for(free)
        shown = 0

        def tick() -> None:
            nonlocal shown
            if read[0] - shown > (4 << 20):
                progress.update(read[0] - shown)
                shown = read[0]
                progress.set_postfix(files=writer.files, refresh=False)

        if kind == "zip":
            unpack.stream_zip(index, stream, writer, on_member=tick)
        else:
            unpack.unpack_tar(stream, writer, plan=plan, on_top=check_top, on_member=tick)
            if trailing := unpack.trailing_bytes(stream):
                outcome.warnings.append(
                    f"{trailing:,} bytes after the end of the tar archive were ignored"
                )
        stream.skip(1 << 62)  # the rest of the file: the digest covers every byte
        writer.drain()  # this archive's errors are raised while it is named
        progress.update(read[0] - shown)
    if len(plan) == before + (keep is not None):
        outcome.warnings.append(f"{source.name} is empty" if before else "the archive is empty")
    outcome.read = read[0]
    outcome.digest = digest.hexdigest()
    return outcome


def _ranged(reader: SourceFile, options: _Options, cleanup):
    """N ranged readers of READER's file (`ranged.chosen` says how many), closed by
    CLEANUP; None when one stream reads it.  Handed on in order: whoever consumes
    the bytes still sees one stream."""
    streams = ranged.chosen(options.streams, reader)
    if streams < 2 or reader.size <= ranged.SEGMENT:
        return None
    return cleanup.enter_context(ranged.Ranged(reader, streams))


# --------------------------------------------------------------------------- files, folders


def _copy_file(source: Path, work: Path, options: _Options, check_top) -> _Outcome:
    from contextlib import ExitStack, closing

    from .progress import bar

    check_top(source.name)
    digest = hashlib.sha256()

    def hashed(chunks):
        for chunk in chunks:
            digest.update(chunk)
            yield chunk

    with ExitStack() as cleanup:
        reader = SourceFile(source, retries=options.retries)
        cleanup.callback(reader.close)
        _preflight(work, reader.size)
        out = cleanup.enter_context(fsio.create_file(work / source.name))
        progress = cleanup.enter_context(
            closing(bar(reader.size, f"stage {source.name}", quiet=options.quiet))
        )
        parallel = _ranged(reader, options, cleanup)
        # Ranged reads in threads of its own; one stream needs Prefetch's thread.
        if parallel is not None:
            chunks = iter(parallel)
        else:
            chunks = cleanup.enter_context(Prefetch(reader.chunks()))
        written = fsio.copy_chunks(hashed(chunks), out, on_chunk=progress.update)
    st = source.stat()
    os.utime(work / source.name, ns=(st.st_atime_ns, st.st_mtime_ns))
    return _Outcome([source.name], 1, written, written, digest.hexdigest())


def _copy_folder(source: Path, work: Path, options: _Options, check_top, total: int) -> _Outcome:
    """Copy SOURCE to work/<name> with `workers` files in flight: Drive's per-file
    latency overlaps instead of adding up, as it does for `cp -r`."""
    from contextlib import closing

    from .progress import bar

    check_top(source.name)
    _preflight(work, total)
    top = work / source.name
    files: list[str] = []
    for dirpath, _, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        (top / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                os.symlink(os.readlink(path), top / rel / name)
            else:
                files.append(os.path.join(rel, name))
    copied = 0
    with closing(bar(total, f"stage {source.name}/", quiet=options.quiet)) as progress:
        copies = interrupts.run_all(
            lambda rel: _copy_one(source / rel, top / rel, options.retries),
            files,
            workers=options.workers,
            name="colabmagic-stage",
        )
        for done, n in enumerate(copies, 1):
            copied += n
            progress.update(n)
            if done % 256 == 0:
                progress.set_postfix(files=done, refresh=False)
    return _Outcome([source.name], len(files), copied, copied, None)


def _copy_one(src: Path, dst: Path, retries: int) -> int:
    reader = SourceFile(src, retries=retries)
    try:
        with fsio.create_file(dst) as out:
            written = fsio.copy_chunks(reader.chunks(), out)
    finally:
        reader.close()
    st = src.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return written
