"""Time colabmagic against the shell recipes and the strongest peers on a simulated Drive.

Each group of runs (the zip, the tar.gz, the folder, the pack, the large zip on the
`multistream` profile) runs every command it needs once per round, in a rotating
order, each from a cold start (page cache dropped, simulated Drive reset), with
`sync` inside the timed span, so dirty pages are charged to whoever made them.

colabmagic runs two ways: through its CLI (a fresh process, as `!colabmagic ...` in a
notebook: it pays a Python start and its imports) and in-process, in one long-lived
Python that imported colabmagic and staged a tiny set before any clock started, as a
kernel that ran `%load_ext colabmagic` would. The seed cases (S1, S1f, S2, S3, P1) time
the CLI against the recipe, pair by pair; the peer cases time the in-process stage
against the fastest peer's median and against `cat` (the floor: one read of the source).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from colabmagic.source import WORKERS

from . import data

REPO = Path(__file__).resolve().parents[1]
# Subprocesses import this checkout of colabmagic, installed or not, from bytecode
# cached outside the repo (PYTHONDONTWRITEBYTECODE would make every run compile it,
# which no installed package does).
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "colabmagic-bench-pycache"),
}
RSS_TARGET_MB = 150
IMPORT_TARGET_MS = 30
MULTISTREAM = "multistream"
LARGE_MB = 320  # the large zip of S1p: above the 256 MB from which stage reads ranges


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- what runs


@dataclass(frozen=True)
class Runner:
    """One command a group times: a shell line, or a stage in the in-process worker."""

    name: str
    shown: str  # how the report names it
    shell: str | None = None  # run by /bin/sh (bash where it needs pipefail)
    stage: str | None = None  # SRC for colabmagic.stage in the worker
    cli: tuple[str, ...] | None = None  # colabmagic CLI arguments, after --drive ROOT
    needs: tuple[str, ...] = ()  # programs that must be on PATH
    bash: bool = False

    def missing(self) -> str | None:
        """The first program this runner needs that is not installed, else None."""
        return next((p for p in self.needs if shutil.which(p) is None), None)


@dataclass(frozen=True)
class Case:
    """A ratio the report shows: OURS over BASELINE (a runner), or over the fastest
    of PEERS (runner names), against TARGET."""

    name: str
    title: str
    target: float
    group: str
    ours: str
    baseline: str | None = None
    peers: tuple[str, ...] = ()
    paired: bool = False  # seed cases: the median of per-round ratios, as before

    def runners(self) -> set[str]:
        return {self.ours, *([self.baseline] if self.baseline else []), *self.peers}


@dataclass
class Group:
    name: str
    runners: dict[str, Runner]
    drive_outputs: tuple[str, ...] = ()  # globs under MyDrive, removed before each run
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def groups(root: Path) -> dict[str, Group]:
    """Every command of every case. ROOT holds MyDrive and has a space in its path: the
    recipes quote it as a user must."""
    mydrive = root / "MyDrive"
    zipped = shlex.quote(str(mydrive / "datasets" / "train.zip"))
    tgz = shlex.quote(str(mydrive / "datasets" / "train.tar.gz"))
    folder = shlex.quote(str(mydrive / "train"))
    py = shlex.quote(sys.executable)
    zip_src, tgz_src = "My Drive/datasets/train.zip", "My Drive/datasets/train.tar.gz"
    extract = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall()"
    folder_cp = (
        # The folders first, so that parallel `cp --parents` never race to make one.
        f'd="$PWD/train" && mkdir "$d" && cd {folder} && '
        f'find . -type d -print0 | (cd "$d" && xargs -0 mkdir -p) && '
        f'find . -type f -print0 | xargs -0 -P{WORKERS} -n 64 cp --parents -t "$d"'
    )
    found = [
        Group(
            "zip",
            {
                r.name: r
                for r in (
                    Runner("cli", "colabmagic stage (CLI)", cli=("stage", zip_src, "--quiet")),
                    Runner("inprocess", "colabmagic.stage (in-process)", stage=zip_src),
                    Runner(
                        "recipe",
                        "cp + unzip -q + rm",
                        shell=f"cp {zipped} . && unzip -q train.zip && rm train.zip",
                        needs=("unzip",),
                    ),
                    Runner("cat", "cat > /dev/null", shell=f"cat {zipped} > /dev/null"),
                    Runner("unzip", "unzip -q", shell=f"unzip -q {zipped}", needs=("unzip",)),
                    Runner("bsdtar", "bsdtar -xf", shell=f"bsdtar -xf {zipped}", needs=("bsdtar",)),
                    Runner(
                        "zipfile",
                        "zipfile extractall",
                        shell=f"{py} -c {shlex.quote(extract)} {zipped}",
                    ),
                )
            },
        ),
        Group(
            "tgz",
            {
                r.name: r
                for r in (
                    Runner("cli", "colabmagic stage (CLI)", cli=("stage", tgz_src, "--quiet")),
                    Runner("inprocess", "colabmagic.stage (in-process)", stage=tgz_src),
                    Runner(
                        "recipe",
                        "cp + tar xzf + rm",
                        shell=f"cp {tgz} . && tar xzf train.tar.gz && rm train.tar.gz",
                    ),
                    Runner("cat", "cat > /dev/null", shell=f"cat {tgz} > /dev/null"),
                    Runner("tar", "tar xzf", shell=f"tar xzf {tgz}", needs=("tar", "gzip")),
                    Runner(
                        "pigz",
                        "pigz -dc | tar x",
                        shell=f"set -o pipefail; pigz -dc {tgz} | tar x",
                        needs=("pigz", "tar", "bash"),
                        bash=True,
                    ),
                )
            },
        ),
        Group(
            "folder",
            {
                r.name: r
                for r in (
                    Runner(
                        "cli", "colabmagic stage (CLI)", cli=("stage", "My Drive/train", "--quiet")
                    ),
                    Runner("inprocess", "colabmagic.stage (in-process)", stage="My Drive/train"),
                    Runner("recipe", "cp -r", shell=f"cp -r {folder} ."),
                    Runner(
                        "xargs",
                        f"find | xargs -P{WORKERS} cp",
                        shell=folder_cp,
                        needs=("find", "xargs"),
                    ),
                )
            },
        ),
        Group(
            "pack",
            {
                r.name: r
                for r in (
                    Runner(
                        "cli", "colabmagic pack (CLI)", cli=("pack", "My Drive/train", "--quiet")
                    ),
                    Runner(
                        "recipe",
                        "zip -r in Drive",
                        shell=f"cd {shlex.quote(str(mydrive))} && zip -r -q train.zip train",
                        needs=("zip",),
                    ),
                )
            },
            drive_outputs=("train.zip", "train.zip.*"),
        ),
    ]
    return {g.name: g for g in found}


def large_group(root: Path) -> Group:
    zipped = shlex.quote(str(root / "MyDrive" / "datasets" / "large.zip"))
    runners = (
        Runner("inprocess", "colabmagic.stage (in-process)", stage="My Drive/datasets/large.zip"),
        Runner("cat", "cat > /dev/null (one stream)", shell=f"cat {zipped} > /dev/null"),
    )
    return Group("large", {r.name: r for r in runners})


ZIP_PEERS = ("unzip", "bsdtar", "zipfile")
CASES = (
    Case("S1", "stage zip / cp+unzip+rm", 0.70, "zip", "cli", "recipe", paired=True),
    Case("S1f", "stage zip / cat zip >/dev/null", 1.30, "zip", "cli", "cat", paired=True),
    Case("Z", "stage zip in-process / best peer", 1.00, "zip", "inprocess", peers=ZIP_PEERS),
    Case("Zf", "stage zip in-process / cat", 1.05, "zip", "inprocess", "cat"),
    Case("S2", "stage tar.gz / cp+tar xzf+rm", 0.70, "tgz", "cli", "recipe", paired=True),
    Case(
        "T", "stage tar.gz in-process / best peer", 1.00, "tgz", "inprocess", peers=("tar", "pigz")
    ),
    Case("Tf", "stage tar.gz in-process / cat", 1.05, "tgz", "inprocess", "cat"),
    Case("S3", "stage folder / cp -r", 0.10, "folder", "cli", "recipe", paired=True),
    Case(
        "F",
        f"stage folder in-process / xargs -P{WORKERS} cp",
        1.00,
        "folder",
        "inprocess",
        peers=("xargs",),
    ),
    Case("P1", "pack in Drive / zip -r in Drive", 0.10, "pack", "cli", "recipe", paired=True),
    Case("S1p", f"stage large zip ({MULTISTREAM}) / cat", 0.40, "large", "inprocess", "cat"),
)


# --------------------------------------------------------------------------- running


# GNU time reports a child's own peak RSS. wait4's ru_maxrss cannot go below the RSS of
# this Python at the spawn (exec keeps the old address space's high-water mark), about
# 20 MB: right for colabmagic, wrong for unzip's 3 MB. Used when installed.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
RSS_SOURCE = "GNU time %M" if GNU_TIME else "wait4 ru_maxrss (at least this Python's RSS)"


def run(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds from spawn of ARGV in CWD to the end of the `sync` after its exit,
    and its peak RSS in MB."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        spawned = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if GNU_TIME else argv
        started = time.perf_counter()
        proc = subprocess.Popen(
            spawned,
            cwd=cwd,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        # wait4, not wait: the rusage of this child (and what it waited for) alone.
        _, status, usage = os.wait4(proc.pid, 0)
        os.sync()  # what it left dirty is part of its cost
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"{shlex.join(argv)} exited {proc.returncode}: {' | '.join(tail)}")
        kib = usage.ru_maxrss  # KiB on Linux
        if GNU_TIME:
            kib = int(rss.read().split()[-1])
    return seconds, kib / 1024


# The in-process side: a Python that imports colabmagic and stages a tiny warm-up set
# (so the stage machinery is imported, as in a kernel that has staged before), then
# stages what it is sent, one JSON line per request, and answers with the seconds
# measured inside (stage + os.sync()). The parent keeps the cold starts.
WORKER = r"""
import json, os, shutil, sys, tempfile, time
import colabmagic
from colabmagic import drive

# Answers go to the original stdout; whatever the stage prints goes to stderr.
answers = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
drive.use_root(sys.argv[1])
for src in sys.argv[2:]:
    dest = tempfile.mkdtemp(prefix="warm-")
    colabmagic.stage(src, dest, quiet=True)
    shutil.rmtree(dest)
print(json.dumps({"ready": os.getpid()}), file=answers, flush=True)
for line in sys.stdin:
    ask = json.loads(line)
    try:
        os.chdir(ask["cwd"])
        started = time.perf_counter()
        colabmagic.stage(ask["src"], quiet=True)
        os.sync()
        answer = {"seconds": time.perf_counter() - started}
    except Exception as error:
        answer = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(answer), file=answers, flush=True)
"""


class Worker:
    """The long-lived in-process stager for one Drive root."""

    def __init__(self, root: Path, warm: list[Path]):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), *map(str, warm)],
            env=ENV,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the in-process worker exited {self.proc.wait()}")
        return json.loads(line)

    def stage(self, src: str, cwd: Path) -> float:
        self.proc.stdin.write(json.dumps({"src": src, "cwd": str(cwd)}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise BenchError(f"colabmagic.stage({src!r}) in-process: {answer['error']}")
        return answer["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def warm_set(folder: Path) -> list[Path]:
    """A tiny zip, tar.gz and folder, local, for the worker's untimed first stages."""
    from colabmagic.sample import make_dataset, make_tar_gz, make_zip

    train = folder / "warm"
    make_dataset(train, 4)
    return [make_zip(train, folder / "warm.zip"), make_tar_gz(train, folder / "warm.tar.gz"), train]


def cold_start(root: Path, drop_caches: bool) -> None:
    """Every run starts cold: dirty pages written, page cache dropped, Drive forgotten."""
    from colabmagic import fakedrive

    os.sync()
    if drop_caches:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    fakedrive.reset(root)


def clear(group: Group, root: Path, local: Path) -> None:
    """Put what earlier runs made out of the way (not timed).

    Moved aside, not deleted: on ext4 without a journal (as on this benchmark's VM) the
    inode allocator skips inodes deleted in the last minute, one by one, so creating
    10,000 files just after deleting 10,000 takes two to four times as long. That
    would time the clean-up, not the run. The work folder is deleted at the end.
    """
    if local.exists():
        trash = local.parent / "trash"
        trash.mkdir(exist_ok=True)
        local.rename(tempfile.mkdtemp(dir=trash))
    local.mkdir()
    for pattern in group.drive_outputs:
        for path in (root / "MyDrive").glob(pattern):
            path.unlink()


def measure(
    group: Group,
    wanted: set[str],
    root: Path,
    local: Path,
    pairs: int,
    drop_caches: bool,
    worker: Worker | None,
) -> None:
    """Run the WANTED runners of GROUP PAIRS rounds, each round in a rotated order."""
    order = [name for name in group.runners if name in wanted]
    for name in order:
        if missing := group.runners[name].missing():
            group.missing[name] = missing
    order = [name for name in order if name not in group.missing]
    for i in range(pairs):
        turn = order[i % len(order) :] + order[: i % len(order)] if order else []
        for name in turn:
            if name in group.errors:
                continue
            runner = group.runners[name]
            clear(group, root, local)
            cold_start(root, drop_caches)
            try:
                if runner.stage is not None:
                    if worker is None:
                        raise BenchError("no in-process worker")
                    seconds, peak = worker.stage(runner.stage, local), None
                elif runner.cli is not None:
                    argv = [sys.executable, "-m", "colabmagic", "--drive", str(root), *runner.cli]
                    seconds, peak = run(argv, local)
                else:
                    shell = ["/bin/bash"] if runner.bash else ["/bin/sh"]
                    seconds, peak = run([*shell, "-c", runner.shell], local)
            except BenchError as error:
                print(f"  {group.name}/{name} failed: {error}", file=sys.stderr)
                group.errors[name] = str(error)
                continue
            group.seconds.setdefault(name, []).append(seconds)
            if peak is not None:
                group.rss.setdefault(name, []).append(peak)
        print(f"  {group.name} round {i + 1}/{pairs} done", file=sys.stderr)
    clear(group, root, local)


# --------------------------------------------------------------------------- ratios


def _r(x: float) -> float:
    return round(x, 4)


def evaluate(case: Case, group: Group) -> dict:
    """CASE's ratio from GROUP's seconds, with every figure it was computed from."""
    doc: dict = {"title": case.title, "target": case.target, "group": group.name}
    secs = group.seconds
    commands = {n: command(group.runners[n]) for n in case.runners()}
    doc["commands"] = commands
    problem = group.errors.get(case.ours) or (
        f"{group.missing[case.ours]} not installed" if case.ours in group.missing else None
    )
    base = case.baseline
    if base in group.missing:
        problem = problem or f"{group.missing[base]} not installed"
    if base in group.errors:
        problem = problem or group.errors[base]
    if case.peers:
        doc["peers"] = {}
        for peer in case.peers:
            if peer in group.missing:
                doc["peers"][peer] = {
                    "command": commands[peer],
                    "not_installed": group.missing[peer],
                }
            elif peer in group.errors:
                doc["peers"][peer] = {"command": commands[peer], "error": group.errors[peer]}
            elif peer in secs:
                doc["peers"][peer] = {
                    "command": commands[peer],
                    "seconds": [round(t, 6) for t in secs[peer]],
                    "seconds_median": statistics.median(secs[peer]),
                }
        timed = {p: v["seconds_median"] for p, v in doc["peers"].items() if "seconds_median" in v}
        if timed:
            base = doc["best_peer"] = min(timed, key=timed.get)
        else:
            problem = problem or "no peer could run"
    if problem or case.ours not in secs or base not in secs:
        return {
            **doc,
            "ratio_median": None,
            "ratio_min": None,
            "ratio_max": None,
            "met": False,
            "error": problem or "not run",
        }
    ours, theirs = secs[case.ours], secs[base]
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    if case.paired:
        median = statistics.median(ratios)
    else:
        median = statistics.median(ours) / statistics.median(theirs)
    doc.update(
        ratio_median=_r(median),
        ratio_min=_r(min(ratios)),
        ratio_max=_r(max(ratios)),
        met=median <= case.target,
        colabmagic=case.ours,
        baseline=base,
        ratios=[_r(r) for r in ratios],
        # For diagnosis only; the table shows ratios.
        colabmagic_s=[round(t, 6) for t in ours],
        baseline_s=[round(t, 6) for t in theirs],
        colabmagic_s_median=statistics.median(ours),
        baseline_s_median=statistics.median(theirs),
    )
    if case.ours in group.rss:
        doc["colabmagic_peak_rss_mb"] = round(max(group.rss[case.ours]), 1)
    return doc


def command(runner: Runner) -> str:
    if runner.stage is not None:
        return f"colabmagic.stage({runner.stage!r})"
    if runner.cli is not None:
        return "colabmagic " + shlex.join(runner.cli)
    return runner.shell or ""


def import_ms(repeats: int = 7) -> float:
    """Median self time of colabmagic's own modules in `python -X importtime`, in ms."""
    samples = []
    for _ in range(repeats + 1):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import colabmagic"],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=REPO,
            check=True,
        )
        us = 0
        for line in done.stderr.splitlines():
            fields = line.removeprefix("import time:").split("|")
            if len(fields) == 3 and fields[0].strip().isdigit():
                name = fields[2].strip()
                if name == "colabmagic" or name.startswith("colabmagic."):
                    us += int(fields[0])
        samples.append(us / 1000)
    return statistics.median(samples[1:])  # the first run writes the bytecode cache


# --------------------------------------------------------------------------- report


def report(results: dict, found: dict[str, Group], import_time: float, args) -> dict:
    zip_rss = found["zip"].rss.get("cli") if "zip" in found else None
    rss_mb = round(max(zip_rss), 1) if zip_rss else None
    limits = {
        "peak_rss_mb": {
            "value": rss_mb,
            "target": RSS_TARGET_MB,
            "met": rss_mb is not None and rss_mb <= RSS_TARGET_MB,
        },
        "import_ms": {
            "value": import_time,
            "target": IMPORT_TARGET_MS,
            "met": import_time <= IMPORT_TARGET_MS,
        },
    }
    runs = {
        g.name: {
            "commands": {n: command(g.runners[n]) for n in g.seconds},
            "seconds": {n: [round(t, 6) for t in ts] for n, ts in g.seconds.items()},
            "peak_rss_mb": {n: round(max(v), 1) for n, v in g.rss.items()},
            "not_installed": g.missing,
            "errors": g.errors,
        }
        for g in found.values()
    }
    load = os.getloadavg()
    return {
        "cases": results,
        "runs": runs,
        "s1_floor": s1_floor(results),
        "peak_rss_mb": rss_mb,
        "import_ms": import_time,
        "profile": args.profile,
        "data": args.data,
        "files": args.files[0],
        "pairs": args.pairs,
        "large_mb": args.large_mb,
        "limits": limits,
        "page_cache_dropped": args.drop_caches,
        "peak_rss_from": RSS_SOURCE,
        "load_average": [round(x, 2) for x in load],
        "all_met": all(c["met"] for c in results.values())
        and all(v["met"] for v in limits.values()),
    }


def s1_floor(results: dict) -> float | None:
    """The S1 ratio if staging cost exactly one read of the archive: `cat` (S1f's
    baseline) over cp+unzip+rm (S1's), both timed in this run.  No stage can go
    below it, so it says how much room the S1 target leaves on this machine."""
    cat, recipe = results.get("S1f", {}), results.get("S1", {})
    if cat.get("baseline_s_median") is None or recipe.get("baseline_s_median") is None:
        return None
    return round(cat["baseline_s_median"] / recipe["baseline_s_median"], 4)


def table(doc: dict) -> str:
    """The report as aligned text: ratios and limits against their targets, never times."""

    def row(name: str, title: str, value: str, spread: str, target: str, verdict: str) -> str:
        return f"{name:<7}{title:<42}{value:>7}  {spread:<12}{target:<10}{verdict}"

    def verdict(met: bool) -> str:
        return "met" if met else "NOT MET"

    lines = [
        f"colabmagic vs shell recipes and peers: {doc['files']:,} {doc['data']} files, simulated "
        f"Drive profile {doc['profile']!r}, {doc['pairs']} rounds, ratio = colabmagic time / "
        "baseline time (peer cases: medians over the fastest peer's median)",
        row("case", "colabmagic / baseline", "median", "min-max", "target", ""),
    ]
    for name, c in doc["cases"].items():
        target = f"≤ {c['target']:.2f}"
        if c.get("error"):
            lines.append(row(name, c["title"], "-", "", target, f"FAILED: {c['error']}"))
            continue
        spread = f"{c['ratio_min']:.2f}-{c['ratio_max']:.2f}"
        median = f"{c['ratio_median']:.2f}"
        shown = verdict(c["met"])
        if "best_peer" in c:
            shown += f" (best peer: {c['best_peer']})"
        lines.append(row(name, c["title"], median, spread, target, shown))
        for peer, p in c.get("peers", {}).items():
            if "not_installed" in p:
                lines.append(
                    row("", f"  peer {peer}", "-", "", "", f"not installed: {p['not_installed']}")
                )
            elif "error" in p:
                lines.append(row("", f"  peer {peer}", "-", "", "", f"FAILED: {p['error']}"))
            else:
                ratio = c["colabmagic_s_median"] / p["seconds_median"]
                lines.append(row("", f"  vs {peer}", f"{ratio:.2f}", "", "", ""))
    if doc.get("s1_floor") is not None:
        title = "S1 if staging cost one read"
        lines.append(row("floor", title, f"{doc['s1_floor']:.2f}", "", "", "(cat / S1 recipe)"))
    rss, imp = doc["limits"]["peak_rss_mb"], doc["limits"]["import_ms"]
    shown = "-" if rss["value"] is None else f"{rss['value']:.0f} MB"
    target = f"≤ {rss['target']} MB"
    lines.append(
        row(
            "RSS",
            "peak RSS of the zip stage (CLI)",
            shown,
            "",
            target,
            "not run" if rss["value"] is None else verdict(rss["met"]),
        )
    )
    shown, target = f"{imp['value']:.1f} ms", f"≤ {imp['target']} ms"
    lines.append(
        row("import", "import colabmagic, self time", shown, "", target, verdict(imp["met"]))
    )
    if not doc["page_cache_dropped"]:
        lines.append("(the page cache was not dropped between runs)")
    lines.append(f"(load average at the end: {' '.join(map(str, doc['load_average']))})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",")]
    except ValueError:
        message = f"not a number or a comma list of numbers: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be at least 1")
    return sizes


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--files",
        type=sizes,
        default=[10_000],
        metavar="N[,N...]",
        help="files in the set (default 10,000); a comma list (10000,100000,1000000) runs "
        "the scale benchmark instead (benchmarks.scale)",
    )
    parser.add_argument(
        "--pairs", type=int, default=None, help="rounds per case (default 3; scale mode 1)"
    )
    parser.add_argument(
        "--profile",
        default="bench",
        choices=["bench", "colab", "fast"],
        help="how slow the simulated Drive is (default bench)",
    )
    parser.add_argument(
        "--data",
        default="random",
        choices=data.KINDS,
        help="random: nothing compresses, as JPEGs; mixed: half the files XML-like text "
        "(default random)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=data.default_cache(),
        metavar="DIR",
        help="where built sets are kept (default %(default)s)",
    )
    parser.add_argument(
        "--large-mb",
        type=int,
        default=LARGE_MB,
        metavar="MB",
        help=f"size of S1p's zip, in 10^6 bytes (default {LARGE_MB})",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--cases", default=None, metavar="S1,S2,...", help="run only these cases")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is not met")
    parser.add_argument(
        "--keep-page-cache",
        action="store_true",
        help="do not drop the page cache between runs (for tests on a shared machine)",
    )
    args = parser.parse_args(argv)
    if (args.pairs is not None and args.pairs < 1) or args.large_mb < 1:
        parser.error("--pairs and --large-mb must be at least 1")
    return args


def can_drop_caches(args: argparse.Namespace) -> bool:
    if args.keep_page_cache:
        print("--keep-page-cache: runs are not cold; ratios for tests only", file=sys.stderr)
        return False
    if os.geteuid() != 0:
        print("not root: the page cache cannot be dropped between runs; going on", file=sys.stderr)
        return False
    return True


def multistream_missing() -> str | None:
    from colabmagic.fakedrive import _settings

    return None if MULTISTREAM in _settings.PROFILES else f"profile {MULTISTREAM} not available"


def measure_all(
    args: argparse.Namespace, wanted: dict[str, set[str]], work: Path, drop_caches: bool
) -> tuple[dict[str, Group], dict[str, str]]:
    """Run every group WANTED names, in WORK; the groups run and the reasons for those
    that could not run."""
    from colabmagic import fakedrive

    found: dict[str, Group] = {}
    skipped: dict[str, str] = {}
    local = work / "local"
    warm = warm_set(work / "warm")
    shared = {n for n in wanted if n != "large"}
    if shared:
        source = data.dataset(args.cache, args.files[0], args.data)
        # A space in the Drive's path, as in "My Drive": the recipes must quote it.
        with fakedrive.mount(source, work / "Google Drive", profile=args.profile) as root:
            worker = Worker(root, warm) if any("inprocess" in wanted[n] for n in shared) else None
            try:
                for name, group in groups(root).items():
                    if name in shared:
                        print(f"{name}: {', '.join(sorted(wanted[name]))}", file=sys.stderr)
                        measure(group, wanted[name], root, local, args.pairs, drop_caches, worker)
                        found[name] = group
            finally:
                if worker:
                    worker.close()
    if "large" in wanted:
        if reason := multistream_missing():
            skipped["large"] = reason
        else:
            source = data.large(args.cache, args.large_mb)
            with fakedrive.mount(source, work / "Google Drive", profile=MULTISTREAM) as root:
                worker = Worker(root, warm)
                try:
                    group = large_group(root)
                    print(f"large: {MULTISTREAM} profile, {args.large_mb} MB", file=sys.stderr)
                    measure(group, wanted["large"], root, local, args.pairs, drop_caches, worker)
                    found["large"] = group
                finally:
                    worker.close()
    return found, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if len(args.files) > 1:
        from . import scale

        return scale.run(args)
    if args.pairs is None:
        args.pairs = 3
    from colabmagic import fakedrive

    if reason := fakedrive.available():
        print(f"the benchmark needs the simulated Drive: {reason}", file=sys.stderr)
        return 2
    drop_caches = args.drop_caches = can_drop_caches(args)
    chosen = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    wanted: dict[str, set[str]] = {}
    for case in chosen:
        wanted.setdefault(case.group, set()).update(case.runners())
    work = Path(tempfile.mkdtemp(prefix="colabmagic-bench-"))
    try:
        found, skipped = measure_all(args, wanted, work, drop_caches)
        return finish(args, chosen, found, skipped)
    finally:
        # rm, not shutil.rmtree: the runs leave hundreds of thousands of files.
        print(f"removing {work}", file=sys.stderr)
        subprocess.run(["rm", "-rf", "--", str(work)], check=False)


def finish(
    args: argparse.Namespace, chosen: list[Case], found: dict[str, Group], skipped: dict[str, str]
) -> int:
    """Compute the cases, print the table, write the JSON; the exit status."""
    results = {}
    for case in chosen:
        if case.group in skipped:
            results[case.name] = {
                "title": case.title,
                "target": case.target,
                "group": case.group,
                "ratio_median": None,
                "ratio_min": None,
                "ratio_max": None,
                "met": False,
                "error": skipped[case.group],
            }
        else:
            results[case.name] = evaluate(case, found[case.group])
    doc = report(results, found, round(import_ms(), 1), args)
    print(table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if args.check and not doc["all_met"] else 0
