"""What a measurement means: the figures, the projections, the advice, the table, the chart.

Projections model a file as a fixed cost plus its bytes at the streaming rate, both
fitted to the sample: an epoch is every file of PATH read once by one reader, and
`%stage` is PATH's bytes at Drive's streaming rate plus one open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ColabMagicError
from ..results import Result, count, duration, size
from .measure import SERIAL_MIN, STREAM_MIN_BYTES, Measured, Ranged, Read

STREAM_MEASURABLE = 1_000_000  # below this after the first reads, no MB/s is given
# Used for the %stage estimate only when PATH has no file large enough to stream.
ASSUMED_DRIVE_BANDWIDTH = 50e6
_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".zip", ".tar", ".tgz")
# Many small files are worth packing into one archive before staging them.
PACK_MIN_FILES = 100
PACK_MAX_MEAN_SIZE = 1_000_000
# Ranged streams pay when they read this much faster than one: beyond what a busy
# machine or Drive's own jitter makes of two figures of the same rate.
STREAMS_PAY = 1.25


@dataclass(frozen=True, repr=False)
class TimeReadResult(Result):
    """What `%timeread` measured; times in seconds, rates per second, MB = 10^6 bytes."""

    files_sampled: int
    drive_p50_s: float
    drive_p95_s: float
    drive_mb_s: float | None
    drive_files_s: float | None
    parallel_files_s: float | None
    local_p50_s: float | None
    local_mb_s: float | None
    epoch_drive_s: float
    epoch_local_s: float | None
    stage_estimate_s: float
    advice: str
    path: Path | None = None
    files_total: int = 0
    bytes_total: int = 0
    workers: int = 0  # files in flight in the parallel pass
    serial_files: int = 0
    parallel_files: int = 0
    stream_files: int = 0
    stream_bytes: int = 0  # bytes behind drive_mb_s
    local_files_s: float | None = None
    serial_mb_s: float | None = None  # what the one reader moved, latency included
    parallel_mb_s: float | None = None
    list_s: float | None = None
    already_warm: bool = False
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    # The largest file read by one stream (its front part) and by `ranged_streams`
    # ranged streams at once (its end, `ranged_bytes`); None where it holds < 8 MB.
    one_stream_mb_s: float | None = None
    ranged_mb_s: float | None = None
    ranged_streams: int = 0
    ranged_bytes: int = 0
    ranged_speedup: float | None = None  # ranged_mb_s / one_stream_mb_s
    best_streams: int | None = None  # the faster: ranged_streams, or 1 when close

    title = "%timeread"

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("path", str(self.path)),
            ("PATH holds", f"{_files(self.files_total)}, {size(self.bytes_total)}"),
        ]
        if self.list_s is not None:
            rows.append(("listing PATH", _time(self.list_s)))
        parts = [f"{self.serial_files} one at a time"] if self.serial_files else []
        if self.parallel_files:
            parts.append(f"{self.parallel_files} with {self.workers} in flight")
        if self.stream_files:
            parts.append(f"{self.stream_files} largest streamed")
        rows.append(("sample", f"{_files(self.files_sampled)}: " + ", ".join(parts)))
        rows.append(
            (
                "first read p50 / p95",
                f"Drive {_time(self.drive_p50_s)} / {_time(self.drive_p95_s)} · "
                f"local disk {_time(self.local_p50_s)}",
            )
        )
        if self.drive_files_s is not None:
            rows.append(
                (
                    "files/s, one reader",
                    f"Drive {_rate(self.drive_files_s)} ({_bandwidth(self.serial_mb_s)}) · "
                    f"local disk {_rate(self.local_files_s)}",
                )
            )
        if self.parallel_files_s is not None:
            rows.append(
                (
                    f"files/s, {self.workers} in flight",
                    f"Drive {_rate(self.parallel_files_s)} ({_bandwidth(self.parallel_mb_s)})",
                )
            )
        streamed = f" (on {size(self.stream_bytes)})" if self.drive_mb_s is not None else ""
        rows.append(
            (
                "streaming",
                f"Drive {_bandwidth(self.drive_mb_s)}{streamed} · "
                f"local disk {_bandwidth(self.local_mb_s)}",
            )
        )
        if self.ranged_speedup is not None:
            rows.append(
                (
                    f"streaming, 1 · {self.ranged_streams} ranged streams",
                    f"Drive {_bandwidth(self.one_stream_mb_s)} · {_bandwidth(self.ranged_mb_s)} "
                    f"(on {size(self.ranged_bytes)}): {_sig(self.ranged_speedup)}x",
                )
            )
        rows.append(
            (
                "epoch over PATH, one reader",
                f"Drive {_time(self.epoch_drive_s)} · local disk {_time(self.epoch_local_s)}",
            )
        )
        rows.append(("%stage would take", _time(self.stage_estimate_s)))
        rows.append(("measured in", _time(self.seconds)))
        return rows

    def notes(self) -> list[str]:
        return [self.advice, *self.warnings]

    def extra_html(self) -> str:
        return chart(
            [
                ("first read, p50", self.drive_p50_s, self.local_p50_s, _time),
                ("files/s, one reader", self.drive_files_s, self.local_files_s, _rate),
                ("streaming", self.drive_mb_s, self.local_mb_s, _bandwidth),
                ("epoch over PATH", self.epoch_drive_s, self.epoch_local_s, _time),
            ]
        )

    # IPython's pretty printer takes the first __repr__ or _repr_pretty_ up the MRO;
    # without this, the __repr__ below would hide Result's text table.
    _repr_pretty_ = Result._repr_pretty_

    def __repr__(self) -> str:
        return (
            f"TimeReadResult(files_sampled={self.files_sampled}, "
            f"drive_p50_s={self.drive_p50_s:.4f}, drive_mb_s={self.drive_mb_s!r}, "
            f"epoch_drive_s={self.epoch_drive_s:.1f}, stage_estimate_s={self.stage_estimate_s:.1f})"
        )


# --- figures -------------------------------------------------------------------------


def summarise(
    m: Measured,
    *,
    text: str,
    top: Path,
    entries: list[tuple[Path, int]],
    workers: int,
    list_s: float | None,
    seconds: float,
    warnings: list[str],
) -> TimeReadResult:
    """The figures, projections, warnings and advice of measurement M of PATH (TEXT as
    the user typed it, TOP resolved, ENTRIES its files with their sizes)."""
    from .. import status

    files_total = len(entries)
    bytes_total = sum(nbytes for _, nbytes in entries)
    if not (m.serial or m.stream):
        path, error = m.failed[0] if m.failed else (top, OSError("nothing read"))
        raise ColabMagicError(f"could not read {path}: {error.strerror or error}")

    drive_bw = _stream_rate(m.stream)
    local_bw = _stream_rate(m.local_stream)
    # Latency: the serial files, open to last byte; with none (PATH holds only large
    # files), the streamed files' open and first read.
    if m.serial:
        latencies = [r.seconds for r in m.serial]
        local_latencies = [r.seconds for r in m.local_serial]
    else:
        latencies = [r.first_s for r in m.stream]
        local_latencies = [r.first_s for r in m.local_stream]
        warnings.append(
            "PATH has no file under 16 MB to sample: latency is the large files' open "
            "and first 64 kB"
        )
    p50 = _percentile(latencies, 50)
    p95 = _percentile(latencies, 95)
    local_p50 = _percentile(local_latencies, 50) if local_latencies else None

    drive_files_s = len(m.serial) / m.serial_wall if m.serial and m.serial_wall > 0 else None
    local_files_s = (
        len(m.local_serial) / m.local_serial_wall
        if m.local_serial and m.local_serial_wall > 0
        else None
    )
    serial_mb_s = sum(r.nbytes for r in m.serial) / m.serial_wall / 1e6 if drive_files_s else None
    parallel_files_s = parallel_mb_s = None
    if m.parallel:
        # Little's law: with `inflight` files always open, throughput is inflight over
        # the mean time one file takes; unlike count / wall time, a last half-empty
        # wave of files does not drag it down.
        busy = sum(r.total_s for r in m.parallel)
        if busy > 0:
            parallel_files_s = m.inflight * len(m.parallel) / busy
            parallel_mb_s = m.inflight * sum(r.nbytes for r in m.parallel) / busy / 1e6

    sample = m.serial or m.stream
    local_sample = m.local_serial or m.local_stream
    epoch_drive = _epoch(files_total, bytes_total, sample, drive_bw, first_only=not m.serial)
    epoch_local = (
        _epoch(files_total, bytes_total, local_sample, local_bw, first_only=not m.serial)
        if local_sample
        else None
    )
    stage_bw = drive_bw
    if stage_bw is None:
        stage_bw = ASSUMED_DRIVE_BANDWIDTH
        largest = max(nbytes for _, nbytes in entries)
        warnings.append(
            f"Drive's streaming rate not measured (PATH's largest file is {size(largest)}): "
            f"the %stage estimate assumes {ASSUMED_DRIVE_BANDWIDTH / 1e6:.0f} MB/s, "
            "typical of Colab"
        )
    elif sum(r.nbytes - r.first_bytes for r in m.stream) < STREAM_MIN_BYTES:
        warnings.append(
            f"streaming rate measured on only {size(_streamed(m.stream))} "
            "(PATH's largest files): a rough figure"
        )
    stage_estimate = bytes_total / stage_bw + p50
    # %stage of a folder copies it file by file with `workers` in flight: the opens
    # overlap, but each wave of them still costs one latency.
    stage_folder = bytes_total / stage_bw + -(-files_total // workers) * p50

    already_warm = m.warm_checked > 0 and 2 * m.warm_found > m.warm_checked
    fstype = status.mount_type(top) or ""
    on_drive = fstype.startswith(("fuse.drive", "fuse.colabmagic"))
    if not on_drive:
        warnings.append(
            f"PATH is on a plain folder ({fstype or 'local disk'}), not a Drive mount: "
            "these are local disk's figures; %drive --fake DIR rehearses Drive's latency"
        )
    elif already_warm:
        cure = (
            "%drive --remount makes it cold again"
            if fstype.startswith("fuse.colabmagic")
            else "files not read yet this session will be slower"
        )
        warnings.append(
            f"{m.warm_found} of {m.warm_checked} files checked were already in Drive's "
            f"cache (read before), so the first-read figures are optimistic; {cure}"
        )
    if m.serial and len(m.serial) < SERIAL_MIN and len(m.serial) < files_total:
        warnings.append(f"p95 from only {len(m.serial)} files: a rough figure")

    advice = advise(
        text,
        top,
        entries,
        epoch_drive=epoch_drive,
        epoch_local=epoch_local,
        stage=stage_estimate,
        stage_folder=stage_folder,
    )
    one_stream = _stream_rate(m.stream[:1]) if m.ranged is not None else None
    ranged = _ranged_rate(m.ranged)
    speedup = best = None
    if one_stream is not None and ranged is not None:
        speedup = ranged / one_stream
        best = m.ranged.streams if speedup >= STREAMS_PAY else 1
        advice += " " + advise_streams(
            m.ranged.path.name, one_stream, ranged, m.ranged.streams, speedup
        )
    return TimeReadResult(
        files_sampled=len(m.stream) + len(m.serial) + len(m.parallel),
        drive_p50_s=p50,
        drive_p95_s=p95,
        drive_mb_s=drive_bw / 1e6 if drive_bw else None,
        drive_files_s=drive_files_s,
        parallel_files_s=parallel_files_s,
        local_p50_s=local_p50,
        local_mb_s=local_bw / 1e6 if local_bw else None,
        epoch_drive_s=epoch_drive,
        epoch_local_s=epoch_local,
        stage_estimate_s=stage_estimate,
        advice=advice,
        path=top,
        files_total=files_total,
        bytes_total=bytes_total,
        workers=m.inflight,
        serial_files=len(m.serial),
        parallel_files=len(m.parallel),
        stream_files=len(m.stream),
        stream_bytes=_streamed(m.stream) if drive_bw else 0,
        local_files_s=local_files_s,
        serial_mb_s=serial_mb_s,
        parallel_mb_s=parallel_mb_s,
        list_s=list_s,
        already_warm=already_warm,
        warnings=tuple(warnings),
        seconds=seconds,
        one_stream_mb_s=one_stream / 1e6 if one_stream is not None else None,
        ranged_mb_s=ranged / 1e6 if ranged is not None else None,
        ranged_streams=m.ranged.streams if m.ranged is not None else 0,
        ranged_bytes=m.ranged.nbytes if m.ranged is not None else 0,
        ranged_speedup=speedup,
        best_streams=best,
    )


def _streamed(reads: list[Read]) -> int:
    return sum(r.nbytes - r.first_bytes for r in reads)


def _stream_rate(reads: list[Read]) -> float | None:
    """Bytes/s after each file's first read (which carries the latency); None when
    too few bytes came that way to say."""
    nbytes = _streamed(reads)
    seconds = sum(r.rest_s for r in reads)
    if nbytes < STREAM_MEASURABLE or seconds <= 0:
        return None
    return nbytes / seconds


def _ranged_rate(ranged: Ranged | None) -> float | None:
    """Bytes/s of the ranged streams together; None when too little was read to say."""
    if ranged is None or ranged.nbytes < STREAM_MEASURABLE or ranged.seconds <= 0:
        return None
    return ranged.nbytes / ranged.seconds


def advise_streams(name: str, one: float, ranged: float, streams: int, speedup: float) -> str:
    """One sentence: whether ranged readers beat one stream here (rates in bytes/s)."""
    one_text, ranged_text = _bandwidth(one / 1e6), _bandwidth(ranged / 1e6)
    if speedup >= STREAMS_PAY:
        return (
            f"On this Drive {streams} ranged streams read {name} {_sig(speedup)}x as fast "
            f"as one ({ranged_text}, not {one_text}): %stage --streams {streams} reads a "
            "large archive that way."
        )
    return (
        f"One stream is enough on this Drive: {streams} ranged streams read {name} at "
        f"{ranged_text}, {_sig(speedup)}x one stream's {one_text}."
    )


def _epoch(
    files_total: int,
    bytes_total: int,
    sample: list[Read],
    bandwidth: float | None,
    *,
    first_only: bool = False,
) -> float:
    """Time for one reader to read every file once: a per-file cost fitted to SAMPLE
    plus the bytes at BANDWIDTH (or, with none, the sample's mean time per file)."""
    if first_only:
        costs = [(r.first_s, r.first_bytes) for r in sample]
    else:
        costs = [(r.seconds, r.nbytes) for r in sample]
    if bandwidth is None:
        return files_total * sum(s for s, _ in costs) / len(costs)
    overhead = sum(max(0.0, s - n / bandwidth) for s, n in costs) / len(costs)
    return files_total * overhead + bytes_total / bandwidth


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def advise(
    text: str,
    top: Path,
    entries: list[tuple[Path, int]],
    *,
    epoch_drive: float,
    epoch_local: float | None,
    stage: float,
    stage_folder: float | None = None,
) -> str:
    """One line: stage (and how), or read straight from Drive.  STAGE is what staging
    one archive of PATH takes, STAGE_FOLDER what copying PATH file by file takes."""
    local = epoch_local if epoch_local is not None else 0.0
    saving = epoch_drive - local

    def pays(cost: float) -> bool:
        # Worth it when it saves a noticeable time per epoch and pays for itself
        # within two epochs.
        return saving >= 1.0 and cost <= 2 * saving

    def takes(cost: float) -> str:
        return (
            f"takes about {_time(cost)}; then an epoch reads in {_time(local)}, "
            f"not {_time(epoch_drive)}."
        )

    if not pays(stage):
        return (
            f"Reading straight from Drive is fine here: an epoch reads in "
            f"{_time(epoch_drive)} from Drive and {_time(local)} from local disk, and "
            f"%stage would take {_time(stage)}."
        )
    typed = text.rstrip("/")
    if top.is_file():
        return f'Stage it: %stage "{typed}" {takes(stage)}'
    sibling = _sibling_archive(typed, top)
    if sibling is not None:
        return f'Stage its archive: %stage "{sibling}" {takes(stage)}'
    suffixes = {_archive_suffix(p.name) for p, _ in entries}
    if len(suffixes) == 1 and None not in suffixes and all(p.parent == top for p, _ in entries):
        return f'Stage the archives: %stage "{typed}/*{suffixes.pop()}" {takes(stage)}'
    folder_cost = stage if stage_folder is None else stage_folder
    mean_size = sum(n for _, n in entries) / len(entries)
    many_small = len(entries) >= PACK_MIN_FILES and mean_size < PACK_MAX_MEAN_SIZE
    if many_small or not pays(folder_cost):
        return (
            f'Pack it once, then stage it: %packdrive "{typed}", then %stage "{typed}.zip" '
            f"{takes(stage)}"
        )
    return f'Stage it: %stage "{typed}" copies it file by file and {takes(folder_cost)}'


def _archive_suffix(name: str) -> str | None:
    lowered = name.lower()
    return next((s for s in _ARCHIVE_SUFFIXES if lowered.endswith(s)), None)


def _sibling_archive(typed: str, top: Path) -> str | None:
    """The archive beside folder TOP (as %packdrive writes it), spelled as the user did."""
    for suffix in _ARCHIVE_SUFFIXES:
        if top.with_name(top.name + suffix).is_file():
            return typed + suffix
    return None


def _files(n: int) -> str:
    return f"{count(n)} file" if n == 1 else f"{count(n)} files"


# --- formatting ----------------------------------------------------------------------


# Every measured figure in the table has the same three significant figures, and a
# time or a byte rate is in the unit that keeps it between 1 and 1,000: "1.99 (9.55
# kB/s)", not "1.99 (0.00955 MB/s)" beside "2,463".
FIGURES = 3


def _sig(value: float) -> str:
    """VALUE to FIGURES significant figures, never in e-notation: 0.0123, 1.99, 26,600."""
    if value == 0:
        return "0"
    rounded = float(f"{value:.{FIGURES}g}")
    decimals = max(0, FIGURES - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"


def _scaled(value: float, units: tuple[tuple[str, float], ...]) -> str:
    """VALUE in the largest of UNITS (name, scale; largest first) it is at least 1 of."""
    rounded = float(f"{value:.{FIGURES}g}")  # 999.7 ms is 1.00 s, not 1,000 ms
    for unit, scale in units:
        if rounded >= scale:
            return f"{_sig(value / scale)} {unit}"
    unit, scale = units[-1]
    return f"{_sig(value / scale)} {unit}"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds >= 60:
        return duration(seconds)  # minutes and hours in words
    return _scaled(seconds, (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)))


def _rate(value: float | None) -> str:
    """Files per second."""
    return "n/a" if value is None else _sig(value)


def _bandwidth(mb_s: float | None) -> str:
    """MB_S (10^6 bytes/s, as the result's fields hold it) in kB/s, MB/s or GB/s."""
    if mb_s is None:
        return "n/a"
    return _scaled(mb_s * 1e6, (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3), ("B/s", 1.0)))


_DRIVE_COLOR = "#e8710a"
_LOCAL_COLOR = "#1a73e8"


def chart(metrics: list[tuple[str, float | None, float | None, Any]]) -> str:
    """A small SVG bar chart, Drive against local disk, one pair of bars per metric."""
    import html

    label_w, bar_w, value_w, bar_h = 150, 240, 90, 13
    width = label_w + bar_w + value_w
    shown = [m for m in metrics if m[1] is not None or m[2] is not None]
    parts = []
    y = 22
    for label, drive_value, local_value, fmt in shown:
        top = max(v for v in (drive_value, local_value) if v is not None) or 1.0
        parts.append(f'<text x="0" y="{y + bar_h}" font-weight="bold">{html.escape(label)}</text>')
        for value, color in ((drive_value, _DRIVE_COLOR), (local_value, _LOCAL_COLOR)):
            w = 0.0 if value is None else max(2.0, bar_w * value / top)
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>'
            )
            parts.append(
                f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 2}">'
                f"{html.escape(fmt(value))}</text>"
            )
            y += bar_h + 2
        y += 10
    legend = (
        f'<rect x="0" y="2" width="12" height="12" fill="{_DRIVE_COLOR}"/>'
        '<text x="16" y="12">Drive</text>'
        f'<rect x="70" y="2" width="12" height="12" fill="{_LOCAL_COLOR}"/>'
        '<text x="86" y="12">local disk (cold)</text>'
    )
    return (
        f'<svg class="colabmagic-chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{y}" viewBox="0 0 {width} {y}" role="img" '
        f'font-family="sans-serif" font-size="12" fill="currentColor">'
        f"<title>{html.escape('Drive against local disk')}</title>"
        f"{legend}{''.join(parts)}</svg>"
    )
