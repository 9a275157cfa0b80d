"""%%cache: a cell runs once, its outputs live in Drive, a later session restores them.

Through the Python twin and a real InteractiveShell, on a plain-folder Drive and on
the simulated Drive; and through two real kernels (nbclient), the second of which
restores the outputs without running the cell.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

import colabmagic
from colabmagic.errors import ColabMagicError

# The module, not the twin of the same name that `colabmagic.cache` is bound to.
cache_module = importlib.import_module("colabmagic.cache")

CACHE = "My Drive/cache/tool"


def build_tool(log: list[str], version: str = "1"):
    """A "compile": writes out/tool (executable), out/lib/data and a link, and notes each run."""

    def run() -> None:
        log.append("ran")
        Path("out/lib").mkdir(parents=True, exist_ok=True)
        Path("out/tool").write_text(f"#!/bin/sh\necho tool {version}\n")
        os.chmod("out/tool", 0o755)
        Path("out/lib/data.bin").write_bytes(bytes(range(256)) * 40)
        if not os.path.lexists("out/current"):
            os.symlink("tool", "out/current")

    return run


def entry_files(drive_root: Path) -> list[str]:
    folder = drive_root / "MyDrive" / "cache" / "tool"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def wipe_outputs(workdir: Path) -> None:
    shutil.rmtree(workdir / "out")


# --------------------------------------------------------------------------- the twin


def test_a_miss_runs_and_caches_then_a_hit_restores_without_running(drive_root, workdir):
    log: list[str] = []
    first = colabmagic.cache(CACHE, ["out"], build_tool(log), source="build v1")
    assert first.action == "ran" and log == ["ran"]
    key = first.key
    assert entry_files(drive_root) == [f"{key}.json", f"{key}.tar.zst"]
    record = json.loads((drive_root / "MyDrive/cache/tool" / f"{key}.json").read_text())
    assert record["outputs"] == ["out"] and record["bytes"] == first.bytes > 10_000
    assert record["archives"][0]["sha256"] and record["platform"] and record["python"]

    wipe_outputs(workdir)
    second = colabmagic.cache(CACHE, ["out"], build_tool(log), source="build v1")
    assert second.action == "restored" and log == ["ran"]  # the cell did not run again
    assert (workdir / "out/tool").read_text() == "#!/bin/sh\necho tool 1\n"
    assert os.stat(workdir / "out/tool").st_mode & stat.S_IXUSR
    assert os.readlink(workdir / "out/current") == "tool"
    assert (workdir / "out/lib/data.bin").read_bytes() == bytes(range(256)) * 40
    out = subprocess.run([str(workdir / "out/current")], capture_output=True, text=True)
    assert out.stdout == "tool 1\n"
    assert second.bytes == first.bytes and second.cell_seconds is not None
    assert not list(cache_module.LOCAL.glob(f"{key}*"))  # the archive's way in is cleaned
    assert second.summary().startswith("restored 1 output (")
    assert "the cell took" in second.summary()


def test_a_second_run_with_the_outputs_in_place_does_nothing(drive_root, workdir):
    log: list[str] = []
    colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    wipe_outputs(workdir)
    assert colabmagic.cache(CACHE, ["out"], build_tool(log), source="s").action == "restored"
    again = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    assert again.action == "present" and log == ["ran"]
    assert "already in place" in again.summary()
    assert not (workdir / ".colabmagic" / "replaced").exists()  # no copies of the same files
    (workdir / "out/lib/data.bin").write_bytes(b"truncated")
    assert colabmagic.cache(CACHE, ["out"], build_tool(log), source="s").action == "restored"
    assert (workdir / "out/lib/data.bin").read_bytes() == bytes(range(256)) * 40


def test_the_key_covers_source_outputs_and_key(drive_root, workdir):
    log: list[str] = []
    a = colabmagic.cache(CACHE, ["out"], build_tool(log), source="build v1")
    b = colabmagic.cache(CACHE, ["out"], build_tool(log, "2"), source="build v2")
    c = colabmagic.cache(CACHE, ["out"], build_tool(log), source="build v1", key="torch 2.5")
    d = colabmagic.cache(CACHE, ["out/tool"], build_tool(log), source="build v1")
    assert len({a.key, b.key, c.key, d.key}) == 4
    assert log == ["ran"] * 4 and [r.action for r in (a, b, c, d)] == ["ran"] * 4
    # Trailing blanks and Windows line ends do not change it.
    assert cache_module.cache_key("x = 1\r\ny = 2  \n\n", ["o"], None) == cache_module.cache_key(
        "x = 1\ny = 2", ["o"], None
    )


def test_a_failing_run_caches_nothing_and_raises(drive_root, workdir):
    def broken() -> None:
        Path("out").mkdir()
        Path("out/tool").write_text("half")
        raise RuntimeError("make: *** [all] Error 2")

    with pytest.raises(RuntimeError, match="Error 2"):
        colabmagic.cache(CACHE, ["out"], broken, source="broken")
    assert entry_files(drive_root) == []


def test_an_output_the_run_did_not_make_caches_nothing(drive_root, workdir):
    log: list[str] = []
    with pytest.raises(ColabMagicError, match=r'output ".*out2/missing" does not exist'):
        colabmagic.cache(CACHE, ["out", "out2/missing"], build_tool(log), source="x")
    with pytest.raises(ColabMagicError, match=r'output ".*nothing-here" does not exist'):
        colabmagic.cache(CACHE, ["nothing-here"], build_tool(log), source="x")
    assert entry_files(drive_root) == []


def test_force_runs_again_and_replaces_the_entry(drive_root, workdir):
    log: list[str] = []
    first = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    Path("out/tool").write_text("#!/bin/sh\necho rebuilt\n")  # the next run makes this
    again = colabmagic.cache(CACHE, ["out"], lambda: log.append("forced"), source="s", force=True)
    assert again.action == "rerun" and log == ["ran", "forced"] and again.key == first.key
    wipe_outputs(workdir)
    restored = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    assert restored.action == "restored"
    assert (workdir / "out/tool").read_text() == "#!/bin/sh\necho rebuilt\n"


def test_clear_deletes_the_entry_runs_nothing_and_mentions_the_trash(drive_root, workdir):
    log: list[str] = []
    first = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    other = colabmagic.cache(CACHE, ["out"], build_tool(log), source="other")
    cleared = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s", clear=True)
    assert cleared.action == "cleared" and log == ["ran", "ran"]
    assert entry_files(drive_root) == [f"{other.key}.json", f"{other.key}.tar.zst"]
    assert first.key in str(cleared) and "trash" in str(cleared)
    again = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s", clear=True)
    assert "nothing to clear" in str(again)


def test_another_platform_reruns_unless_key_pins_it(drive_root, workdir, monkeypatch):
    log: list[str] = []
    colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    pinned = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s", key="v1")
    monkeypatch.setattr(cache_module, "_platform", lambda: "Linux-aarch64-py3.99")
    wipe_outputs(workdir)
    rerun = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    assert rerun.action == "rerun" and log == ["ran", "ran", "ran"]
    assert any("Linux-aarch64-py3.99" in w and "--key" in w for w in rerun.warnings)
    wipe_outputs(workdir)
    restored = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s", key="v1")
    assert restored.action == "restored" and restored.key == pinned.key and len(log) == 3


def test_a_restore_keeps_the_other_files_and_backs_up_what_it_replaces(drive_root, workdir):
    """darknet's case: the binary lives in the cloned tree, which must not be replaced."""
    log: list[str] = []
    colabmagic.cache(CACHE, ["out/tool"], build_tool(log), source="s")
    wipe_outputs(workdir)
    (workdir / "out").mkdir()
    (workdir / "out/Makefile").write_text("all:\n")
    (workdir / "out/tool").write_text("an old build")
    restored = colabmagic.cache(CACHE, ["out/tool"], build_tool(log), source="s")
    assert restored.action == "restored" and log == ["ran"]
    assert (workdir / "out/Makefile").read_text() == "all:\n"
    assert (workdir / "out/tool").read_text() == "#!/bin/sh\necho tool 1\n"
    backups = list((workdir / ".colabmagic" / "replaced").rglob("tool"))
    assert [p.read_text() for p in backups] == ["an old build"]


def test_absolute_outputs_are_restored_where_they_were(drive_root, workdir, tmp_path):
    prefix = tmp_path / "usr-local"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "lib" / "keep.so").write_text("the user's")
    log: list[str] = []

    def install() -> None:
        log.append("ran")
        (prefix / "lib" / "libcudnn.so").write_bytes(b"\x7fELF cudnn")
        (prefix / "include").mkdir(exist_ok=True)
        (prefix / "include" / "cudnn.h").write_text("#define CUDNN 9\n")
        Path("stamp").write_text("built")

    outputs = [str(prefix / "lib" / "libcudnn.so"), str(prefix / "include"), "stamp"]
    first = colabmagic.cache(CACHE, outputs, install, source="cudnn")
    assert first.action == "ran" and len(entry_files(drive_root)) == 3  # json + 2 archives
    (prefix / "lib" / "libcudnn.so").unlink()
    shutil.rmtree(prefix / "include")
    (workdir / "stamp").unlink()
    again = colabmagic.cache(CACHE, outputs, install, source="cudnn")
    assert again.action == "restored" and log == ["ran"]
    assert (prefix / "lib" / "libcudnn.so").read_bytes() == b"\x7fELF cudnn"
    assert (prefix / "include" / "cudnn.h").read_text() == "#define CUDNN 9\n"
    assert (prefix / "lib" / "keep.so").read_text() == "the user's"
    assert (workdir / "stamp").read_text() == "built"
    assert set(again.outputs) == {Path(o) if o != "stamp" else workdir / "stamp" for o in outputs}


def _tamper(drive_root: Path, key: str, extra: str) -> None:
    """Rewrite the entry's archive with one more member, and its record to match."""
    import zstandard

    folder = drive_root / "MyDrive/cache/tool"
    data = (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO((folder / f"{key}.tar.zst").read_bytes()))
        .read()
    )
    raw = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=raw, mode="w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(extra)
        info.size = 5
        dst.addfile(info, io.BytesIO(b"evil\n"))
    packed = zstandard.ZstdCompressor().compress(raw.getvalue())
    (folder / f"{key}.tar.zst").write_bytes(packed)
    record = json.loads((folder / f"{key}.json").read_text())
    import hashlib

    record["archives"][0]["sha256"] = hashlib.sha256(packed).hexdigest()
    record["archives"][0]["archive_bytes"] = len(packed)
    (folder / f"{key}.json").write_text(json.dumps(record))


def test_a_member_outside_the_outputs_is_refused_before_anything_is_written(drive_root, workdir):
    log: list[str] = []
    first = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    _tamper(drive_root, first.key, ".bashrc")
    wipe_outputs(workdir)
    with pytest.raises(ColabMagicError, match=r'holds "\.bashrc", which is not inside --outputs'):
        colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    assert sorted(os.listdir(workdir)) == [] and log == ["ran"]
    assert not list(cache_module.LOCAL.glob(f"{first.key}*"))


def test_an_archive_that_differs_from_its_record_is_refused(drive_root, workdir):
    log: list[str] = []
    first = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    archive = drive_root / "MyDrive/cache/tool" / f"{first.key}.tar.zst"
    data = bytearray(archive.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes
    archive.write_bytes(bytes(data))
    wipe_outputs(workdir)
    with pytest.raises(ColabMagicError):
        colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    assert not (workdir / "out").exists() and log == ["ran"]


def test_a_link_out_of_the_outputs_is_cached_as_the_file_it_names(drive_root, workdir, tmp_path):
    (tmp_path / "elsewhere.txt").write_text("outside")
    log: list[str] = []

    def run() -> None:
        log.append("ran")
        Path("out").mkdir()
        os.symlink(tmp_path / "elsewhere.txt", "out/link.txt")
        os.symlink("/etc", "out/etc")

    with pytest.raises(ColabMagicError, match=r"points outside the outputs, at a folder"):
        colabmagic.cache(CACHE, ["out"], run, source="s")
    os.unlink("out/etc")
    result = colabmagic.cache(CACHE, ["out"], lambda: None, source="s")
    assert any("its bytes were cached" in w for w in result.warnings)
    wipe_outputs(workdir)
    colabmagic.cache(CACHE, ["out"], lambda: None, source="s")
    assert not (workdir / "out/link.txt").is_symlink()
    assert (workdir / "out/link.txt").read_text() == "outside"


def test_gzip_when_zstandard_is_missing(drive_root, workdir, monkeypatch):
    monkeypatch.setattr(cache_module, "_archive_suffix", lambda: (".tar.gz", "gz"))
    log: list[str] = []
    first = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    assert entry_files(drive_root) == [f"{first.key}.json", f"{first.key}.tar.gz"]
    wipe_outputs(workdir)
    assert colabmagic.cache(CACHE, ["out"], build_tool(log), source="s").action == "restored"
    assert os.stat(workdir / "out/tool").st_mode & stat.S_IXUSR and log == ["ran"]


def test_bad_outputs_are_refused_before_running(drive_root, workdir):
    log: list[str] = []
    with pytest.raises(ColabMagicError, match="which holds it"):
        colabmagic.cache(CACHE, ["out", "out/tool"], build_tool(log), source="s")
    with pytest.raises(ColabMagicError, match="working directory itself"):
        colabmagic.cache(CACHE, ["."], build_tool(log), source="s")
    with pytest.raises(ColabMagicError, match="at least one"):
        colabmagic.cache(CACHE, [], build_tool(log), source="s")
    assert log == []


def test_the_result_has_an_escaped_html_table_and_a_text_view(drive_root, workdir):
    log: list[str] = []
    result = colabmagic.cache(CACHE, ["out"], build_tool(log), source="<b>s</b>", key="<i>")
    page = result._repr_html_()
    assert "<table>" in page and "<b>ran</b>" not in page and "ran the cell" in page
    assert str(result).splitlines()[0] == "%%cache" and "action" in str(result)


# --------------------------------------------------------------------------- the magic

BUILD_CELL = """\
!mkdir -p out && printf '#!/bin/sh\\necho built\\n' > out/tool && chmod +x out/tool
%cd out
answer = 41 + 1
%cd ..
!echo ran >> marker.txt
"""


def cache_cell(ip, body: str, options: str = "--outputs out/tool"):
    """Run a %%cache cell; its result is the CacheResult it showed (``_``), if it succeeded.

    The cell's own run_cell records the magic's value in ``_`` but not in the outer
    ExecutionResult, whose ``result`` the nested run leaves empty.
    """
    ip.user_ns.pop("_", None)
    outcome = ip.run_cell(f'%%cache "{CACHE}" {options}\n{body}')
    outcome.shown = ip.user_ns.get("_")
    return outcome


def test_the_magic_runs_bang_lines_cd_and_python_as_typed_then_restores(ip, drive_root, workdir):
    first = cache_cell(ip, BUILD_CELL)
    assert first.success and first.shown.action == "ran", first.error_in_exec
    assert ip.user_ns["answer"] == 42 and Path.cwd() == workdir
    assert (workdir / "marker.txt").read_text() == "ran\n"
    wipe_outputs(workdir)
    second = cache_cell(ip, BUILD_CELL)
    assert second.success and second.shown.action == "restored"
    assert (workdir / "marker.txt").read_text() == "ran\n"  # the cell did not run again
    out = subprocess.run([str(workdir / "out/tool")], capture_output=True, text=True)
    assert out.stdout == "built\n"
    assert "<table>" in second.shown._repr_html_()


def test_a_failing_cell_caches_nothing_and_fails_the_cell(ip, drive_root, workdir):
    result = cache_cell(ip, "!mkdir -p out && touch out/tool\nraise ValueError('boom')\n")
    assert not result.success and "the cell failed" in str(result.error_in_exec)
    assert str(result.error_in_exec).startswith("%%cache: ")
    result = cache_cell(ip, "!mkdir -p out && touch out/tool\n!exit 3\n")
    assert not result.success and "exited with status 3" in str(result.error_in_exec)
    assert entry_files(drive_root) == []


def test_key_is_expanded_like_any_magic_line(ip, drive_root, workdir):
    body = "!mkdir -p out && echo x > out/tool\n"
    ip.user_ns["version"] = "2.5.1"
    a = cache_cell(ip, body, '--outputs out/tool --key "torch {version}"').shown
    ip.user_ns["version"] = "2.6.0"
    b = cache_cell(ip, body, '--outputs out/tool --key "torch {version}"').shown
    assert a.key != b.key and a.key == a.key.lower() and len(a.key) == 16
    assert a.key == cache_module.cache_key(body, ["out/tool"], "torch 2.5.1")[:16]


def test_the_magic_refuses_a_line_without_outputs(ip, drive_root, workdir):
    result = ip.run_cell(f'%%cache "{CACHE}"\nprint("never")\n')
    assert not result.success and "--outputs" in str(result.error_in_exec)
    assert entry_files(drive_root) == []


def test_clear_through_the_magic(ip, drive_root, workdir):
    cache_cell(ip, BUILD_CELL)
    result = cache_cell(ip, BUILD_CELL, "--outputs out/tool --clear").shown
    assert result.action == "cleared" and entry_files(drive_root) == []
    assert (workdir / "marker.txt").read_text() == "ran\n"


# --------------------------------------------------------------------------- two kernels

COMPILE_WITH_CC = r"""%%cache "My Drive/cache/hello" --outputs build/hello
from pathlib import Path
Path("build").mkdir(exist_ok=True)
Path("build/hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello from cc"); }\n')
!cc -O1 -o build/hello build/hello.c
!echo ran >> marker.txt
"""

COMPILE_WITHOUT_CC = r"""%%cache "My Drive/cache/hello" --outputs build/hello
import time
from pathlib import Path
Path("build").mkdir(exist_ok=True)
Path("build/hello").write_text("#!/bin/sh\necho hello from cc\n")
Path("build/hello").chmod(0o755)
time.sleep(2)
!echo ran >> marker.txt
"""


def run_in_a_new_kernel(cells: list[str], cwd: Path) -> list[str]:
    """Run CELLS in a fresh kernel started in CWD, errors disallowed; their text output."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return [
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.outputs
        if output.output_type == "stream" and output.get("name") == "stdout"
    ]


def test_a_new_kernel_restores_the_compiled_binary_without_running_the_cell(tmp_path, monkeypatch):
    monkeypatch.delenv("COLABMAGIC_DRIVE", raising=False)
    src = tmp_path / "drive-src"
    (src / "MyDrive").mkdir(parents=True)
    cell = COMPILE_WITH_CC if shutil.which("cc") else COMPILE_WITHOUT_CC
    session = [
        f"%load_ext colabmagic\n%config ColabMagic.progress = False\n"
        f'%drive --fake "{src}" --profile fast;',
        cell,
        "print('action', _.action)",
        "%drive --unmount;",
    ]
    first, second = tmp_path / "vm1", tmp_path / "vm2"
    first.mkdir()
    second.mkdir()
    assert "action ran\n" in run_in_a_new_kernel(session, first)
    assert (first / "marker.txt").read_text() == "ran\n"
    entries = sorted(os.listdir(src / "MyDrive" / "cache" / "hello"))
    assert len(entries) == 2 and entries[0].endswith(".json")

    assert "action restored\n" in run_in_a_new_kernel(session, second)
    assert not (second / "marker.txt").exists()  # the cell did not run
    binary = second / "build" / "hello"
    assert os.stat(binary).st_mode & stat.S_IXUSR
    assert subprocess.run([str(binary)], capture_output=True, text=True).stdout == "hello from cc\n"
    assert binary.read_bytes() == (first / "build" / "hello").read_bytes()


def test_a_local_os_error_is_one_line_naming_the_path(drive_root, workdir, monkeypatch):
    def unreadable(root, *args):
        raise PermissionError(13, "Permission denied", str(root / "out" / "secret"))

    monkeypatch.setattr(cache_module, "_pack", unreadable)
    message = r'out/secret": Permission denied; nothing was cached'
    with pytest.raises(ColabMagicError, match=message):
        colabmagic.cache(CACHE, ["out"], build_tool([]), source="s")
    assert entry_files(drive_root) == []


def test_the_cli_says_cache_and_devpath_need_a_notebook(capsys):
    from colabmagic import cli

    assert cli.main(["cache", "My Drive/c", "--outputs", "x"]) == 2
    assert "use %%cache in a notebook" in capsys.readouterr().err
    assert cli.main(["devpath", "My Drive/code"]) == 2
    assert "use %devpath in a notebook" in capsys.readouterr().err
    assert cli.main(["cache", "My Drive/c"]) == 2  # --outputs is required
    assert "--outputs" in capsys.readouterr().err


def test_a_rewritten_entry_leaves_no_archive_of_the_old_one(drive_root, workdir, monkeypatch):
    log: list[str] = []
    first = colabmagic.cache(CACHE, ["out"], build_tool(log), source="s")
    monkeypatch.setattr(cache_module, "_archive_suffix", lambda: (".tar.gz", "gz"))
    colabmagic.cache(CACHE, ["out"], build_tool(log), source="s", force=True)
    assert entry_files(drive_root) == [f"{first.key}.json", f"{first.key}.tar.gz"]
    wipe_outputs(workdir)
    assert colabmagic.cache(CACHE, ["out"], build_tool(log), source="s").action == "restored"
