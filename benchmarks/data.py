"""The cats-vs-dogs-like set in Drive's shape, built once per size and kept between runs."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

# Bump when the layout or the generator changes, so stale caches are not reused.
LAYOUT = 1


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "colabmagic-bench"


def dataset(cache: Path, files: int) -> Path:
    """A Drive root (the folder holding MyDrive) with the set three ways:

    MyDrive/train/{cat,dog}/*.jpg, MyDrive/datasets/train.zip, MyDrive/datasets/train.tar.gz.
    Built on first use; a marker beside it says the build finished.
    """
    from colabmagic.sample import make_dataset, make_tar_gz, make_zip

    root = cache / f"layout{LAYOUT}-files{files}"
    done = root.with_name(root.name + ".done")
    if done.exists() and root.is_dir():
        return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    print(f"building {files:,} files in {root} (once; kept for later runs)", file=sys.stderr)
    mydrive = root / "MyDrive"
    train = mydrive / "train"
    make_dataset(train, files)
    (mydrive / "datasets").mkdir()
    make_zip(train, mydrive / "datasets" / "train.zip")
    make_tar_gz(train, mydrive / "datasets" / "train.tar.gz")
    done.write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return root
