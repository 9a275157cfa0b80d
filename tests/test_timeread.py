"""%timeread: the sample plan, the figures and their accuracy on the simulated Drive."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic import drive, fakedrive, source
from colabmagic.timeread import TimeReadResult, measure, report
from tests.builders import random_bytes, random_files, write_file, write_files

needs_fuse = pytest.mark.skipif(
    fakedrive.available() is not None, reason=f"fake Drive unavailable: {fakedrive.available()}"
)


# --- the package ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        "import colabmagic.timeread.measure",
        "from colabmagic.timeread import report",
        "import colabmagic; colabmagic.timeread",  # bound by __getattr__ first
    ],
)
def test_colabmagic_timeread_is_the_function_however_the_package_is_imported(first):
    """Importing the subpackage binds its name on colabmagic; the function must stay."""
    code = (
        f"{first}\n"
        "import types, colabmagic, colabmagic.timeread\n"
        "from colabmagic import timeread\n"
        "import colabmagic.timeread.report\n"
        "assert isinstance(colabmagic.timeread, types.FunctionType), colabmagic.timeread\n"
        "assert timeread is colabmagic.timeread\n"
        "import sys; print(sys.modules['colabmagic.timeread'].timeread is timeread)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True\n"


# --- the plan --------------------------------------------------------------------------


def test_plan_is_seeded_disjoint_and_streams_the_largest_files():
    entries = [(Path(f"/d/small{i:03d}"), 10_000 + i) for i in range(200)]
    entries += [(Path(f"/d/big{i}"), (i + 1) * 5_000_000) for i in range(4)]
    entries += [(Path("/d/huge"), 40_000_000)]

    plan = measure.plan_sample(entries, 100, seed=7)

    # The largest files, largest first, until 32 MB are planned.
    assert plan.stream == (Path("/d/huge"),)
    assert len(plan.serial) == 30 and len(plan.parallel) == 70
    parts = [set(plan.stream), set(plan.serial), set(plan.parallel)]
    assert sum(map(len, parts)) == len(set().union(*parts))  # no file in two passes
    assert plan == measure.plan_sample(list(reversed(entries)), 100, seed=7)
    assert plan.serial != measure.plan_sample(entries, 100, seed=8).serial
    # The largest file's last 16 MB are for the ranged streams, its front for one stream.
    assert plan.ranged == (24_000_000, 16_000_000)


def test_plan_keeps_large_files_out_of_the_latency_sample():
    entries = [(Path(f"/d/shard{i}"), 20_000_000) for i in range(5)]
    entries += [(Path(f"/d/tiny{i}"), 100) for i in range(4)]

    plan = measure.plan_sample(entries, 100)

    assert plan.stream == (Path("/d/shard0"), Path("/d/shard1"))  # 40 MB >= 32 MB
    assert {p.name for p in plan.serial + plan.parallel} == {f"tiny{i}" for i in range(4)}
    assert len(plan.serial) == 2 and len(plan.parallel) == 2
    assert plan.ranged == (10_000_000, 10_000_000)  # half of the largest file


def test_plan_compares_streams_only_on_a_file_of_8_mb_or_more():
    big = [(Path("/d/a"), 8_000_000), (Path("/d/b"), 100)]
    assert measure.plan_sample(big, 10).ranged == (4_000_000, 4_000_000)
    smaller = [(Path("/d/a"), 7_999_999), (Path("/d/b"), 100)]
    assert measure.plan_sample(smaller, 10).ranged is None


def test_plan_with_few_files():
    entries = [(Path("/d/only"), 5)]
    plan = measure.plan_sample(entries, 100)
    assert plan.stream == () and plan.serial == (Path("/d/only"),) and plan.parallel == ()


# --- on a plain folder -------------------------------------------------------------------


def test_magic_on_a_plain_folder(ip, drive_root, tmp_path):
    train = drive_root / "MyDrive" / "my <set> & co"
    write_files(train, random_files(60, (2_000, 9_000)))
    (train / "labels.npy").write_bytes(os.urandom(2_500_000))
    local = tmp_path / "scratch"

    result = ip.run_line_magic(
        "timeread", f'"My Drive/my <set> & co" --files 40 --workers 16 --local {local}'
    )

    assert isinstance(result, TimeReadResult)
    assert result.path == train
    assert result.files_total == 61
    assert result.bytes_total == sum(p.stat().st_size for p in train.rglob("*") if p.is_file())
    assert (result.serial_files, result.parallel_files, result.stream_files) == (20, 20, 1)
    assert result.files_sampled == 41
    assert result.workers == 16
    assert 0 < result.drive_p50_s <= result.drive_p95_s
    assert result.drive_mb_s > 0 and result.local_mb_s > 0
    assert result.stream_bytes == 2_500_000 - 64 * 1024
    assert result.drive_files_s > 0 and result.parallel_files_s > 0
    assert result.local_p50_s > 0 and result.local_files_s > 0
    assert result.epoch_drive_s > 0 and result.epoch_local_s > 0
    assert result.stage_estimate_s > result.drive_p50_s
    # A plain folder is local disk: it says so, and sees nothing to stage.
    assert result.advice.startswith("Reading straight from Drive is fine here")
    assert any("plain folder" in w for w in result.warnings)
    assert local.is_dir() and list(local.iterdir()) == []  # the local copies are gone

    text = str(result)
    assert text.startswith("%timeread")
    assert ip.display_formatter.format(result)[0]["text/plain"] == text
    for label in ("first read p50 / p95", "files/s, 16 in flight", "streaming"):
        assert label in text
    page = result._repr_html_()
    assert page.count("<tr>") == len(result.rows())
    assert '<svg class="colabmagic-chart"' in page and "local disk (cold)" in page
    assert "my &lt;set&gt; &amp; co" in page
    assert "<set>" not in page


def test_python_and_cli_twins(drive_root, capsys):
    write_files(drive_root / "MyDrive" / "train", random_files(12, (1_000, 2_000)))

    result = colabmagic.timeread("My Drive/train", files=6, workers=2, quiet=True)

    assert result.files_sampled == 6 and result.serial_files == 3
    assert result.parallel_files == 3 and result.workers == 2
    assert result.drive_mb_s is None  # nothing large enough to stream
    assert any("assumes 50 MB/s" in w for w in result.warnings)

    from colabmagic.cli import main

    assert main(["--drive", str(drive_root), "timeread", "My Drive/train", "--files", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("%timeread") and "sample" in out


@pytest.mark.parametrize("workers", [0, -3, 257, 2.5, True])
def test_the_python_twin_checks_workers_as_the_magic_does(drive_root, workers):
    (drive_root / "MyDrive" / "a.txt").write_text("a")
    with pytest.raises(colabmagic.ColabMagicError, match="--workers must be 1 or more"):
        colabmagic.timeread("My Drive/a.txt", workers=workers, quiet=True)


def test_default_path_is_all_of_mydrive(drive_root):
    (drive_root / "MyDrive" / "a.txt").write_text("a")
    (drive_root / "MyDrive" / "sub").mkdir()
    (drive_root / "MyDrive" / "sub" / "b.txt").write_text("bb")

    result = colabmagic.timeread(quiet=True)

    assert result.path == drive_root / "MyDrive"
    assert (result.files_total, result.bytes_total) == (2, 3)


def test_a_single_file(drive_root):
    big = drive_root / "MyDrive" / "shard-000000.tar"
    big.write_bytes(os.urandom(3_000_000))

    result = colabmagic.timeread("My Drive/shard-000000.tar", quiet=True)

    assert result.files_total == 1 and result.list_s is None
    assert (result.stream_files, result.serial_files) == (1, 0)
    assert result.drive_mb_s > 0
    assert any("no file under 16 MB" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('"My Drive/trian"', 'did you mean "train"'),
        ('"My Drive/empty"', '"My Drive/empty" holds no files'),
        ('"My Drive/train" --files 0', "--files must be 1 or more"),
        ('"My Drive/train" --workers 0', "--workers must be 1 or more"),
    ],
)
def test_usage_errors(ip, drive_root, line, message):
    (drive_root / "MyDrive" / "train").mkdir()
    (drive_root / "MyDrive" / "train" / "a").write_bytes(b"a")
    (drive_root / "MyDrive" / "empty").mkdir()
    with pytest.raises(UsageError, match="^%timeread: ") as caught:
        ip.run_line_magic("timeread", line)
    assert message in str(caught.value)


# --- the table's figures ------------------------------------------------------------


def _result(**fields) -> TimeReadResult:
    base = dict(
        files_sampled=10,
        drive_p50_s=0.000123,
        drive_p95_s=0.5004,
        drive_mb_s=2463.2,
        drive_files_s=1.99,
        parallel_files_s=26_633.0,
        local_p50_s=0.0092,
        local_mb_s=0.0423,
        epoch_drive_s=0.99996,
        epoch_local_s=12.345,
        stage_estimate_s=0.011,
        advice="Reading straight from Drive is fine here.",
        path=Path("/d/MyDrive/train"),
        files_total=10,
        bytes_total=10_000,
        workers=16,
        serial_files=5,
        parallel_files=5,
        local_files_s=4178.0,
        serial_mb_s=0.00955,
        parallel_mb_s=1679.4,
        stream_files=1,
        stream_bytes=5_000_000,
    )
    return TimeReadResult(**{**base, **fields})


def test_every_figure_has_three_significant_figures_in_a_unit_that_fits():
    rows = dict(_result().rows())

    assert rows["files/s, one reader"] == "Drive 1.99 (9.55 kB/s) · local disk 4,180"
    assert rows["files/s, 16 in flight"] == "Drive 26,600 (1.68 GB/s)"
    assert rows["streaming"] == "Drive 2.46 GB/s (on 5.0 MB) · local disk 42.3 kB/s"
    assert rows["first read p50 / p95"] == "Drive 123 µs / 500 ms · local disk 9.20 ms"
    assert rows["epoch over PATH, one reader"] == "Drive 1.00 s · local disk 12.3 s"
    assert rows["%stage would take"] == "11.0 ms"
    page = _result()._repr_html_()
    assert "9.55 kB/s" in page and "0.00955" not in page


def test_one_stream_against_four_is_a_row_of_its_own():
    assert "streaming, 1 · 4 ranged streams" not in dict(_result().rows())  # not measured
    ranged = _result(
        one_stream_mb_s=24.04,
        ranged_mb_s=93.71,
        ranged_streams=4,
        ranged_bytes=15_737_856,
        ranged_speedup=3.898,
        best_streams=4,
    )
    row = dict(ranged.rows())["streaming, 1 · 4 ranged streams"]
    assert row == "Drive 24.0 MB/s · 93.7 MB/s (on 15.7 MB): 3.90x"
    assert "streaming, 1 · 4 ranged streams" in ranged._repr_html_()


def test_stream_advice_names_the_flag_only_when_streams_pay():
    pays = report.advise_streams("train.zip", 24e6, 93.7e6, 4, 93.7 / 24)
    assert pays == (
        "On this Drive 4 ranged streams read train.zip 3.90x as fast as one "
        "(93.7 MB/s, not 24.0 MB/s): %stage --streams 4 reads a large archive that way."
    )
    close = report.advise_streams("train.zip", 99.8e6, 98.7e6, 4, 98.7 / 99.8)
    assert close == (
        "One stream is enough on this Drive: 4 ranged streams read train.zip at "
        "98.7 MB/s, 0.989x one stream's 99.8 MB/s."
    )
    assert "--streams" not in report.advise_streams("x", 50e6, 60e6, 4, 1.2)


def test_the_measured_table_has_no_figure_of_another_precision(drive_root):
    train = drive_root / "MyDrive" / "train"
    write_files(train, random_files(30, (500, 20_000)))
    (train / "big.bin").write_bytes(os.urandom(2_000_000))

    result = colabmagic.timeread("My Drive/train", files=20, quiet=True)

    counted = ("path", "PATH holds", "sample")  # counts and humanize's sizes
    measured = [value for label, value in result.rows() if label not in counted]
    measured = [re.sub(r"\(on [^)]*\)", "", v) for v in measured]  # a size: humanize's
    figures = re.findall(r"(\d[\d,.]*) (?:µs|ms|s|files/s|[kMG]?B/s)?", " ".join(measured))
    for figure in figures:
        digits = figure.replace(",", "").replace(".", "").lstrip("0")
        # 3 significant figures; a larger whole number (26,600) ends in zeros.
        assert len(digits) == 3 or len(digits) > 3 and set(digits[3:]) == {"0"}, figure


# --- Drive drop-outs -------------------------------------------------------------------


def _scandir_failing(times: int):
    """os.scandir, but a listing of a folder named "train" fails TIMES times first."""
    real = os.scandir
    left = [times]

    def scandir(path):
        if not isinstance(path, int) and Path(path).name == "train" and left[0] > 0:
            left[0] -= 1
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return real(path)

    return scandir


def test_a_listing_that_drops_out_is_listed_again(drive_root, monkeypatch):
    files = write_files(drive_root / "MyDrive" / "train", random_files(9, 100))
    monkeypatch.setattr(source, "backoff", lambda attempt: 0.0)
    monkeypatch.setattr(os, "scandir", _scandir_failing(2))

    result = colabmagic.timeread("My Drive/train", quiet=True)

    assert (result.files_total, result.bytes_total) == (9, sum(map(len, files.values())))


def test_a_listing_that_keeps_dropping_out_fails_after_the_retries_in_force(
    ip, drive_root, monkeypatch
):
    write_files(drive_root / "MyDrive" / "train", random_files(3, 100))
    monkeypatch.setattr(source, "backoff", lambda attempt: 0.0)
    monkeypatch.setattr(os, "scandir", _scandir_failing(3))
    ip.run_line_magic("config", "ColabMagic.retries = 2")

    with pytest.raises(UsageError, match="^%timeread: listing .*train failed with ENOTCONN "):
        ip.run_line_magic("timeread", "train")
    ip.run_line_magic("config", "ColabMagic.retries = 3")
    assert ip.run_line_magic("timeread", "train").files_total == 3  # the 4th listing works


@needs_fuse
def test_a_file_drive_cannot_read_is_counted_and_named(drive_root, tmp_path):
    src = tmp_path / "src"
    write_files(src / "MyDrive" / "train", random_files(12, (1_000, 2_000)))
    bad = write_file(src / "MyDrive" / "train" / "bad.jpg", random_bytes(5_000, 1))
    with fakedrive.mount(
        src, profile="fast", fail_after=1_000, fail_path="MyDrive/train/bad.jpg", fail_always=True
    ) as root:
        drive.use_root(root)
        result = colabmagic.timeread("My Drive/train", files=13, quiet=True)

    assert result.files_total == 13 and result.files_sampled == 12
    (note,) = [w for w in result.warnings if "could not be read" in w]
    assert note == (
        "1 file could not be read from Drive (left out of the figures), e.g. "
        f"{bad.name}: Input/output error"
    )


@needs_fuse
def test_the_copy_to_local_disk_survives_a_drop_out(tmp_path, monkeypatch):
    """The untimed copy of a sampled file to local disk goes through the retry policy."""
    data = random_bytes(300_000, 5)
    src = tmp_path / "src"
    write_file(src / "MyDrive" / "x.bin", data)
    monkeypatch.setattr(source, "backoff", lambda attempt: 0.0)
    buf = bytearray(measure.CHUNK)
    with fakedrive.mount(src, profile="fast") as root:
        first = measure.read_file(root / "MyDrive" / "x.bin", buf)
        fakedrive.configure(
            root, fail_after=200_000, fail_errno="ENOTCONN", fail_path="MyDrive/x.bin"
        )
        copy = measure.copy_cold(first, tmp_path / "copy", buf)

    assert copy.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "src"]


# --- advice --------------------------------------------------------------------------


def _advice(top: Path, entries, *, drive_s: float, local_s: float, stage_s: float) -> str:
    return report.advise(
        f"My Drive/{top.name}",
        top,
        entries,
        epoch_drive=drive_s,
        epoch_local=local_s,
        stage=stage_s,
    )


def test_advice_names_the_command_that_fits(tmp_path):
    small = tmp_path / "train"
    small.mkdir()
    many_small = [(small / f"{i}.jpg", 20_000) for i in range(500)]
    assert _advice(small, many_small, drive_s=250, local_s=1, stage_s=0.5).startswith(
        'Pack it once, then stage it: %packdrive "My Drive/train", then %stage "My Drive/train.zip"'
    )
    (tmp_path / "train.zip").write_bytes(b"PK")
    assert _advice(small, many_small, drive_s=250, local_s=1, stage_s=0.5).startswith(
        'Stage its archive: %stage "My Drive/train.zip"'
    )

    shards = tmp_path / "shards"
    shards.mkdir()
    tars = [(shards / f"s-{i:06d}.tar", 500_000_000) for i in range(4)]
    assert _advice(shards, tars, drive_s=40, local_s=2, stage_s=40).startswith(
        'Stage the archives: %stage "My Drive/shards/*.tar"'
    )

    videos = tmp_path / "videos"
    videos.mkdir()
    clips = [(videos / f"{i}.mp4", 50_000_000) for i in range(10)]
    assert _advice(videos, clips, drive_s=10, local_s=0.5, stage_s=10.5).startswith(
        'Stage it: %stage "My Drive/videos" copies it'
    )

    one = tmp_path / "weights.bin"
    one.write_bytes(b"w")
    assert _advice(one, [(one, 1)], drive_s=9, local_s=0.1, stage_s=9).startswith(
        'Stage it: %stage "My Drive/weights.bin"'
    )


def test_advice_keeps_drive_when_staging_does_not_pay(tmp_path):
    top = tmp_path / "train"
    top.mkdir()
    entries = [(top / f"{i}", 1000) for i in range(20)]
    advice = _advice(top, entries, drive_s=0.5, local_s=0.01, stage_s=0.1)
    assert advice.startswith("Reading straight from Drive is fine here")
    # Saves 5 s an epoch but would take 20 s to stage: not within two epochs.
    assert "fine" in _advice(top, entries, drive_s=5, local_s=0, stage_s=20)


# --- on the simulated Drive ---------------------------------------------------------------


@needs_fuse
def test_accuracy_on_the_simulated_drive(drive_root, tmp_path):
    """DESIGN §3: with 50 ms open latency and 40 MB/s, the reported p50 first-read
    latency and streaming MB/s are each within 15% of the configured values."""
    open_latency, bandwidth = 0.050, 40e6
    src = tmp_path / "src"
    train = src / "MyDrive" / "train"
    write_files(train, random_files(40, (2_000, 6_000)))
    for i in range(2):
        (train / f"big{i}.bin").write_bytes(os.urandom(8_000_000))
    with fakedrive.mount(
        src, profile="fast", open_latency=open_latency, warm_latency=0.0, bandwidth=bandwidth
    ) as root:
        drive.use_root(root)
        result = colabmagic.timeread("My Drive/train", files=40, quiet=True)

    print(
        f"p50 first read {result.drive_p50_s * 1000:.1f} ms (configured "
        f"{open_latency * 1000:.0f} ms), streaming {result.drive_mb_s:.1f} MB/s "
        f"(configured {bandwidth / 1e6:.0f} MB/s)"
    )
    assert result.drive_p50_s == pytest.approx(open_latency, rel=0.15)
    assert result.drive_mb_s * 1e6 == pytest.approx(bandwidth, rel=0.15)
    assert result.stream_bytes >= 8_000_000
    # The projections rest on the same two figures.
    model_epoch = result.files_total * open_latency + result.bytes_total / bandwidth
    assert result.epoch_drive_s == pytest.approx(model_epoch, rel=0.15)
    assert result.stage_estimate_s == pytest.approx(
        result.bytes_total / bandwidth + open_latency, rel=0.15
    )
    # 20 files with 16 in flight, each one open latency: about 16 / 50 ms.
    assert result.parallel_files_s == pytest.approx(16 / open_latency, rel=0.2)
    assert not result.already_warm
    assert not any("plain folder" in w for w in result.warnings)
    assert result.advice.startswith('Stage it: %stage "My Drive/train" copies it')
    # No per-stream cap: four ranged streams share the same 40 MB/s as one.
    print(
        f"one stream {result.one_stream_mb_s:.1f} MB/s, 4 ranged streams "
        f"{result.ranged_mb_s:.1f} MB/s on {result.ranged_bytes / 1e6:.1f} MB"
    )
    assert result.one_stream_mb_s * 1e6 == pytest.approx(bandwidth, rel=0.15)
    # As below: four readers feel a busy machine more than one.
    assert result.ranged_speedup == pytest.approx(1.0, rel=0.25)
    assert result.ranged_bytes >= 4_000_000 - 4 * 64 * 1024
    assert result.best_streams == 1 and result.ranged_speedup < report.STREAMS_PAY
    assert "One stream is enough on this Drive: 4 ranged streams read big" in result.advice
    assert "--streams" not in result.advice


@needs_fuse
def test_four_ranged_streams_pay_where_drive_caps_each_stream(ip, tmp_path):
    """The multistream profile, with the per-stream cap lowered to keep the test short:
    one stream gets the cap, four ranged streams about four times as much."""
    per_stream = 4e6
    folder = tmp_path / "d"
    train = folder / "MyDrive" / "train"
    write_files(train, random_files(20, (2_000, 6_000)))
    (train / "train.tar").write_bytes(os.urandom(8_000_000))
    root = ip.run_line_magic("drive", f"--fake {folder} --profile multistream").root
    try:
        assert fakedrive.status(root)["settings"]["per_stream"] == 25e6
        fakedrive.configure(root, per_stream=per_stream)
        result = ip.run_line_magic("timeread", '"My Drive/train" --files 20')
    finally:
        ip.run_line_magic("drive", "--unmount")

    print(
        f"per stream {per_stream / 1e6:.0f} MB/s: one stream {result.one_stream_mb_s:.2f} "
        f"MB/s, 4 ranged streams {result.ranged_mb_s:.2f} MB/s ({result.ranged_speedup:.2f}x)"
    )
    assert result.one_stream_mb_s * 1e6 == pytest.approx(per_stream, rel=0.15)
    # Four readers and four server threads feel a busy machine more than one does.
    assert result.ranged_mb_s * 1e6 == pytest.approx(4 * per_stream, rel=0.25)
    assert result.ranged_streams == 4 and result.best_streams == 4
    assert result.ranged_mb_s > result.one_stream_mb_s * report.STREAMS_PAY
    assert "4 ranged streams read train.tar" in result.advice
    assert result.advice.endswith("%stage --streams 4 reads a large archive that way.")
    row = dict(result.rows())["streaming, 1 · 4 ranged streams"]
    assert row.endswith(f"{report._sig(result.ranged_speedup)}x")
    assert "%stage --streams 4" in result._repr_html_() and "%stage --streams 4" in str(result)


@needs_fuse
def test_a_warm_sample_is_noticed(ip, tmp_path):
    folder = tmp_path / "d"
    write_files(folder / "MyDrive" / "train", random_files(30, (1_000, 3_000)))
    ip.run_line_magic("drive", f"--fake {folder} --profile bench")
    try:
        cold = ip.run_line_magic("timeread", '"My Drive/train" --files 20')
        warm = ip.run_line_magic("timeread", '"My Drive/train" --files 20')
        ip.run_line_magic("drive", "--remount")
        cold_again = ip.run_line_magic("timeread", '"My Drive/train" --files 20')
    finally:
        ip.run_line_magic("drive", "--unmount")

    assert not cold.already_warm and not cold_again.already_warm
    assert warm.already_warm
    (note,) = [w for w in warm.warnings if "already in Drive's cache" in w]
    assert "%drive --remount makes it cold again" in note
    assert not any("already in Drive's cache" in w for w in cold.warnings)


@needs_fuse
def test_local_copies_may_not_go_into_drive(ip, tmp_path):
    folder = tmp_path / "d"
    write_files(folder / "MyDrive" / "train", random_files(3, (10, 20)))
    root = ip.run_line_magic("drive", f"--fake {folder} --profile fast").root
    try:
        with pytest.raises(UsageError, match="--local must be on local disk"):
            ip.run_line_magic("timeread", f'"My Drive/train" --local {root}/MyDrive/tmp')
    finally:
        ip.run_line_magic("drive", "--unmount")


@needs_fuse
def test_a_failing_ranged_read_leaves_the_other_figures(drive_root, tmp_path):
    src = tmp_path / "src"
    train = src / "MyDrive" / "train"
    write_files(train, random_files(6, (2_000, 6_000)))
    (train / "train.tar").write_bytes(os.urandom(8_000_000))
    with fakedrive.mount(
        src,
        profile="fast",
        fail_after=6_000_000,  # in the end, which only the ranged streams read
        fail_path="MyDrive/train/train.tar",
        fail_always=True,
    ) as root:
        drive.use_root(root)
        result = colabmagic.timeread("My Drive/train", files=6, quiet=True)

    assert result.ranged_mb_s is None and result.best_streams is None
    assert result.one_stream_mb_s is None and "ranged" not in result.advice
    assert result.drive_mb_s > 0 and result.stream_files == 1
    assert "streaming, 1 · 4 ranged streams" not in dict(result.rows())
    (note,) = [w for w in result.warnings if "ranged" in w]
    assert note == "4 ranged streams not measured: reading train.tar failed (Input/output error)"
    assert not any("could not be read" in w for w in result.warnings)
