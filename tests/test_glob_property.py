"""Property tests for a glob staged into a folder the user already works in.

Two to five archives (zip and tar mixed) whose names, folders and links interact are
staged as one glob into a DIR that holds the user's files and the user's own links,
one of them to a folder outside DIR.  Whatever the archives hold:

- nothing outside DIR changes (a snapshot of the tree around it, deep enough that
  any chain of ".." the archives can build stays inside the snapshot);
- without --force no user file's bytes change, nor any user link;
- with --force every user file is where it was, or its bytes are kept under
  ``DIR/.colabmagic/replaced/<time>/`` at the same relative path;
- a refused glob leaves DIR exactly as it was; a staged one leaves no link in DIR
  (other than the user's) whose real location is outside DIR.

And a race: user entries created in DIR at random moments while a stage runs are
never lost.
"""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import colabmagic
from colabmagic.errors import ColabMagicError
from tests.builders import contents

DEPTH = 10  # DIR sits this deep in the snapshot box: more than any chain can climb
PARTS = ["a", "b", "s", "d1", "d2", "ulink", "uin", "notes.txt"]
FRESH = ["n1", "n2", "n3", "s", "d1", "d2"]  # names DIR does not hold
TARGETS = [
    "a",
    "b/x",
    "..",
    "../..",
    "s/..",
    "d1/..",
    "d2/../..",
    "ulink",
    "ulink/passwd",
    "uin/..",
    "uin/../..",
    "a/../../outside",
    "../" * DEPTH + "outside",
    "notes.txt",
]


def names(leaf: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A path: mostly under a name DIR does not hold, sometimes under one it does."""
    top = st.one_of(st.sampled_from(FRESH), st.sampled_from(FRESH), st.sampled_from(PARTS))
    middle = st.lists(st.sampled_from(PARTS), max_size=1)
    return st.tuples(top, middle, leaf).map(lambda t: "/".join([t[0], *t[1], t[2]]))


def entries() -> st.SearchStrategy[list[tuple[str, str, object]]]:
    files = st.integers(0, 40).map(lambda n: f"f{n}")  # rarely the same file twice
    one = st.one_of(
        st.tuples(names(files), st.just("file"), st.binary(max_size=40)),
        st.tuples(names(st.sampled_from(PARTS)), st.just("dir"), st.none()),
        st.tuples(
            st.one_of(st.sampled_from(FRESH), names(st.sampled_from(PARTS))),
            st.just("symlink"),
            st.sampled_from(TARGETS),
        ),
    )
    return st.lists(one, min_size=1, max_size=6, unique_by=lambda entry: entry[0])


ARCHIVES = st.lists(st.tuples(st.sampled_from(["zip", "tar"]), entries()), min_size=2, max_size=5)


def build(path: Path, kind: str, members: list[tuple[str, str, object]]) -> None:
    if kind == "tar":
        with tarfile.open(path, "w") as tf:
            for name, what, value in members:
                info = tarfile.TarInfo(name)
                if what == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(info)
                elif what == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, value
                    tf.addfile(info)
                else:
                    info.size = len(value)
                    tf.addfile(info, io.BytesIO(value))
        return
    with zipfile.ZipFile(path, "w") as zf:
        seen = set()
        for name, what, value in members:
            key = name + ("/" if what == "dir" else "")
            if key in seen:
                continue  # zipfile warns on duplicates; the tar half covers them
            seen.add(key)
            if what == "dir":
                zf.writestr(key, b"")
            elif what == "symlink":
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, value)
            else:
                zf.writestr(name, value)


def snapshot(folder: Path, *, skip: Path | None = None) -> dict[str, object]:
    """Everything under FOLDER but SKIP, colabmagic's state included."""
    return contents(folder, skip=skip, state=True)


def user_tree(target: Path, outside: Path) -> dict[str, object]:
    """The user's own work in DIR: files, a folder, a link inside, a link outside."""
    (target / "a").mkdir()
    (target / "a" / "mine.txt").write_bytes(b"the user's a/mine.txt")
    (target / "notes.txt").write_bytes(b"the user's notes")
    os.symlink("a", target / "uin")
    os.symlink(outside, target / "ulink")
    return snapshot(target)


def inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top + os.sep)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(archives=ARCHIVES, force=st.booleans())
def test_a_glob_into_a_users_folder_keeps_every_promise(archives, force):
    with tempfile.TemporaryDirectory() as box_name:
        box = Path(box_name)
        target = box.joinpath(*[f"l{i}" for i in range(DEPTH)], "target")
        target.mkdir(parents=True)
        outside = box / "outside"
        outside.mkdir()
        (outside / "passwd").write_bytes(b"root:x:0:0")
        drive = box / "drive"
        drive.mkdir()
        for i, (kind, members) in enumerate(archives):
            build(drive / f"shard-{i}.{kind}", kind, members)
        mine = user_tree(target, outside)
        around = snapshot(box, skip=target)
        note(f"archives={archives!r} force={force}")
        try:
            result = colabmagic.stage(str(drive / "shard-*"), target, quiet=True, force=force)
        except ColabMagicError as error:
            event("refused")
            note(str(error))
            assert "\n" not in str(error)
            assert snapshot(box, skip=target) == around
            there = {k: v for k, v in snapshot(target).items() if not k.startswith(".colabmagic")}
            assert there == mine
            return
        event("staged with force" if force else "staged")
        assert snapshot(box, skip=target) == around  # nothing outside DIR changed
        kept = sorted((target / ".colabmagic" / "replaced").glob("*"))
        for rel, value in mine.items():
            path = target / rel
            now = _value(path)
            if now == value:
                continue
            assert force, f"{rel} changed without --force"
            assert result.replaced > 0 and result.replaced_to in kept
            assert any(_value(k / rel) == value for k in kept), f"{rel} was lost"
        real_top = os.path.realpath(target)
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames[:] = [d for d in dirnames if d != ".colabmagic"]
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(target))
                if path.is_symlink() and mine.get(rel) != "link:" + os.readlink(path):
                    assert inside(os.path.realpath(path), real_top), f"{rel} leads out"


def _value(path: Path) -> object:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_dir():
        return "dir"
    if path.exists():
        return path.read_bytes()
    return None


# --------------------------------------------------------------------------- the race


def test_user_entries_made_at_random_moments_during_a_stage_are_never_lost(tmp_path):
    rng = random.Random(10)
    drive = tmp_path / "drive"
    drive.mkdir()
    files = {f"{top}/{i:03d}.bin": rng.randbytes(3000) for top in "pqrs" for i in range(60)}
    for shard in range(2):
        with tarfile.open(drive / f"race-{shard}.tar", "w") as tf:
            for name, data in files.items():
                if hash(name) % 2 == shard or shard == 0 and name.startswith("p"):
                    info = tarfile.TarInfo(f"{shard}{name}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    deadline = time.monotonic() + 25
    rounds = outcomes = 0
    while rounds < 12 and time.monotonic() < deadline:
        rounds += 1
        target = tmp_path / f"t{rounds}"
        target.mkdir()
        made: dict[Path, bytes] = {}
        stop = threading.Event()
        delay = rng.uniform(0, 0.05)

        def user(seed: int, target=target, made=made, stop=stop, delay=delay) -> None:
            local = random.Random(seed)
            time.sleep(delay)
            n = 0
            while not stop.is_set() and n < 200:
                top = local.choice(["0p", "0q", "1r", "1s", "mine", "0p/sub"])
                path = target / top / f"user{n}.txt"
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    data = b"user %d" % n
                    path.write_bytes(data)
                    made[path] = data
                except OSError:
                    pass  # the folder was being moved at that instant: try another
                n += 1
                time.sleep(local.uniform(0, 0.002))

        thread = threading.Thread(target=user, args=(rounds,))
        thread.start()
        try:
            colabmagic.stage(str(drive / "race-*.tar"), target, quiet=True)
            outcomes += 1
        except ColabMagicError as error:
            assert "already exists" in str(error), error
        finally:
            stop.set()
            thread.join()
        for path, data in made.items():
            assert path.read_bytes() == data, f"{path} was lost or changed"
    assert rounds >= 3
