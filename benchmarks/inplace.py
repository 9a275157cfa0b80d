"""Reading in place: an epoch of `ArchiveDataset` in random order against the files
unpacked on local disk, against one sequential read of the archive from the simulated
Drive, and against `zipfile.ZipFile` on the mounted archive (what people try first).

    python -m benchmarks.inplace [--files 10000] [--pairs 3] [--json out.json]
    python -m benchmarks.inplace --memory 1000000     # RSS of a 1,000,000-member index

Rows (ratios of wall times, medians over A/B/A/B pairs; every run starts with the page
cache dropped when run as root, else with the files evicted by posix_fadvise):

- L1  local zip, random order, ArchiveDataset  /  the same files unpacked, same order
- D1  first epoch from Drive (empty block cache, cold Drive), random order  /  cat
- D2  second epoch from Drive (block cache full, page cache dropped)  /  L1's baseline
- D3  zipfile.ZipFile on the mounted zip, random order  /  cat  (the peer; no target)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import data

TARGETS = {"L1": 1.3, "D1": 1.25, "D2": 1.3, "D3": None}
TITLES = {
    "L1": "local zip via ArchiveDataset / unpacked files (random order)",
    "D1": "first epoch from Drive, random order / cat of the archive",
    "D2": "second epoch from Drive (block cache) / unpacked files on local disk",
    "D3": "zipfile.ZipFile on the mount, random order / cat (the peer)",
}


def evict(paths: list[Path]) -> None:
    """Start cold: the page cache dropped (root), or these files evicted from it."""
    os.sync()
    if os.geteuid() == 0:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def epoch(path: str | Path, order_seed: int) -> int:
    """Every member of the archive once, in a random order, through ArchiveDataset."""
    import colabmagic

    ds = colabmagic.ArchiveDataset(path)
    order = list(range(len(ds)))
    random.Random(order_seed).shuffle(order)
    total = 0
    for i in order:
        total += len(ds[i][1])
    ds.archive.close()
    return total


def unpacked(folder: Path, names: list[str], order_seed: int) -> int:
    order = list(names)
    random.Random(order_seed).shuffle(order)
    total = 0
    for name in order:
        with open(folder / name, "rb") as f:
            total += len(f.read())
    return total


def zipfile_epoch(path: Path, order_seed: int) -> int:
    import zipfile

    with zipfile.ZipFile(path) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        random.Random(order_seed).shuffle(infos)
        return sum(len(z.read(i)) for i in infos)


def cat(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def row(name: str, ours: list[float], theirs: list[float]) -> dict:
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    median = statistics.median(ratios)
    target = TARGETS[name]
    return {
        "title": TITLES[name],
        "ratio_median": round(median, 3),
        "ratios": [round(r, 3) for r in ratios],
        "target": target,
        "met": None if target is None else median <= target,
        "ours_s": [round(t, 3) for t in ours],
        "baseline_s": [round(t, 3) for t in theirs],
    }


def run(args: argparse.Namespace) -> dict:
    from colabmagic import drive, fakedrive

    source = data.dataset(args.data, args.files)
    local_zip = source / "MyDrive" / "datasets" / "train.zip"
    folder = source / "MyDrive"  # members are named train/...
    import zipfile

    with zipfile.ZipFile(local_zip) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="colabmagic-inplace-bench-") as work:
        cache = Path(work) / "cache"
        os.environ["COLABMAGIC_CACHE"] = str(cache)
        epoch(local_zip, 0)  # the index of the local zip, cached as in any later epoch

        ours, theirs = [], []
        for i in range(args.pairs):
            evict([local_zip, folder / "train", cache])
            ours.append(timed(lambda i=i: epoch(local_zip, i)))
            evict([local_zip, folder / "train", cache])
            theirs.append(timed(lambda i=i: unpacked(folder, names, i)))
            print(f"  L1 pair {i + 1}: {ours[-1] / theirs[-1]:.3f}", file=sys.stderr)
        results["L1"] = row("L1", ours, theirs)
        local_baseline = theirs

        with fakedrive.mount(source, Path(work) / "Google Drive", profile=args.profile) as root:
            drive.use_root(root)
            mounted = root / "MyDrive" / "datasets" / "train.zip"
            first, floor, second, peer, peer_floor = [], [], [], [], []
            for i in range(args.pairs):
                shutil.rmtree(cache, ignore_errors=True)  # a new session: nothing cached
                fakedrive.reset(root)
                evict([local_zip])
                first.append(timed(lambda i=i: epoch("My Drive/datasets/train.zip", i)))
                fakedrive.reset(root)
                evict([local_zip])
                floor.append(timed(lambda: cat(mounted)))
                evict([cache, folder / "train"])
                second.append(timed(lambda i=i: epoch("My Drive/datasets/train.zip", i + 100)))
                print(
                    f"  D1 pair {i + 1}: {first[-1] / floor[-1]:.3f}"
                    f"  D2: {second[-1] / local_baseline[i]:.3f}",
                    file=sys.stderr,
                )
                if i < args.peer_pairs:
                    fakedrive.reset(root)
                    evict([local_zip])
                    peer.append(timed(lambda i=i: zipfile_epoch(mounted, i)))
                    peer_floor.append(floor[-1])
                    print(f"  D3 pair {i + 1}: {peer[-1] / floor[-1]:.3f}", file=sys.stderr)
            drive.use_root(None)
        results["D1"] = row("D1", first, floor)
        results["D2"] = row("D2", second, local_baseline)
        if peer:
            results["D3"] = row("D3", peer, peer_floor)
    return {
        "files": args.files,
        "profile": args.profile,
        "pairs": args.pairs,
        "page_cache_dropped": os.geteuid() == 0,
        "results": results,
        "all_met": all(r["met"] is not False for r in results.values()),
    }


def table(doc: dict) -> str:
    lines = [f"{doc['files']:,} files, simulated Drive profile {doc['profile']}, "
             f"{doc['pairs']} pairs"]  # fmt: skip
    for name, r in doc["results"].items():
        target = "" if r["target"] is None else f"target <= {r['target']}"
        verdict = "" if r["met"] is None else ("met" if r["met"] else "NOT MET")
        lines.append(f"{name}  {r['ratio_median']:6.3f}x  {target:14} {verdict:7}  {r['title']}")
    if not doc["page_cache_dropped"]:
        lines.append("(not root: files were evicted with posix_fadvise, not the whole cache)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- memory

_MEMORY_CHILD = """
import os, resource, sys, time
import colabmagic
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
before = rss()
started = time.perf_counter()
a = colabmagic.open_archive(sys.argv[1])
seconds = time.perf_counter() - started
after = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
a.read(a.name(len(a) - 1)); assert a.name(0) in a
print(f"{len(a)} {before:.1f} {after:.1f} {peak:.1f} {seconds:.2f}")
"""


def write_many(path: Path, members: int, kind: str) -> None:
    """An archive of MEMBERS tiny files named like a dataset's (train/c07/0123456.jpg)."""
    if kind == "tar":
        import tarfile

        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
            for i in range(members):
                info = tarfile.TarInfo(f"train/c{i % 100:02d}/{i:07d}.jpg")
                info.size = 1
                t.addfile(info, _One())
    else:
        import zipfile

        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for i in range(members):
                z.writestr(f"train/c{i % 100:02d}/{i:07d}.jpg", b"x")


class _One:
    def read(self, n: int = -1) -> bytes:
        return b"x"


def memory(members: int, keep: Path) -> dict:
    out = {}
    keep.mkdir(parents=True, exist_ok=True)
    for kind in ("tar", "zip"):
        path = keep / f"many-{members}.{kind}"
        if not path.exists():
            print(f"writing {path} ({members:,} members; kept for later runs)", file=sys.stderr)
            write_many(path.with_suffix(".partial"), members, kind)
            path.with_suffix(".partial").rename(path)
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "COLABMAGIC_CACHE": cache}
            for attempt in ("first open (index built)", "second open (index cached)"):
                line = subprocess.run(
                    [sys.executable, "-c", _MEMORY_CHILD, str(path)],
                    env=env, capture_output=True, text=True, check=True,
                ).stdout.split()  # fmt: skip
                n, before, after, peak, seconds = line
                out[f"{kind}, {attempt}"] = {
                    "members": int(n),
                    "rss_before_mb": float(before),
                    "rss_after_mb": float(after),
                    "index_rss_mb": round(float(after) - float(before), 1),
                    "peak_rss_mb": float(peak),
                    "seconds": float(seconds),
                }
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inplace", description=__doc__)
    parser.add_argument("--files", type=int, default=10_000, help="files in the set")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs per row (default 3)")
    parser.add_argument("--peer-pairs", type=int, default=1, help="pairs of the D3 peer row")
    parser.add_argument("--profile", default="bench", choices=["bench", "colab", "fast"])
    parser.add_argument("--data", type=Path, default=data.default_cache(), metavar="DIR")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--memory", type=int, metavar="N", help="measure the index of N members")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is not met")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.memory:
        doc = memory(args.memory, args.data / "inplace-memory")
        for what, m in doc.items():
            print(
                f"{what}: {m['members']:,} members, index {m['index_rss_mb']:.1f} MB of RSS "
                f"(peak {m['peak_rss_mb']:.1f} MB), {m['seconds']:.2f} s"
            )
    else:
        from colabmagic import fakedrive

        if reason := fakedrive.available():
            print(f"the benchmark needs the simulated Drive: {reason}", file=sys.stderr)
            return 2
        doc = run(args)
        print(table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if args.check and not doc.get("all_met", True) else 0


if __name__ == "__main__":
    sys.exit(main())
