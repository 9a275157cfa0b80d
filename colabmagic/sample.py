"""A cats-vs-dogs-like data set for the demo, the notebooks and the benchmark.

Random bytes (so nothing compresses, as with JPEGs), 8-40 KB a file, split into
train/cat and train/dog: the shape of the Drive folders that make epochs slow.
"""

from __future__ import annotations

import os
import random
from pathlib import Path


def make_dataset(folder: str | os.PathLike, files: int = 2000, *, seed: int = 0) -> int:
    """Write FILES images-to-be under FOLDER/{cat,dog}/; returns the bytes written."""
    rng = random.Random(seed)
    folder = Path(folder)
    total = 0
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        label = "cat" if i % 2 else "dog"
        data = rng.randbytes(rng.randint(8_000, 40_000))
        (folder / label / f"{label}.{i:05d}.jpg").write_bytes(data)
        total += len(data)
    return total


def make_zip(folder: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Zip FOLDER as `zip -r` would from its parent (members start with its name)."""
    import zipfile

    folder, archive = Path(folder), Path(archive)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def make_tar_gz(folder: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """tar.gz of FOLDER, members starting with its name, as `tar czf` makes it."""
    import tarfile

    folder, archive = Path(folder), Path(archive)
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        tf.add(folder, folder.name)
    return archive
