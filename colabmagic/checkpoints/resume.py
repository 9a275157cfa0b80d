"""Starting a mirror: leftovers, conflicts, and the resume after a disconnect.

`clear_leftovers` removes what a killed mirror left in Drive (its ``*.partial`` names
only).  `conflicts` compares LOCAL with DRIVE_DIR unit by unit: LOCAL wins where it is
newer, else the start is refused with both paths.  `copy_back` brings every whole unit
that matches its manifest into an empty LOCAL, each unit whole.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .. import fsio, interrupts, source
from ..errors import ColabMagicError
from . import manifest
from .manifest import FileRecord
from .names import Unit, group, incomplete, walk

RESUME_WORKERS = 4  # checkpoints are few and large: a few reads in flight fill the link
MTIME_SLACK_NS = 2 * 10**9  # DriveFS keeps whole seconds

State = tuple[tuple[str, int, int], ...]  # a unit's files: (rel, size, mtime_ns)


def alike(ours: State, theirs: State) -> bool:
    return len(ours) == len(theirs) and all(
        a[0] == b[0] and a[1] == b[1] and abs(a[2] - b[2]) < MTIME_SLACK_NS
        for a, b in zip(ours, theirs, strict=True)
    )


def states_of(folder: Path, units: dict[str, Unit]) -> dict[str, State]:
    states = {}
    for key, unit in units.items():
        try:
            states[key] = tuple(
                (rel, (st := os.stat(folder / rel)).st_size, st.st_mtime_ns) for rel in unit.files
            )
        except OSError:
            continue
    return states


@dataclass(frozen=True)
class Start:
    """What a mirror start found in Drive and did about it."""

    cleared: tuple[str, ...] = ()  # leftovers of ours removed from DRIVE_DIR
    copied_back: int = 0  # files
    skipped: tuple[str, ...] = ()  # units not brought back, with why
    unverified: int = 0  # units brought back that had no manifest to check
    replaced: tuple[str, ...] = ()  # units where LOCAL is newer and replaces Drive's


def clear_leftovers(drive_dir: Path) -> tuple[str, ...]:
    """Remove what a killed mirror left in DRIVE_DIR: its ``.partial`` files and
    folders (and those of the manifests), matched by that naming only."""
    cleared = []
    for unit in group(walk(drive_dir)).values():
        if unit.kind == "leftover" and unit.key.endswith(fsio.PARTIAL):
            fsio.remove_quietly(drive_dir / unit.key)
            cleared.append(unit.key)
    manifests = manifest.folder(drive_dir)
    if manifests.is_dir():
        for rel in walk(manifests):
            if rel.endswith(fsio.PARTIAL):
                fsio.remove_quietly(manifests / rel)
    return tuple(cleared)


def conflicts(local: Path, drive_dir: Path) -> tuple[dict[str, State], set[str]]:
    """DRIVE_DIR's units, and the names where LOCAL holds a newer version.  Where
    they differ and Drive's is not older (by mtime, and matching its manifest), refuse
    with both paths: copying either way could lose the checkpoint someone wants."""
    ours = states_of(local, {k: u for k, u in group(walk(local)).items() if u.kind != "leftover"})
    drive_units = {k: u for k, u in group(walk(drive_dir)).items() if u.kind != "leftover"}
    theirs = states_of(drive_dir, drive_units)
    newer, refused = set(), []
    for key in sorted(ours.keys() & theirs.keys()):
        if alike(ours[key], theirs[key]):
            continue
        damaged = manifest.mismatch(drive_dir, manifest.read(drive_dir, key))
        if (
            damaged
            or max(m for *_, m in ours[key]) > max(m for *_, m in theirs[key]) + MTIME_SLACK_NS
        ):
            newer.add(key)
        else:
            refused.append(key)
    if refused:
        key = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise ColabMagicError(
            f'"{local / key}" and "{drive_dir / key}" differ and the copy in Drive is not '
            f"older{more}; nothing was copied: move one of them aside, or start with an "
            "empty LOCAL to resume from Drive"
        )
    return theirs, newer


def copy_back(local: Path, drive_dir: Path) -> Start:
    """Copy every whole unit of DRIVE_DIR that matches its manifest into the empty
    LOCAL (the resume after a disconnect), several at a time, each unit whole: files
    as ``.partial`` then renamed, a folder as ``NAME.partial/`` then renamed."""
    units = group(walk(drive_dir))
    skipped = []
    jobs = []
    for unit in units.values():
        if unit.kind == "leftover":
            continue
        if (reason := incomplete(unit)) is not None:
            skipped.append(f"{unit.key}: {reason}")
        else:
            jobs.append(unit)

    def fetch(unit: Unit) -> tuple[int, bool, str | None]:
        record = source.retrying(
            lambda: manifest.read(drive_dir, unit.key), what=f'reading the manifest of "{unit.key}"'
        )
        if reason := manifest.mismatch(drive_dir, record):
            return 0, False, f"{unit.key}: {reason}"
        final = local / unit.key
        staging = fsio.partial_of(final) if unit.kind == "folder" else None
        order = sorted(unit.files, key=lambda rel: rel.endswith((".index", ".index.json")))
        done = []
        try:
            for rel in order:
                dest = local / rel if staging is None else staging / rel[len(unit.key) + 1 :]
                expected = record.files.get(rel) if record is not None else None
                _fetch(drive_dir / rel, dest, expected)
                done.append(dest)
            if staging is not None:
                os.rename(staging, final)
        except _Mismatch as error:
            for path in [staging] if staging is not None else done:
                fsio.remove_quietly(path)
            return 0, False, f"{unit.key}: {error}"
        except BaseException:
            for path in [staging] if staging is not None else done:
                fsio.remove_quietly(path)
            raise
        return len(unit.files), record is None, None

    copied = unverified = 0
    for sent, bare, reason in interrupts.run_all(
        fetch, jobs, workers=RESUME_WORKERS, name="colabmagic-resume"
    ):
        copied += sent
        unverified += bool(sent and bare)
        if reason:
            skipped.append(reason)
    return Start(copied_back=copied, skipped=tuple(skipped), unverified=unverified)


class _Mismatch(Exception):
    """What came back from Drive is not what the manifest recorded."""


def _fetch(path: Path, dest: Path, expected: FileRecord | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    reader = source.SourceFile(path)
    sha = hashlib.sha256()

    def chunks():
        for chunk in reader.chunks():
            sha.update(chunk)
            yield chunk

    def check(partial: Path) -> None:
        if expected is not None and expected.sha256 and sha.hexdigest() != expected.sha256:
            raise _Mismatch(f"{path.name}'s bytes differ from its manifest (sha256)")

    try:
        st = os.stat(path)
        fsio.atomic_copy(
            chunks(),
            dest,
            size=reader.size,
            times_ns=(st.st_atime_ns, st.st_mtime_ns),
            before_publish=check,
        )
    finally:
        reader.close()


def holds_files(folder: Path) -> bool:
    """FOLDER holds a file that is not a leftover of an interrupted resume."""
    return any(not rel.endswith(fsio.PARTIAL) for rel in walk(folder))
