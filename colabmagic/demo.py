"""`colabmagic demo`: the main job on a sample data set, no Google account needed.

Builds a small cats-vs-dogs-like set in a temporary fake Drive (seen through the
simulated slow Drive when FUSE is available), then times what people do today (the
`cp` + `unzip` + `rm` recipe, and a DataLoader reading Drive file by file) against
`%stage` on the same Drive, stages the zip again (skipped) and the folder, and ends
with the comparison.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ZIP = "My Drive/datasets/cats_dogs.zip"
FOLDER = "My Drive/datasets/cats_dogs"
READ_ONE_BY_ONE = 300  # files a DataLoader reads in the comparison, at most


def demo(files: int = 2000, profile: str = "bench") -> None:
    """Run the demo, printing each line a notebook user would type and what it cost."""
    from . import drive, fakedrive
    from .results import count, duration
    from .sample import make_dataset, make_zip
    from .staging import stage

    quiet = not sys.stdout.isatty()
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
            print(f"Drive is simulated, {profile} profile: {fakedrive.PROFILES[profile]}")
        else:
            root = backing
            print(f"Drive is a plain folder, not slowed down ({why_not})")

        def cold() -> None:  # every file's next open pays Drive's first-open cost
            if why_not is None:
                fakedrive.reset(root)

        drive.use_root(root)
        stack.callback(drive.use_root, None)
        work = tmp / "content"
        work.mkdir()
        stack.callback(os.chdir, os.getcwd())
        os.chdir(work)
        zip_path = root / "MyDrive" / "datasets" / "cats_dogs.zip"
        times: list[tuple[str, float | None, str]] = []  # (what, seconds, note)

        recipe = _recipe_line(zip_path)
        print(f"\nThe recipe it replaces:\n!{recipe}")
        cold()
        recipe_s = _recipe(zip_path, tmp / "recipe")
        print(f"  {duration(recipe_s)}" if recipe_s is not None else "  skipped: unzip not found")
        times.append(("cp + unzip -q + rm", recipe_s, ""))

        cold()
        print(f'\n%stage "{ZIP}"')
        staged, stage_s = _timed(lambda: stage(ZIP, quiet=quiet))
        print(staged)
        times.append(("%stage (the same zip)", stage_s, _faster(recipe_s, stage_s)))

        print(f'\n%stage "{ZIP}"')
        again, again_s = _timed(lambda: stage(ZIP, quiet=quiet))
        print(again)
        times.append(("%stage again", again_s, again.action))

        sample = sorted((root / "MyDrive" / "datasets" / "cats_dogs").rglob("*.jpg"))
        sample = sample[:: max(1, len(sample) // READ_ONE_BY_ONE)][:READ_ONE_BY_ONE]
        n = len(sample)
        cold()
        drive_s = _read_one_by_one(sample)
        local = [work / "cats_dogs" / p.relative_to(sample[0].parents[1]) for p in sample]
        local_s = _read_one_by_one(local)
        epoch = f"an epoch of {count(files)}: {duration(drive_s / n * files)}"
        print(f"\nA DataLoader reading {count(n)} files one by one, as in a training loop:")
        print(f"  from Drive       {duration(drive_s)} ({duration(drive_s / n)} a file; {epoch})")
        print(f"  after %stage     {duration(local_s)} from local disk")
        times.append((f"read {count(n)} files from Drive", drive_s, epoch))
        times.append((f"read {count(n)} files after %stage", local_s, _faster(drive_s, local_s)))

        cold()
        print(f'\n%stage "{FOLDER}" --to copy')
        copied, copy_s = _timed(lambda: stage(FOLDER, "copy", quiet=quiet))
        print(copied)
        times.append(("%stage the folder", copy_s, ""))

        print(f"\nWhat each cost on this {'simulated' if why_not is None else 'plain'} Drive:")
        width = max(len(what) for what, _, _ in times)
        for what, seconds, note in times:
            shown = duration(seconds) if seconds is not None else "skipped"
            print(f"  {what.ljust(width)}  {shown:>9}  {note}".rstrip())


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def _faster(before: float | None, after: float) -> str:
    if before is None or after <= 0:
        return ""
    ratio, word = (before / after, "faster") if before >= after else (after / before, "slower")
    return f"{ratio:.0f}x {word}" if ratio >= 10 else f"{ratio:.1f}x {word}"


def _recipe_line(zip_path: Path) -> str:
    return f'cp "{zip_path}" . && unzip -q {zip_path.name} && rm {zip_path.name}'


def _recipe(zip_path: Path, where: Path) -> float | None:
    """Seconds the seeds' recipe takes in WHERE (then removed); None without unzip."""
    if shutil.which("unzip") is None or shutil.which("cp") is None:
        return None
    where.mkdir()
    try:
        started = time.perf_counter()
        subprocess.run(["sh", "-c", _recipe_line(zip_path)], cwd=where, check=True)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _read_one_by_one(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    return time.perf_counter() - started
