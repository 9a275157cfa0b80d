"""The simulated Drive, through a real FUSE mount: data, pass-through, timing, faults.

Timing checks measure the simulator itself against its configured numbers; they use
lower bounds where the model promises a minimum and generous upper bounds elsewhere.
Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from colabmagic import fakedrive
from colabmagic.fakedrive._settings import (
    CONTROL_XATTR,
    parse_bandwidth,
    parse_duration,
    parse_size,
)
from tests.builders import random_bytes, write_zip

_reason = fakedrive.available()
if _reason is not None:
    pytest.skip(f"fake Drive unavailable: {_reason}", allow_module_level=True)

MB = 1_000_000
PACKAGE_PARENT = str(Path(fakedrive.__file__).resolve().parents[2])
FAULTS_OFF = dict(
    fail_after=None, fail_errno=None, fail_path=None, fail_always=None, fail_rate=None, seed=None
)


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drive-src")
    (root / "empty").write_bytes(b"")
    (root / "one").write_bytes(b"x")
    for i, size in enumerate((4095, 4096, 131_073, 3 * MB + 7)):
        (root / f"blob{i}.bin").write_bytes(random_bytes(size, i))
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "name with spaces ü.txt").write_text("hello\n")
    os.close(
        os.open(os.path.join(os.fsencode(root), b"raw-\xff-name"), os.O_CREAT | os.O_WRONLY, 0o644)
    )
    (root / "faulty.bin").write_bytes(random_bytes(400_000, 7))
    (root / "eight.bin").write_bytes(random_bytes(8 * MB, 8))
    (root / "four-a.bin").write_bytes(random_bytes(4 * MB, 9))
    (root / "four-b.bin").write_bytes(random_bytes(4 * MB, 10))
    many = root / "many"
    many.mkdir()
    for i in range(2000):
        (many / f"f{i:04d}").touch()
    cold = root / "cold"
    cold.mkdir()
    for i in range(40):
        (cold / f"c{i:02d}.bin").write_bytes(random_bytes(3000, 100 + i))
    write_zip(
        root / "data.zip",
        {f"data/item{i:02d}.bin": random_bytes(10_000, 200 + i) for i in range(30)},
    )
    folder = root / "folder"
    folder.mkdir()
    for i in range(5):
        (folder / f"part{i}.bin").write_bytes(random_bytes(5000, 300 + i))
    return root


@pytest.fixture(scope="module")
def mounted(src: Path):
    handle = fakedrive.start(src, profile="fast")
    yield handle
    handle.stop()


@pytest.fixture
def root(mounted: fakedrive.Mount) -> Path:
    """The shared mount, put back to the plain `fast` profile, no faults, all cold."""
    fakedrive.configure(mounted.root, profile="fast", **FAULTS_OFF)
    fakedrive.reset(mounted.root)
    return mounted.root


def _elapsed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _touch_open(path: Path) -> None:
    os.close(os.open(path, os.O_RDONLY))


def _read_until_error(path: Path, chunk: int = 65536) -> tuple[bytes, OSError | None]:
    got = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            block = os.read(fd, chunk)
            if not block:
                return bytes(got), None
            got += block
    except OSError as exc:
        return bytes(got), exc
    finally:
        os.close(fd)


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    return env


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _in_mountinfo(path: str | Path) -> bool:
    """Mounted at all, dead mounts included (os.path.ismount says False for those)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == os.path.realpath(path) for line in f)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie has stopped
    except FileNotFoundError:
        return True


# --- the public surface ------------------------------------------------------------


def test_profiles_are_the_documented_numbers() -> None:
    colab = fakedrive.PROFILES["colab"]
    assert (colab.open_latency, colab.warm_latency, colab.list_latency) == (0.5, 0.005, 0.75)
    assert (colab.bandwidth, colab.inflight) == (50e6, 16)
    bench = fakedrive.PROFILES["bench"]
    assert (
        bench.open_latency,
        bench.warm_latency,
        bench.list_latency,
        bench.bandwidth,
        bench.inflight,
    ) == (
        0.020,
        0.001,
        0.050,
        100e6,
        16,
    )
    multi = fakedrive.PROFILES["multistream"]
    assert (multi.open_latency, multi.warm_latency, multi.list_latency) == (0.020, 0.001, 0.050)
    assert (multi.bandwidth, multi.per_stream, multi.inflight) == (100e6, 25e6, 16)
    assert "25 MB/s per stream" in str(multi)
    # Only multistream caps a stream on its own: the others behave as they always did.
    others = {name: p.per_stream for name, p in fakedrive.PROFILES.items() if name != "multistream"}
    assert others == dict.fromkeys(("colab", "bench", "fast", "none"), float("inf"))
    with pytest.raises(AttributeError):
        colab.open_latency = 1.0  # type: ignore[misc]


def test_import_does_not_load_fuse() -> None:
    code = "import sys, colabmagic.fakedrive as f; f.available(); print('mfusepy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_cli_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_units_parse() -> None:
    assert parse_duration("500ms") == pytest.approx(0.5)
    assert parse_duration("0.5s") == pytest.approx(0.5)
    assert parse_duration("0.5") == pytest.approx(0.5)
    assert parse_bandwidth("50MB/s") == 50e6
    assert parse_bandwidth("50e6") == 50e6
    assert parse_bandwidth("1GB/s") == 1e9
    assert parse_bandwidth("inf") == float("inf")
    assert parse_size("64KiB") == 65536
    for bad in ("5 parsecs", "", "ms"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_bandwidth("fast")


# --- a faithful pass-through --------------------------------------------------------


def test_reads_are_byte_identical(root: Path, src: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] == "many":
            continue  # 2,000 empty files: compared by listing below, not opened one by one
        through = root / rel
        assert through.is_dir() == path.is_dir(), rel
        if path.is_file():
            assert through.read_bytes() == path.read_bytes(), rel
    assert sorted(os.listdir(os.fsencode(root))) == sorted(os.listdir(os.fsencode(src)))
    assert sorted(os.listdir(root / "many")) == sorted(os.listdir(src / "many"))
    assert os.stat(root / "blob3.bin").st_size == 3 * MB + 7


def test_mmap_and_zipfile_work(root: Path, src: Path) -> None:
    with (
        open(root / "blob3.bin", "rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m,
    ):
        assert m[: 2 * MB] == (src / "blob3.bin").read_bytes()[: 2 * MB]
    with zipfile.ZipFile(root / "data.zip") as zf:
        assert zf.read("data/item05.bin") == random_bytes(10_000, 205)


def test_writes_land_in_src(root: Path, src: Path) -> None:
    work, mirror = root / "work", src / "work"
    (work / "a" / "b").mkdir(parents=True)
    assert (mirror / "a" / "b").is_dir()

    data = random_bytes(MB + 3, 11)
    (work / "new.bin").write_bytes(data)
    assert (mirror / "new.bin").read_bytes() == data
    with open(work / "new.bin", "ab") as f:
        f.write(b"tail")
    assert (mirror / "new.bin").read_bytes() == data + b"tail"

    os.truncate(work / "new.bin", 10)
    assert (mirror / "new.bin").stat().st_size == 10

    os.rename(work / "new.bin", work / "a" / "moved.bin")
    assert not (mirror / "new.bin").exists()
    assert (mirror / "a" / "moved.bin").read_bytes() == data[:10]

    (work / "other.txt").write_text("other")
    os.replace(work / "other.txt", work / "a" / "moved.bin")
    assert (mirror / "a" / "moved.bin").read_text() == "other"

    os.symlink("a/moved.bin", work / "link")
    assert os.readlink(mirror / "link") == "a/moved.bin"
    assert os.readlink(work / "link") == "a/moved.bin"
    assert (work / "link").read_text() == "other"

    os.link(work / "a" / "moved.bin", work / "hard")
    assert (mirror / "hard").stat().st_ino == (mirror / "a" / "moved.bin").stat().st_ino

    os.chmod(work / "a" / "moved.bin", 0o600)
    assert stat.S_IMODE((mirror / "a" / "moved.bin").stat().st_mode) == 0o600
    os.utime(work / "a" / "moved.bin", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    assert (mirror / "a" / "moved.bin").stat().st_mtime_ns == 1_500_000_000_987_654_321
    assert (work / "a" / "moved.bin").stat().st_mtime_ns == 1_500_000_000_987_654_321

    os.unlink(work / "hard")
    os.unlink(work / "link")
    assert not (mirror / "hard").exists() and not (mirror / "link").exists()
    os.rmdir(work / "a" / "b")
    assert not (mirror / "a" / "b").exists()


def test_mv_no_clobber_keeps_the_target(root: Path, src: Path) -> None:
    # `mv -n` relies on rename's RENAME_NOREPLACE flag, which must reach SRC.
    (root / "keep-src.txt").write_text("new")
    (root / "keep-dst.txt").write_text("old")
    subprocess.run(
        ["mv", "-n", str(root / "keep-src.txt"), str(root / "keep-dst.txt")], capture_output=True
    )
    assert (src / "keep-dst.txt").read_text() == "old"
    assert (src / "keep-src.txt").read_text() == "new"


def test_unlinked_open_file_stays_usable_and_leaves_nothing(root: Path, src: Path) -> None:
    path = root / "scratch.tmp"
    with open(path, "w+b") as f:
        f.write(b"before")
        os.unlink(path)
        f.write(b" after")
        f.seek(0)
        assert f.read() == b"before after"
    assert not [name for name in os.listdir(src) if name.startswith(".fuse_hidden")]


def test_statfs_matches_src(root: Path, src: Path) -> None:
    through, direct = os.statvfs(root), os.statvfs(src)
    for key in ("f_bsize", "f_frsize", "f_blocks", "f_files", "f_namemax"):
        assert getattr(through, key) == getattr(direct, key), key
    # Free space moves while other processes write; allow a sliver.
    assert abs(through.f_bavail - direct.f_bavail) <= direct.f_blocks // 100


def test_control_channel_leaves_no_trace(root: Path, src: Path) -> None:
    state = fakedrive.status(root)
    assert state["pid"] > 0 and state["settings"]["profile"] == "fast"
    assert sorted(os.listdir(root)) == sorted(name for name in os.listdir(src))
    assert CONTROL_XATTR not in os.listxattr(root)
    # (If SRC's file system has no xattrs at all, nothing could be left there.)
    with contextlib.suppress(OSError):
        assert CONTROL_XATTR not in os.listxattr(src)
    fakedrive.configure(root / "sub", warm_latency=0.001)  # any path inside works
    assert fakedrive.status(root)["settings"]["warm_latency"] == 0.001


def test_configure_checks_its_arguments(root: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        fakedrive.configure(root, latency=1)
    with pytest.raises(ValueError):
        fakedrive.configure(root, fail_rate=1.5)
    with pytest.raises(ValueError):
        fakedrive.configure(root, profile="dialup")
    with pytest.raises(ValueError, match="per_stream"):
        fakedrive.configure(root, per_stream=0)
    with pytest.raises(fakedrive.FakeDriveError, match="not a fake Drive"):
        fakedrive.configure(tmp_path, fail_rate=1.0)
    with pytest.raises(fakedrive.FakeDriveError, match="not a fake Drive"):
        fakedrive.reset(tmp_path)


def test_mountpoint_inside_src_is_refused(src: Path) -> None:
    with pytest.raises(fakedrive.FakeDriveError, match="inside the source"):
        fakedrive.start(src, src / "mnt")
    assert not (src / "mnt").exists()


# --- measured: latency, listing, bandwidth, inflight --------------------------------


def test_cold_open_then_warm_then_cold_after_reset(root: Path) -> None:
    fakedrive.configure(root, open_latency=0.1, warm_latency=0.0)
    path = root / "blob0.bin"
    cold = _elapsed(lambda: _touch_open(path))
    warm = _elapsed(lambda: _touch_open(path))
    fakedrive.reset(root)
    again = _elapsed(lambda: _touch_open(path))
    print(
        f"\nopen latency 0.100 s: cold {cold:.3f} s, warm {warm:.4f} s, after reset {again:.3f} s"
    )
    assert 0.1 <= cold < 0.1 * 1.15 + 0.02
    assert warm < 0.05
    assert 0.1 <= again < 0.1 * 1.15 + 0.02


def test_listing_pays_per_thousand_entries(root: Path) -> None:
    fakedrive.configure(root, list_latency=0.1)
    names: list[str] = []
    took = _elapsed(lambda: names.extend(os.listdir(root / "many")))
    print(f"\nlist latency 0.100 s / 1,000: 2,000 entries in {took:.3f} s (model 0.200 s)")
    assert len(names) == 2000
    assert 0.2 <= took < 0.2 * 1.15 + 0.05


def test_bandwidth_cap_is_met(root: Path) -> None:
    fakedrive.configure(root, bandwidth=40e6, open_latency=0.0, warm_latency=0.0)
    fd = os.open(root / "eight.bin", os.O_RDONLY)
    try:
        got = 0
        start = time.perf_counter()
        while block := os.read(fd, 1 << 20):
            got += len(block)
        took = time.perf_counter() - start
    finally:
        os.close(fd)
    rate = got / took
    print(f"\nbandwidth 40 MB/s: {got / MB:.0f} MB in {took:.3f} s = {rate / MB:.1f} MB/s", end="")
    print(f" ({rate / 40e6 - 1:+.1%})")
    assert got == 8 * MB
    assert took >= 0.2
    assert rate == pytest.approx(40e6, rel=0.15)


def test_bandwidth_is_one_cap_for_all_threads_and_writes(root: Path) -> None:
    fakedrive.configure(root, bandwidth=40e6, open_latency=0.0, warm_latency=0.0)
    names = ("four-a.bin", "four-b.bin")
    threads = [threading.Thread(target=(root / name).read_bytes) for name in names]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    rate = 8 * MB / took
    print(f"\nbandwidth 40 MB/s, two readers: {rate / MB:.1f} MB/s together")
    assert took >= 0.2
    assert rate == pytest.approx(40e6, rel=0.15)

    data = random_bytes(4 * MB, 12)
    wrote = _elapsed(lambda: (root / "written.bin").write_bytes(data))
    print(f"bandwidth 40 MB/s, writing 4 MB: {4 * MB / wrote / MB:.1f} MB/s")
    assert wrote >= 0.1


def _read_ranges(root: Path, name: str, ranges: list[tuple[int, int]]) -> tuple[int, float, float]:
    """Read each (offset, length) of ROOT/NAME through its own open file, all at once.

    Returns the bytes the readers got, the seconds it took, and the rate the link
    carried: the server's count of bytes served, since the kernel reads ahead past
    the end of a range and that costs link time too. Every file is opened before the
    clock starts: an open drops the file's cached pages and waits for the reads in
    flight of the other opens, which would show as a slow start, not a slow stream.
    """
    fds = [os.open(root / name, os.O_RDONLY) for _ in ranges]
    got = [0] * len(ranges)

    def read(i: int) -> None:
        offset, length = ranges[i]
        while got[i] < length:
            block = os.pread(fds[i], min(1 << 20, length - got[i]), offset + got[i])
            if not block:
                break
            got[i] += len(block)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(ranges))]
    try:
        served = fakedrive.status(root)["bytes_read"]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - start
        served = fakedrive.status(root)["bytes_read"] - served
    finally:
        for fd in fds:
            os.close(fd)
    assert served >= sum(got)
    return sum(got), took, served / took


def test_per_stream_cap_holds_one_reader(root: Path) -> None:
    fakedrive.configure(
        root, per_stream=4e6, bandwidth=float("inf"), open_latency=0.0, warm_latency=0.0
    )
    assert fakedrive.status(root)["settings"]["per_stream"] == 4e6
    got, took, rate = _read_ranges(root, "eight.bin", [(0, 2 * MB)])
    print(f"\nper stream 4 MB/s, one reader: {rate / MB:.2f} MB/s ({rate / 4e6 - 1:+.1%})")
    assert got == 2 * MB
    assert took >= 0.5  # 2 MB can never pass one 4 MB/s stream faster
    assert rate == pytest.approx(4e6, rel=0.15)


def test_per_stream_cap_lets_four_ranges_go_four_times_as_fast(root: Path) -> None:
    quarters = [(i * 2 * MB, 2 * MB) for i in range(4)]
    fakedrive.configure(root, per_stream=4e6, bandwidth=100e6, open_latency=0.0, warm_latency=0.0)
    got, took, four = _read_ranges(root, "eight.bin", quarters)
    # The shared cap still binds the sum: 4 streams of 4 MB/s on a 10 MB/s link.
    fakedrive.configure(root, bandwidth=10e6)
    shared_got, shared_took, shared = _read_ranges(root, "eight.bin", quarters)
    print(f"\nper stream 4 MB/s, four ranges: {four / MB:.2f} MB/s (model 16),", end="")
    print(f" on a 10 MB/s link {shared / MB:.2f} MB/s (model 10)")
    assert got == shared_got == 8 * MB
    assert took >= 0.5 and shared_took >= 0.8
    assert four == pytest.approx(16e6, rel=0.15)
    assert shared == pytest.approx(10e6, rel=0.15)


def test_per_stream_off_leaves_one_reader_the_whole_link(root: Path) -> None:
    fakedrive.configure(root, bandwidth=16e6, open_latency=0.0, warm_latency=0.0)
    assert fakedrive.status(root)["settings"]["per_stream"] == float("inf")
    got, took, rate = _read_ranges(root, "eight.bin", [(0, 4 * MB)])
    print(f"\nno per-stream cap, 16 MB/s link, one reader: {rate / MB:.2f} MB/s")
    assert got == 4 * MB and took >= 0.25
    assert rate == pytest.approx(16e6, rel=0.15)


def test_inflight_caps_concurrent_opens(root: Path) -> None:
    def four_cold_opens() -> float:
        fakedrive.reset(root)
        paths = [root / "cold" / f"c{i:02d}.bin" for i in range(4)]
        threads = [threading.Thread(target=_touch_open, args=(p,)) for p in paths]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    fakedrive.configure(root, inflight=2, open_latency=0.2, warm_latency=0.0)
    two = four_cold_opens()
    fakedrive.configure(root, inflight=4)
    four = four_cold_opens()
    print(f"\n4 cold opens of 0.2 s: inflight=2 {two:.3f} s (model 0.4),", end="")
    print(f" inflight=4 {four:.3f} s (model 0.2)")
    assert two >= 0.4
    assert 0.2 <= four < 0.35


# --- faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("EIO", errno.EIO, "Input/output error"),
        ("ENOTCONN", errno.ENOTCONN, "Transport endpoint is not connected"),
    ],
)
def test_fail_after_breaks_one_stream_once(
    root: Path, src: Path, name: str, code: int, message: str
) -> None:
    expected = (src / "faulty.bin").read_bytes()
    fakedrive.configure(root, fail_after=100_000, fail_errno=name, fail_path="faulty.bin")
    assert (root / "blob3.bin").read_bytes()[:10] == (src / "blob3.bin").read_bytes()[
        :10
    ]  # other files fine

    got, exc = _read_until_error(root / "faulty.bin")
    print(f"\n{name} at 100000: reader got {len(got)} bytes, then {exc}")
    assert exc is not None and exc.errno == code and exc.strerror == message
    # Whole blocks fail, so the reader loses at most one readahead block before the fault.
    assert 100_000 - 131_072 < len(got) <= 100_000
    assert got == expected[: len(got)]

    # Once: the fault has disarmed, so a re-open reads past the offset.
    again, exc = _read_until_error(root / "faulty.bin")
    assert exc is None and again == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [("EIO", "Input/output error"), ("ENOTCONN", "Transport endpoint is not connected")],
)
def test_cat_sees_the_fault(root: Path, src: Path, name: str, message: str) -> None:
    fakedrive.configure(root, fail_after=100_000, fail_errno=name)
    done = subprocess.run(["cat", str(root / "faulty.bin")], capture_output=True)
    assert done.returncode != 0
    assert message in done.stderr.decode()
    assert 0 < len(done.stdout) <= 100_000
    assert done.stdout == (src / "faulty.bin").read_bytes()[: len(done.stdout)]


def test_fail_always_fails_every_time_until_turned_off(root: Path, src: Path) -> None:
    fakedrive.configure(root, fail_after=50_000, fail_always=True)
    for _ in range(3):
        got, exc = _read_until_error(root / "faulty.bin")
        assert exc is not None and exc.errno == errno.EIO and len(got) <= 50_000
    # A file shorter than the offset never reaches it.
    assert (root / "blob1.bin").read_bytes() == (src / "blob1.bin").read_bytes()
    fakedrive.configure(root, fail_after=None)
    assert (root / "faulty.bin").read_bytes() == (src / "faulty.bin").read_bytes()


def test_drive_fails_for_a_while_then_comes_back(root: Path, src: Path) -> None:
    fakedrive.configure(root, fail_rate=1.0)
    with open(root / "blob2.bin", "rb", buffering=0) as f:
        with pytest.raises(OSError) as info:
            f.read()
        assert info.value.errno == errno.EIO
        fakedrive.configure(root, fail_rate=0)
        f.seek(0)
        assert f.read() == (src / "blob2.bin").read_bytes()  # the same open file heals


def test_fail_rate_is_seeded(root: Path) -> None:
    def pattern() -> list[bool]:
        fakedrive.configure(root, fail_rate=0.5, seed=1234)
        failed = []
        for i in range(40):
            _, exc = _read_until_error(root / "cold" / f"c{i:02d}.bin")
            failed.append(exc is not None)
        return failed

    first, second = pattern(), pattern()
    print(f"\nfail_rate 0.5, seed 1234: {sum(first)} of 40 small files failed")
    assert first == second
    assert 10 <= sum(first) <= 30  # about half: a file read in one request fails with P


# --- real tools ---------------------------------------------------------------------


def test_cp_and_unzip_work_and_feel_the_latency(root: Path, src: Path, tmp_path: Path) -> None:
    fakedrive.configure(root, open_latency=0.05, warm_latency=0.0)
    copy = tmp_path / "data.zip"
    took_cp = _elapsed(
        lambda: subprocess.run(["cp", str(root / "data.zip"), str(copy)], check=True)
    )
    assert copy.read_bytes() == (src / "data.zip").read_bytes()

    fakedrive.reset(root)
    out = tmp_path / "out"
    took_unzip = _elapsed(
        lambda: subprocess.run(["unzip", "-q", str(root / "data.zip"), "-d", str(out)], check=True)
    )
    for i in range(30):
        assert (out / "data" / f"item{i:02d}.bin").read_bytes() == random_bytes(10_000, 200 + i)

    took_tree = _elapsed(
        lambda: subprocess.run(["cp", "-r", str(root / "folder"), str(tmp_path)], check=True)
    )
    for i in range(5):
        assert (tmp_path / "folder" / f"part{i}.bin").read_bytes() == (
            src / "folder" / f"part{i}.bin"
        ).read_bytes()
    print(f"\nopen latency 0.05 s: cp {took_cp:.3f} s, unzip {took_unzip:.3f} s,", end="")
    print(f" cp -r of 5 files {took_tree:.3f} s")
    assert took_cp >= 0.05 and took_unzip >= 0.05
    assert took_tree >= 5 * 0.05


# --- lifecycle ----------------------------------------------------------------------


def test_context_manager_unmounts_after_an_exception(src: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), fakedrive.mount(src, profile="none") as where:
        pid = fakedrive.status(where)["pid"]
        assert os.path.ismount(where)
        assert (where / "one").read_bytes() == b"x"
        raise RuntimeError("boom")
    assert not _in_mountinfo(where)
    assert not where.exists()  # the temporary mountpoint is gone too
    assert _gone(pid)


def test_stop_with_a_file_still_open(src: Path, tmp_path: Path) -> None:
    where = tmp_path / "busy"
    where.mkdir()
    handle = fakedrive.start(src, where, profile="none")
    f = open(where / "blob3.bin", "rb")  # noqa: SIM115 - must stay open across stop()
    try:
        handle.stop()  # busy: unmounts lazily, then ends the server
        assert not handle.mounted
        assert not _in_mountinfo(where)
        assert where.is_dir()  # a mountpoint that existed before is left in place
        with pytest.raises(OSError) as info:
            f.read()
        assert info.value.errno == errno.ENOTCONN  # as when Drive goes away under a reader
    finally:
        with contextlib.suppress(OSError):
            f.close()


def test_server_failure_is_reported(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSE_LIBRARY_PATH", "/nonexistent/libfuse3.so.3")
    with pytest.raises(fakedrive.FakeDriveError, match="exited with status .*nonexistent"):
        fakedrive.start(src, profile="none")


def test_cli_mounts_and_unmounts_on_sigterm(src: Path, tmp_path: Path) -> None:
    where = tmp_path / "cli"
    cmd = [sys.executable, "-m", "colabmagic.fakedrive", str(src), str(where), "--profile", "fast"]
    proc = subprocess.Popen(
        [*cmd, "--open-latency", "100ms", "--bandwidth", "1GB/s", "--per-stream", "500MB/s"]
        + ["--foreground"],
        env=_cli_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for(lambda: os.path.ismount(where) or proc.poll() is not None)
        assert os.path.ismount(where), proc.stderr.read() if proc.stderr else ""
        assert fakedrive.status(where)["settings"]["open_latency"] == 0.1
        assert fakedrive.status(where)["settings"]["per_stream"] == 500e6
        assert (where / "one").read_bytes() == b"x"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not _in_mountinfo(where)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            subprocess.run(["fusermount3", "-uz", str(where)], capture_output=True)


def test_cli_background_mount_is_controllable(src: Path, tmp_path: Path) -> None:
    where = tmp_path / "bg"
    done = subprocess.run(
        [sys.executable, "-m", "colabmagic.fakedrive", str(src), str(where), "--profile", "none"],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "mounted at" in done.stdout
    log = done.stdout.split("; log ")[1].split(";")[0]
    try:
        pid = fakedrive.status(where)["pid"]
        fakedrive.configure(where, open_latency=0.1)
        assert _elapsed(lambda: _touch_open(where / "one")) >= 0.1
        fakedrive.reset(where)
    finally:
        subprocess.run(["fusermount3", "-u", str(where)], check=True)
    assert _wait_for(lambda: _gone(pid), timeout=10)
    assert _wait_for(lambda: not os.path.exists(log), timeout=10)  # no log left in /tmp


def test_cli_rejects_bad_units(src: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "colabmagic.fakedrive",
            str(src),
            str(tmp_path / "x"),
            "--open-latency",
            "5 parsecs",
        ],
        env=_cli_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "not a duration" in done.stderr


def test_server_unmounts_when_its_client_dies(src: Path) -> None:
    # A killed Jupyter kernel must not leave its fake Drive mounted forever.
    code = (
        "import os, signal, colabmagic.fakedrive as f\n"
        f"m = f.start({str(src)!r}, profile='none')\n"
        "print(m.root, m.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_cli_env(), capture_output=True, text=True
    )
    where, pid = done.stdout.split()
    assert _wait_for(lambda: not _in_mountinfo(where) and _gone(int(pid)), timeout=10)
    assert not os.path.exists(where)  # its temporary mountpoint is cleaned up too
