"""The benchmark's sets in Drive's shape, each built once and kept between runs.

- `dataset(cache, files, kind)`: the cats-vs-dogs-like set as a folder, a zip and a
  tar.gz; `kind` "random" (nothing compresses, as with JPEGs) or "mixed" (half the
  files XML-like text, as VOC's annotations, half random bytes).
- `large(cache, mb)`: one zip of a few large members, big enough for ranged reads.
- `scale_zip(cache, members)`: a zip of MEMBERS tiny files in 1,000 folders.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
import zipfile
from pathlib import Path

# Bump when the layout or the generator changes, so stale caches are not reused.
LAYOUT = 1
KINDS = ("random", "mixed")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "colabmagic-bench"


def _built(root: Path) -> Path:
    return root.with_name(root.name + ".done")


def _start(root: Path, what: str) -> float:
    shutil.rmtree(root, ignore_errors=True)
    print(f"building {what} in {root} (once; kept for later runs)", file=sys.stderr)
    return time.monotonic()


def dataset(cache: Path, files: int, kind: str = "random") -> Path:
    """A Drive root (the folder holding MyDrive) with the set three ways:

    MyDrive/train/{cat,dog}/*, MyDrive/datasets/train.zip, MyDrive/datasets/train.tar.gz.
    Built on first use; a marker beside it says the build finished.
    """
    from colabmagic.sample import make_dataset, make_tar_gz, make_zip

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    # The random set keeps the name it always had, so caches built before stay valid.
    name = (
        f"layout{LAYOUT}-files{files}"
        if kind == "random"
        else f"layout{LAYOUT}-{kind}-files{files}"
    )
    root = cache / name
    if _built(root).exists() and root.is_dir():
        return root
    started = _start(root, f"{files:,} {kind} files")
    mydrive = root / "MyDrive"
    train = mydrive / "train"
    (mydrive / "datasets").mkdir(parents=True)
    if kind == "random":
        make_dataset(train, files)
        make_zip(train, mydrive / "datasets" / "train.zip")
    else:
        make_mixed(train, files)
        zip_as_zip_r(train, mydrive / "datasets" / "train.zip")
    make_tar_gz(train, mydrive / "datasets" / "train.tar.gz")
    _built(root).write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return root


def _annotation(rng: random.Random, name: str, size: int) -> bytes:
    """VOC-like XML of about SIZE bytes: the same tags over and over, varying numbers."""
    head = (
        f"<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{name}</filename>\n"
        f"\t<size>\n\t\t<width>{rng.randint(200, 500)}</width>\n"
        f"\t\t<height>{rng.randint(200, 500)}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
    )
    parts, total = [head], len(head)
    labels = ("person", "dog", "cat", "car", "bicycle", "chair", "bottle", "horse")
    while total < size:
        x, y = rng.randint(0, 400), rng.randint(0, 400)
        block = (
            f"\t<object>\n\t\t<name>{rng.choice(labels)}</name>\n\t\t<pose>Unspecified</pose>\n"
            f"\t\t<truncated>{rng.randint(0, 1)}</truncated>\n\t\t<difficult>0</difficult>\n"
            f"\t\t<bndbox>\n\t\t\t<xmin>{x}</xmin>\n\t\t\t<ymin>{y}</ymin>\n"
            f"\t\t\t<xmax>{x + rng.randint(1, 99)}</xmax>\n"
            f"\t\t\t<ymax>{y + rng.randint(1, 99)}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        )
        parts.append(block)
        total += len(block)
    parts.append("</annotation>\n")
    return "".join(parts).encode()


def make_mixed(folder: Path, files: int, *, seed: int = 0) -> int:
    """FILES files under FOLDER/{cat,dog}/, 8-40 KB each: every other pair an XML
    annotation (compressible text), the rest random bytes; returns the bytes written."""
    rng = random.Random(seed)
    total = 0
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        label = "cat" if i % 2 else "dog"
        size = rng.randint(8_000, 40_000)
        if (i // 2) % 2:
            path = folder / label / f"{label}.{i:05d}.jpg"
            data = rng.randbytes(size)
        else:
            path = folder / label / f"{label}.{i:05d}.xml"
            data = _annotation(rng, path.name, size)
        path.write_bytes(data)
        total += len(data)
    return total


def zip_as_zip_r(folder: Path, archive: Path) -> Path:
    """Zip FOLDER as `zip -r` would from its parent: deflated (level 6) where that
    makes a member smaller, stored where it does not."""
    import zlib

    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            packed = zlib.compress(data, 6)
            method = zipfile.ZIP_DEFLATED if len(packed) < len(data) else zipfile.ZIP_STORED
            name = path.relative_to(folder.parent).as_posix()
            zf.write(path, name, compress_type=method, compresslevel=6)
    return archive


def large(cache: Path, mb: int, members: int = 4) -> Path:
    """A Drive root whose MyDrive/datasets/large.zip holds MEMBERS random files of
    MB megabytes (10^6 bytes) in all, stored: the archive a ranged read is for."""
    root = cache / f"layout{LAYOUT}-large-{mb}mb"
    if _built(root).exists() and root.is_dir():
        return root
    started = _start(root, f"a {mb} MB zip")
    folder = root / "MyDrive" / "datasets"
    folder.mkdir(parents=True)
    each = mb * 1_000_000 // members
    chunk = 1 << 20
    with zipfile.ZipFile(folder / "large.zip", "w", zipfile.ZIP_STORED) as zf:
        for i in range(members):
            info = zipfile.ZipInfo(f"large/part{i:02d}.bin", date_time=(2024, 1, 1, 0, 0, 0))
            info.file_size = each
            with zf.open(info, "w", force_zip64=each >= zipfile.ZIP64_LIMIT) as out:
                left = each
                while left:
                    out.write(os.urandom(min(chunk, left)))
                    left -= min(chunk, left)
    _built(root).write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return root


def scale_zip(cache: Path, members: int, folders: int = 1000) -> Path:
    """A zip of MEMBERS random-ish files of 50-400 bytes in FOLDERS folders under
    `train/`, stored, in folder order (as `zip -r` writes them)."""
    root = cache / f"layout{LAYOUT}-scale-{members}"
    archive = root / "scale.zip"
    if _built(root).exists() and archive.is_file():
        return archive
    started = _start(root, f"a zip of {members:,} members")
    root.mkdir(parents=True)
    rng = random.Random(members)
    pool = rng.randbytes(1 << 20)
    when = (2024, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for folder in range(min(folders, members)):
            for i in range(folder, members, folders):
                size = rng.randint(50, 400)
                at = rng.randrange(len(pool) - size)
                info = zipfile.ZipInfo(f"train/{folder:04d}/{i:07d}.bin", date_time=when)
                info.external_attr = 0o644 << 16
                zf.writestr(info, pool[at : at + size])
    _built(root).write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return archive
