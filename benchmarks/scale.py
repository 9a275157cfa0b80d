"""Stage ImageNet-sized zips: time per member and peak RSS, colabmagic against unzip and bsdtar.

    python -m benchmarks.scale [--files 10000,100000,1000000] [--pairs 1] [--json PATH]
    python -m benchmarks --files 10000,100000,1000000       # the same

For each size, a zip of that many members of 50-400 bytes in 1,000 folders (built once
into the data cache) is staged from a plain local folder (no simulated Drive: this
times the unpacking, not Drive) by `colabmagic stage ZIP --quiet`, `unzip -q ZIP` and
`bsdtar -xf ZIP`, each from a cold page cache, with `sync` in the timed span, in a
rotating order per round. Peak RSS comes from wait4. Targets (issue 15): colabmagic's
peak RSS at the largest size (1,000,000 in the issue) at most 150 MB, its time per
member there within 1.25x of the smallest size's, and faster than unzip there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import bench, data

DEFAULT_SIZES = [10_000, 100_000, 1_000_000]
RSS_TARGET_MB = 150
GROWTH_TARGET = 1.25
TOOLS = ("colabmagic", "unzip", "bsdtar")


def argv_of(tool: str, archive: Path) -> list[str]:
    if tool == "colabmagic":
        return [sys.executable, "-m", "colabmagic", "stage", str(archive), "--quiet"]
    if tool == "unzip":
        return ["unzip", "-q", str(archive)]
    return ["bsdtar", "-xf", str(archive)]


def cold(drop_caches: bool) -> None:
    os.sync()
    if drop_caches:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def aside(local: Path) -> None:
    """Move what the last run made out of the way; deleted at the end (see bench.clear)."""
    if local.exists():
        trash = local.parent / "trash"
        trash.mkdir(exist_ok=True)
        local.rename(tempfile.mkdtemp(dir=trash))
    local.mkdir()


def check(local: Path, members: int) -> None:
    """A run that exited 0 but did not unpack the folders is not a result."""
    folders = min(1000, members)
    got = len(os.listdir(local / "train")) if (local / "train").is_dir() else 0
    if got != folders:
        raise bench.BenchError(f"{local}/train holds {got} folders, not {folders}")


def measure(sizes: list[int], pairs: int, cache: Path, work: Path, drop_caches: bool) -> dict:
    local = work / "local"
    results: dict[str, dict] = {}
    for members in sizes:
        archive = data.scale_zip(cache, members)
        tools = {t: shutil.which(argv_of(t, archive)[0]) for t in TOOLS}
        order = [t for t in TOOLS if tools[t]]
        seconds: dict[str, list[float]] = {t: [] for t in order}
        rss: dict[str, list[float]] = {t: [] for t in order}
        errors: dict[str, str] = {}
        for i in range(pairs):
            for tool in order[i % len(order) :] + order[: i % len(order)]:
                if tool in errors:
                    continue
                aside(local)
                cold(drop_caches)
                try:
                    took, peak = bench.run(argv_of(tool, archive), local)
                    check(local, members)
                except bench.BenchError as error:
                    print(f"  {members:,} {tool} failed: {error}", file=sys.stderr)
                    errors[tool] = str(error)
                    continue
                seconds[tool].append(took)
                rss[tool].append(peak)
                print(
                    f"  {members:,} members, round {i + 1}/{pairs}: {tool} "
                    f"{took / members * 1e6:.1f} µs/member, {peak:.0f} MB",
                    file=sys.stderr,
                )
        aside(local)
        row: dict[str, dict] = {}
        for tool in TOOLS:
            if not tools[tool]:
                row[tool] = {"not_installed": argv_of(tool, archive)[0]}
            elif tool in errors:
                row[tool] = {"error": errors[tool]}
            else:
                median = statistics.median(seconds[tool])
                row[tool] = {
                    "seconds": [round(t, 6) for t in seconds[tool]],
                    "seconds_median": median,
                    "us_per_member": median / members * 1e6,
                    "peak_rss_mb": round(max(rss[tool]), 1),
                }
        row["archive_bytes"] = archive.stat().st_size
        results[str(members)] = row
    return results


def targets(results: dict) -> dict:
    """The issue's three targets, judged at the largest size run (and the smallest)."""
    sizes = sorted(results, key=int)
    low, high = results[sizes[0]], results[sizes[-1]]
    ours, ours_low = high.get("colabmagic", {}), low.get("colabmagic", {})
    rss = ours.get("peak_rss_mb")
    growth = (
        ours["us_per_member"] / ours_low["us_per_member"]
        if "us_per_member" in ours and "us_per_member" in ours_low
        else None
    )
    unzip = high.get("unzip", {})
    vs_unzip = (
        ours["seconds_median"] / unzip["seconds_median"]
        if "seconds_median" in ours and "seconds_median" in unzip
        else None
    )
    return {
        "peak_rss_mb": {
            "members": int(sizes[-1]),
            "value": rss,
            "target": RSS_TARGET_MB,
            "met": rss is not None and rss <= RSS_TARGET_MB,
        },
        "us_per_member_growth": {
            "members": [int(sizes[0]), int(sizes[-1])],
            "value": None if growth is None else round(growth, 4),
            "target": GROWTH_TARGET,
            "met": growth is not None and growth <= GROWTH_TARGET,
        },
        "vs_unzip": {
            "members": int(sizes[-1]),
            "value": None if vs_unzip is None else round(vs_unzip, 4),
            "target": 1.0,
            "met": vs_unzip is not None and vs_unzip < 1.0,
        },
    }


def table(doc: dict) -> str:
    def row(*cells: str) -> str:
        return "{:>10}  {:<11}{:>12}  {:>10}".format(*cells)

    lines = [
        f"staging a zip of N members of 50-400 bytes from local disk, {doc['pairs']} round(s), "
        "medians",
        row("members", "tool", "µs/member", "peak RSS"),
    ]
    for members, tools in doc["sizes"].items():
        for tool in TOOLS:
            t = tools[tool]
            if "not_installed" in t:
                lines.append(row(f"{int(members):,}", tool, "-", "") + "  not installed")
            elif "error" in t:
                lines.append(row(f"{int(members):,}", tool, "-", "") + f"  FAILED: {t['error']}")
            else:
                us, mb = f"{t['us_per_member']:.1f}", f"{t['peak_rss_mb']:.0f} MB"
                lines.append(row(f"{int(members):,}", tool, us, mb))

    def verdict(t: dict) -> str:
        return "met" if t["met"] else "NOT MET"

    def shown(value: float | None, form: str) -> str:
        return "-" if value is None else form.format(value)

    t = doc["targets"]
    r, g, u = t["peak_rss_mb"], t["us_per_member_growth"], t["vs_unzip"]
    lines += [
        f"target: colabmagic peak RSS at {r['members']:,} members "
        f"{shown(r['value'], '{:.0f} MB')}, ≤ {r['target']} MB: {verdict(r)}",
        f"target: colabmagic µs/member at {g['members'][1]:,} / at {g['members'][0]:,} "
        f"{shown(g['value'], '{:.2f}x')}, ≤ {g['target']:.2f}x: {verdict(g)}",
        f"target: colabmagic time / unzip's at {u['members']:,} "
        f"{shown(u['value'], '{:.2f}x')}, < 1.00x: {verdict(u)}",
        f"(load average at the end: {' '.join(map(str, doc['load_average']))})",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The scale benchmark for parsed ARGS (files: the sizes, pairs, cache, json)."""
    drop_caches = bench.can_drop_caches(args)
    pairs = args.pairs or 1
    sizes = sorted(set(args.files))
    work = Path(tempfile.mkdtemp(prefix="colabmagic-scale-"))
    try:
        results = measure(sizes, pairs, args.cache, work, drop_caches)
        return finish(args, pairs, results, drop_caches)
    finally:
        # rm, not shutil.rmtree: a million files go several times faster.
        print(f"removing {work}", file=sys.stderr)
        subprocess.run(["rm", "-rf", "--", str(work)], check=False)


def finish(args: argparse.Namespace, pairs: int, results: dict, drop_caches: bool) -> int:
    """Print the table and write the JSON (before the runs' files are removed)."""
    doc = {
        "mode": "scale",
        "pairs": pairs,
        "sizes": results,
        "targets": targets(results),
        "page_cache_dropped": drop_caches,
        "peak_rss_from": bench.RSS_SOURCE,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    doc["all_met"] = all(t["met"] for t in doc["targets"].values())
    print(table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if getattr(args, "check", False) and not doc["all_met"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--files",
        type=bench.sizes,
        default=DEFAULT_SIZES,
        metavar="N,N,...",
        help="members per zip (default 10000,100000,1000000)",
    )
    parser.add_argument("--pairs", type=int, default=1, help="rounds per size (default 1)")
    parser.add_argument("--cache", type=Path, default=data.default_cache(), metavar="DIR")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is not met")
    parser.add_argument(
        "--keep-page-cache", action="store_true", help="do not drop the page cache (tests)"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
