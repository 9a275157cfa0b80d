"""`colabmagic demo`: the main job on a sample data set, no Google account needed.

Builds a small cats-vs-dogs-like set in a temporary fake Drive (seen through the
simulated slow Drive when FUSE is available), then stages it twice, as a zip and
as a folder of files, and once more to show that a second run is skipped.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path


def demo(files: int = 2000, profile: str = "bench") -> None:
    """Run the demo, printing each %stage line and its result table."""
    from . import drive, fakedrive
    from .sample import make_dataset, make_zip
    from .staging import stage

    steps = [  # (what a notebook user would type, source, --to)
        ('%stage "My Drive/datasets/cats_dogs.zip"', "My Drive/datasets/cats_dogs.zip", None),
        ('%stage "My Drive/datasets/cats_dogs.zip"', "My Drive/datasets/cats_dogs.zip", None),
        ('%stage "My Drive/datasets/cats_dogs" --to copy', "My Drive/datasets/cats_dogs", "copy"),
    ]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="colabmagic-demo-")))
        backing = tmp / "drive"
        datasets = backing / "MyDrive" / "datasets"
        print(f"Writing {files:,} sample images to a fake Drive in {backing} ...")
        make_dataset(datasets / "cats_dogs", files)
        make_zip(datasets / "cats_dogs", datasets / "cats_dogs.zip")
        why_not = fakedrive.available() if profile != "none" else "--profile none"
        if why_not is None:
            root = stack.enter_context(fakedrive.mount(backing, profile=profile))
            print(f"Drive is simulated ({profile} profile): {fakedrive.PROFILES[profile]}")
        else:
            root = backing
            print(f"Drive is a plain folder, not slowed down ({why_not})")
        drive.use_root(root)
        stack.callback(drive.use_root, None)
        work = tmp / "content"
        work.mkdir()
        stack.callback(os.chdir, os.getcwd())
        os.chdir(work)
        for line, src, to in steps:
            print(f"\n{line}")
            print(stage(src, to, quiet=not sys.stdout.isatty()))
