"""What the tests build and look at: sample files, folders, archives, and snapshots of
trees on disk.  One builder per job, shared by every test file::

    from tests.builders import random_files, write_files, write_zip, contents

Imported as a module of the ``tests`` package (the repository root is on sys.path:
pytest's ``pythonpath`` setting), never through ``conftest``.  Files are random bytes
from a seeded generator: the same seed gives the same bytes, and nothing compresses
unless a test says so.
"""

from __future__ import annotations

import io
import os
import random
import signal
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The hostile corpus and Colab's pins: beside the checkout, or where scripts/run-tests says.
SHARED = Path(os.environ.get("COLABMAGIC_SHARED") or REPO.parent / "shared")

Files = Mapping[str, bytes]  # relative name ("a/b.jpg") -> content


@dataclass(frozen=True)
class Symlink:
    """An archive member that is a symbolic link to TARGET."""

    target: str


# An archive's members: name -> bytes (a file), Symlink(target), or None (a folder).
Members = Mapping[str, "bytes | Symlink | None"]


# --------------------------------------------------------------------------- contents


def random_bytes(n: int, seed: int) -> bytes:
    """N incompressible bytes, the same for the same SEED."""
    return random.Random(seed).randbytes(n)


def random_files(
    n: int,
    size: int | tuple[int, int],
    *,
    seed: int = 1,
    name: str = "{label}/{i:05d}.jpg",
    labels: Sequence[str] = ("cat", "dog", "bird"),
) -> dict[str, bytes]:
    """N files of random bytes: SIZE bytes each, or a size drawn from [LOW, HIGH].

    NAME is formatted with ``i`` and ``label`` (``labels[i % len(labels)]``), so a
    data set's classes are folders: ``cat/00000.jpg``, ``dog/00001.jpg``, ...
    """
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        nbytes = size if isinstance(size, int) else rng.randint(*size)
        files[name.format(i=i, label=labels[i % len(labels)])] = rng.randbytes(nbytes)
    return files


def sample_dataset(n: int = 60, seed: int = 1, top: str = "train") -> dict[str, bytes]:
    """A small training set as users keep it: N images of two classes under TOP, up
    to 3 kB each, a compressible label file, and an empty file."""
    name = top + "/{label}/{label}.{i:04d}.jpg"
    files = random_files(n, (0, 3000), seed=seed, name=name, labels=("dog", "cat"))
    files[f"{top}/labels.csv"] = b"name,label\n" * 200
    files[f"{top}/empty"] = b""
    return files


# --------------------------------------------------------------------------- on disk


def write_file(path: Path, data: bytes, *, mtime: float | None = None) -> Path:
    """DATA at PATH (its folders made), with MTIME as its modification time if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_files(
    folder: Path, files: Files, *, dirs: Iterable[str] = (), mtime: float | None = None
) -> dict[str, bytes]:
    """FILES under FOLDER, plus the empty folders DIRS; returns FILES as a dict."""
    for name, data in files.items():
        write_file(folder / name, data, mtime=mtime)
    for name in dirs:
        (folder / name).mkdir(parents=True, exist_ok=True)
    return dict(files)


# --------------------------------------------------------------------------- archives


def zip_bytes(members: Members, method: int = zipfile.ZIP_STORED) -> bytes:
    """A zip of MEMBERS, in their order, each file compressed with METHOD; a Symlink
    is stored as Unix zip tools store one (mode bits S_IFLNK, the target as data)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, value in members.items():
            if value is None:
                archive.writestr(name.rstrip("/") + "/", b"")
            elif isinstance(value, Symlink):
                info = zipfile.ZipInfo(name)
                info.create_system = 3  # Unix: external_attr holds st_mode
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, value.target)
            else:
                archive.writestr(name, value)
    return out.getvalue()


def tar_bytes(members: Members, mode: str = "w", *, mtime: int = 0) -> bytes:
    """A tar (pax) of MEMBERS in their order: files rw-r--r--, folders rwxr-xr-x, links;
    all dated MTIME.  MODE as tarfile's: "w", "w:gz", "w:bz2", "w:xz"."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode, format=tarfile.PAX_FORMAT) as archive:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if value is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif isinstance(value, Symlink):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, value.target, 0o777
                archive.addfile(info)
            else:
                info.size, info.mode = len(value), 0o644
                archive.addfile(info, io.BytesIO(value))
    return out.getvalue()


def write_zip(path: Path, members: Members, method: int = zipfile.ZIP_STORED) -> Path:
    """`zip_bytes` written to PATH (its folders made)."""
    return write_file(path, zip_bytes(members, method))


def write_tar(path: Path, members: Members, mode: str = "w", *, mtime: int = 0) -> Path:
    """`tar_bytes` written to PATH (its folders made)."""
    return write_file(path, tar_bytes(members, mode, mtime=mtime))


def zip_contents(path: Path) -> dict[str, bytes]:
    """The files in the zip at PATH (folders left out): name -> bytes."""
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}


def tar_contents(path: Path) -> dict[str, bytes]:
    """The regular files in the tar (compressed or not) at PATH: name -> bytes."""
    with tarfile.open(path) as archive:
        return {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile()
        }


# --------------------------------------------------------------------------- looking


def tree(folder: Path, *, state: bool = True) -> dict[str, bytes | str]:
    """Every file under FOLDER (relative name -> bytes; symlink -> 'link:target'),
    colabmagic's state folder included unless not STATE; folders are not listed."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        if not state and Path(dirpath) == folder:  # FOLDER's own state, as a stage keeps it
            dirnames[:] = [d for d in dirnames if d != ".colabmagic"]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                found[rel] = path.read_bytes()
    return found


def contents(
    folder: Path, *, sizes: bool = False, skip: Path | None = None, state: bool = False
) -> dict[str, object]:
    """Everything under FOLDER but colabmagic's state (unless STATE) and SKIP: each
    file's bytes (or size, with SIZES), each link as 'link:target', each folder as 'dir'."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [
            d for d in dirnames if (state or d != ".colabmagic") and Path(dirpath, d) != skip
        ]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path == skip:
                continue
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.stat().st_size if sizes else path.read_bytes()
    return found


def as_contents(files: Files, **extra: object) -> dict[str, object]:
    """What `contents` shows once FILES lie in a folder (with EXTRA beside them): each
    file's bytes, and each folder on the way as 'dir'."""
    want: dict[str, object] = dict(extra)
    for name, data in files.items():
        parts = name.split("/")
        for i in range(1, len(parts)):
            want["/".join(parts[:i])] = "dir"
        want[name] = data
    return want


def snapshot(top: Path, skip: Path | None = None) -> dict[bytes, tuple]:
    """Everything under TOP (but SKIP), for "nothing changed" checks: kind, mode, mtime
    and bytes (files under 1 MiB) or link target, keyed by the raw relative name.
    Iterative, so that a 2,000-deep tree cannot break it."""
    found: dict[bytes, tuple] = {}
    pending = [top]
    while pending:
        folder = pending.pop()
        for item in os.scandir(folder):
            path = Path(item.path)
            if skip is not None and path == skip:
                continue
            st = item.stat(follow_symlinks=False)
            rel = os.fsencode(path.relative_to(top))
            if item.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif item.is_dir(follow_symlinks=False):
                found[rel] = ("dir", st.st_mode, st.st_mtime_ns)
                pending.append(path)
            else:
                content = path.read_bytes() if st.st_size < 1 << 20 else b"?"
                found[rel] = ("file", st.st_mode, st.st_mtime_ns, content)
    return found


def partials(folder: Path) -> list[str]:
    """Names in FOLDER of files still being written (``*.partial``): none may be left."""
    return sorted(n for n in os.listdir(folder) if n.endswith(".partial"))


def unfinished(target: Path) -> list[str]:
    """Work folders a stage left in TARGET's ``.colabmagic/`` (``tmp-*``, ``trash-*``)."""
    state = target / ".colabmagic"
    if not state.is_dir():
        return []
    return sorted(n for n in os.listdir(state) if n.startswith(("tmp-", "trash-")))


def sigint_in_child() -> None:
    """A subprocess `preexec_fn`: SIGINT at its default, so that the Python started
    there installs its KeyboardInterrupt handler even if this run ignores SIGINT
    (as it does under `nohup ... &`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# A target folder that already holds the user's own work, and the check that a failed
# or interrupted stage left it so.
SENTINEL = {"sentinel.txt": b"the user's own work"}


def user_folder(path: Path) -> Path:
    """PATH made a folder that already holds the user's own work (SENTINEL)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "sentinel.txt").write_bytes(SENTINEL["sentinel.txt"])
    return path


def as_it_was(folder: Path) -> None:
    """FOLDER holds the user's file and nothing else, and no half-finished work."""
    assert contents(folder) == SENTINEL
    state = folder / ".colabmagic"
    assert [n for n in os.listdir(state) if n.startswith(("tmp-", "trash-"))] == []
    for marker in state.glob("marker-*.json"):
        assert '"complete"' not in marker.read_text()
