"""%stage: every format, folders, files, globs, idempotence, safety of the user's files."""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic.cli import main as cli
from tests.builders import tree


def sample_files(n: int = 60, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        label = "cat" if i % 2 else "dog"
        files[f"train/{label}/{label}.{i:04d}.jpg"] = rng.randbytes(rng.randint(0, 3000))
    files["train/labels.csv"] = b"name,label\n" * 200  # compressible
    files["train/empty"] = b""
    return files


def write_zip(path: Path, files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def staged(workdir: Path) -> dict:
    return {k: v for k, v in tree(workdir).items() if not k.startswith(".colabmagic")}


TAR_MODES = {
    "x.tar": "w",
    "x.tar.gz": "w:gz",
    "x.tgz": "w:gz",
    "x.tar.bz2": "w:bz2",
    "x.tar.xz": "w:xz",
}


@pytest.mark.parametrize("name", ["x.zip", "x-stored.zip", *TAR_MODES, "x.tar.zst"])
def test_every_archive_format_stages_byte_for_byte(ip, drive_root, workdir, name):
    files = sample_files()
    src = drive_root / "MyDrive" / "data sets" / name
    if name.endswith(".zip"):
        write_zip(src, files, zipfile.ZIP_STORED if "stored" in name else zipfile.ZIP_DEFLATED)
    elif name.endswith(".zst"):
        zstandard = pytest.importorskip("zstandard")
        raw = write_tar(src.with_suffix(""), files)
        src.write_bytes(zstandard.ZstdCompressor().compress(raw.read_bytes()))
        raw.unlink()
    else:
        write_tar(src, files, TAR_MODES[name])
    result = ip.run_line_magic("stage", f'"My Drive/data sets/{name}"')
    assert result.action == "staged"
    assert staged(workdir) == files
    assert result.files == len(files)
    assert result.bytes == sum(map(len, files.values()))
    assert result.entries == (workdir / "train",)
    assert not (workdir / name).exists()  # no second copy of the archive


def test_ten_thousand_files_under_a_path_with_spaces(ip, drive_root, workdir):
    rng = random.Random(7)
    files = {
        f"set/{i % 10}/f{i:05d}.bin": rng.randbytes(rng.randint(1, 400)) for i in range(10_000)
    }
    write_zip(drive_root / "MyDrive" / "my datasets" / "big set.zip", files, zipfile.ZIP_STORED)
    first = ip.run_line_magic("stage", '"My Drive/my datasets/big set.zip"')
    assert first.action == "staged" and first.files == 10_000
    assert staged(workdir) == files
    second = ip.run_line_magic("stage", '"My Drive/my datasets/big set.zip"')
    assert second.action == "skipped"
    assert second.files == 10_000


def test_rerun_skips_then_restages_when_the_source_changes(ip, drive_root, workdir):
    src = write_zip(drive_root / "MyDrive" / "a.zip", {"a/x.txt": b"one"})
    assert ip.run_line_magic("stage", "a.zip").action == "staged"
    assert ip.run_line_magic("stage", "a.zip").action == "skipped"
    write_zip(src, {"a/x.txt": b"two!"})
    os.utime(src, (1, 1))
    result = ip.run_line_magic("stage", "a.zip")
    assert result.action == "restaged"
    assert (workdir / "a" / "x.txt").read_bytes() == b"two!"
    assert ip.run_line_magic("stage", "a.zip --force").action == "restaged"


def test_deleted_output_is_staged_again(ip, drive_root, workdir):
    write_zip(drive_root / "MyDrive" / "a.zip", {"a/x.txt": b"one"})
    ip.run_line_magic("stage", "a.zip")
    (workdir / "a" / "x.txt").unlink()
    (workdir / "a").rmdir()
    assert ip.run_line_magic("stage", "a.zip").action == "restaged"
    assert (workdir / "a" / "x.txt").read_bytes() == b"one"


def test_foreign_entry_is_never_overwritten_without_force(ip, drive_root, workdir):
    write_zip(drive_root / "MyDrive" / "a.zip", {"train/x.txt": b"from drive"})
    (workdir / "train").mkdir()
    (workdir / "train" / "mine.txt").write_bytes(b"my work")
    with pytest.raises(UsageError, match=r"already exists .* --force"):
        ip.run_line_magic("stage", "a.zip")
    assert staged(workdir) == {"train/mine.txt": b"my work"}
    (workdir / "train" / "x.txt").write_bytes(b"my own x")
    result = ip.run_line_magic("stage", "a.zip --force")
    assert result.action == "staged"
    # --force merges as unzip -o does: the archive's own paths replace what is there,
    # the rest stays, and what was replaced is kept under .colabmagic/replaced/.
    assert staged(workdir) == {"train/mine.txt": b"my work", "train/x.txt": b"from drive"}
    assert result.replaced == 1
    assert result.replaced_to.parent == workdir / ".colabmagic" / "replaced"
    assert (result.replaced_to / "train" / "x.txt").read_bytes() == b"my own x"
    assert "1 moved to" in str(result)


def test_folder_is_copied_with_its_layout(ip, drive_root, workdir):
    files = sample_files(200)
    for name, data in files.items():
        path = drive_root / "MyDrive" / "ds" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    result = ip.run_line_magic("stage", '"My Drive/ds/train" --workers 8')
    assert result.action == "staged"
    assert result.files == len(files)
    want = {k.replace("train/", "train/", 1): v for k, v in files.items()}
    assert staged(workdir) == want
    assert ip.run_line_magic("stage", '"My Drive/ds/train"').action == "skipped"
    (drive_root / "MyDrive" / "ds" / "train" / "new.jpg").write_bytes(b"new")
    assert ip.run_line_magic("stage", '"My Drive/ds/train"').action == "restaged"
    assert (workdir / "train" / "new.jpg").read_bytes() == b"new"


def test_plain_file_and_glob(ip, drive_root, workdir):
    shards = drive_root / "MyDrive" / "shards"
    write_tar(shards / "part-000000.tar", {"s/0.bin": b"zero"})
    write_tar(shards / "part-000001.tar", {"s1/1.bin": b"one"})
    (shards / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    result = ip.run_line_magic("stage", '"My Drive/shards/part-*.tar"')
    assert result.files == 2
    assert staged(workdir) == {"s/0.bin": b"zero", "s1/1.bin": b"one"}
    assert ip.run_line_magic("stage", '"My Drive/shards/part-*.tar"').action == "skipped"
    single = ip.run_line_magic("stage", '"My Drive/shards/weights.bin" --to models')
    assert single.action == "staged"
    assert (workdir / "models" / "weights.bin").read_bytes() == b"\x00\x01" * 1000


def test_shards_sharing_a_folder_stage_as_one(ip, drive_root, workdir):
    shards = drive_root / "MyDrive" / "wds"
    write_tar(shards / "train-000000.tar", {"train/a.jpg": b"a", "train/a.cls": b"0"})
    write_tar(shards / "train-000001.tar", {"train/b.jpg": b"b", "train/b.cls": b"1"})
    result = ip.run_line_magic("stage", '"My Drive/wds/train-*.tar"')
    assert result.action == "staged" and result.files == 4
    assert staged(workdir) == {
        "train/a.jpg": b"a",
        "train/a.cls": b"0",
        "train/b.jpg": b"b",
        "train/b.cls": b"1",
    }
    write_tar(shards / "train-000002.tar", {"train/a.jpg": b"again"})  # a duplicate member
    with pytest.raises(UsageError, match="a.jpg"):
        ip.run_line_magic("stage", '"My Drive/wds/train-*.tar"')
    assert staged(workdir)["train/a.jpg"] == b"a"


def test_keep_archive_and_sha256(ip, drive_root, workdir):
    src = write_zip(drive_root / "MyDrive" / "a.zip", {"a/x.txt": b"x" * 100})
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(UsageError, match="has sha256 .*nothing was staged"):
        ip.run_line_magic("stage", f"a.zip --sha256 {'0' * 64}")
    assert staged(workdir) == {}
    result = ip.run_line_magic("stage", f"a.zip --sha256 {digest} --keep-archive")
    assert result.action == "staged"
    assert (workdir / "a.zip").read_bytes() == src.read_bytes()
    assert (workdir / "a" / "x.txt").read_bytes() == b"x" * 100


def patch_declared_size(path: Path, size: int) -> None:
    """Make the last central-directory entry of zip PATH declare SIZE bytes."""
    data = bytearray(path.read_bytes())
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = size.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_sizes_that_lie_are_caught_by_the_running_count(ip, drive_root, workdir):
    src = write_zip(drive_root / "MyDrive" / "liar.zip", {"l/a.bin": b"\0" * 1000})
    patch_declared_size(src, 10)
    with pytest.raises(UsageError, match="larger than the 10 bytes it declares"):
        ip.run_line_magic("stage", "liar.zip")
    patch_declared_size(src, 0xFFFFFFFE)  # 4.3 GB from 1 KB: a bomb's ratio
    with pytest.raises(UsageError, match=r"expands .*:1 .*--allow-ratio"):
        ip.run_line_magic("stage", "liar.zip")
    with pytest.raises(UsageError, match="has 1,000 bytes, not the 4,294,967,294 it declares"):
        ip.run_line_magic("stage", "liar.zip --allow-ratio")
    assert staged(workdir) == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_small_disk_is_refused_up_front_with_both_numbers(ip, drive_root, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        rng = random.Random(3)
        write_zip(
            drive_root / "MyDrive" / "big.zip",
            {f"b/{i}": rng.randbytes(100_000) for i in range(30)},
            zipfile.ZIP_STORED,
        )
        (small / "sentinel").write_bytes(b"keep")
        with pytest.raises(UsageError, match=r"needs 3\.0 MB but .* has only .* free"):
            ip.run_line_magic("stage", f"big.zip --to {small}")
        assert sorted(os.listdir(small)) == [".colabmagic", "sentinel"]
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def test_corrupt_member_leaves_the_target_as_it_was(ip, drive_root, workdir):
    rng = random.Random(5)
    files = {"t/a.bin": rng.randbytes(5000), "t/b.bin": rng.randbytes(5000)}
    src = write_zip(drive_root / "MyDrive" / "bad.zip", files, zipfile.ZIP_STORED)
    data = bytearray(src.read_bytes())
    second = data.rindex(b"PK\x03\x04")
    data[second + 30 + len("t/b.bin") + 100] ^= 0xFF  # in t/b.bin's data: its CRC fails
    src.write_bytes(bytes(data))
    (workdir / "sentinel.txt").write_bytes(b"mine")
    with pytest.raises(UsageError, match="fails its CRC check"):
        ip.run_line_magic("stage", "bad.zip")
    assert staged(workdir) == {"sentinel.txt": b"mine"}
    assert not [n for n in os.listdir(workdir / ".colabmagic") if n.startswith("tmp-")]


def test_result_views_escape_names(ip, drive_root, workdir):
    write_zip(drive_root / "MyDrive" / "<b>x</b>.zip", {"<i>/a.txt": b"a"})
    result = ip.run_line_magic("stage", '"My Drive/<b>x</b>.zip"')
    html = result._repr_html_()
    assert "<table>" in html and "&lt;b&gt;x&lt;/b&gt;.zip" in html and "<b>x</b>.zip" not in html
    text = str(result)
    assert "action" in text and "staged" in text and "<b>x</b>.zip" in text
    shown = ip.display_formatter.format(result)[0]  # what a cell's Out[] shows
    assert shown["text/plain"] == text and shown["text/html"] == html


def test_cli_twin(drive_root, workdir, capsys):
    write_zip(drive_root / "MyDrive" / "c.zip", {"c/1.txt": b"1"})
    assert cli(["--drive", str(drive_root), "stage", "My Drive/c.zip", "--quiet"]) == 0
    assert "staged" in capsys.readouterr().out
    assert (workdir / "c" / "1.txt").read_bytes() == b"1"
    assert cli(["--drive", str(drive_root), "stage", "My Drive/nope.zip"]) == 2
    assert "colabmagic stage: no such file or folder" in capsys.readouterr().err


def test_python_twin_accepts_paths(drive_root, workdir):
    write_zip(drive_root / "MyDrive" / "p.zip", {"p/1.txt": b"1"})
    result = colabmagic.stage(drive_root / "MyDrive" / "p.zip", workdir / "out", quiet=True)
    assert result.action == "staged"
    assert (workdir / "out" / "p" / "1.txt").read_bytes() == b"1"


def test_interrupted_move_is_finished_by_the_next_run(ip, drive_root, workdir):
    # A marker journalled as "moving" with one entry already in place is what a
    # Ctrl-C between the renames leaves; the next run must not call it foreign.
    write_zip(drive_root / "MyDrive" / "m.zip", {"m1/a": b"a", "m2/b": b"b"})
    ip.run_line_magic("stage", "m.zip")
    marker = next((workdir / ".colabmagic").glob("marker-*.json"))
    marker.write_text(marker.read_text().replace('"complete"', '"moving"'))
    result = ip.run_line_magic("stage", "m.zip")
    assert result.action == "restaged"
    assert staged(workdir) == {"m1/a": b"a", "m2/b": b"b"}
