"""The shared hostile corpus: every archive gets its manifest outcome through all three
twins, and nothing outside the target folder, nor the user's files in it, changes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic.cli import main as cli
from colabmagic.errors import ColabMagicError
from tests.builders import SHARED, contents, tree

CORPUS = SHARED / "hostile-archives"
ROWS = (
    list(csv.DictReader((CORPUS / "MANIFEST.tsv").open(), delimiter="\t"))
    if CORPUS.is_dir()
    else []
)

# What each "extract" row stages, read from its manifest text: file -> size, link ->
# "link:target", folder -> "dir".  Zip names without the UTF-8 flag are cp437, as zipfile.
C214 = "COMPRESS-214_unix_symlinks/"
# The cp437 spellings of the UTF-8 folders 花子/瑛子/増谷 (stored without the UTF-8 flag).
_P = "\u03a6\u00e8\u2592\u03c3\u00a1\u00c9"
_Q = _P + "/\u03c4\u00e6\u00a2\u03c3\u00a1\u00c9"
PARENTS_214 = (_P, _Q, _Q + "/\u03c3\u00f3\u00f9\u03a6\u2591\u2556")
EXTRACTED: dict[str, dict[str, int | str]] = {
    "libarchive_zip_symlink.zip": {"file": 5, "symlink": "link:file"},
    "commons-compress_COMPRESS-214_unix_symlinks.zip": {
        # Escapes, not glyphs: U+F999 is a compatibility ideograph an editor may fold.
        C214[:-1]: "dir",
        **{C214 + d: "dir" for d in ("a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e", "a/b/c/d/e/f")},
        C214 + "a/b/c/d/e/f/g": 15,
        **{C214 + d: "dir" for d in PARENTS_214},
        C214 + PARENTS_214[-1] + "/\u2229\xaa\xd6": 14,
        C214 + "g": "link:./a/b/c/d/e/f/g",
        C214 + "link1": "link:../COMPRESS-214_unix_symlinks/./a/b/c/../../../\uf999",
        C214 + "link2": "link:../COMPRESS-214_unix_symlinks/./a/b/c/../../../g",
        C214 + "link3": "link:../COMPRESS-214_unix_symlinks/././a/b/c/../../../\u76f4\u6a39",
        C214 + "link4": "link:\u82b1\u5b50/\u745b\u5b50",
        C214 + "link5": "link:../COMPRESS-214_unix_symlinks/././a/b",
        C214 + "link6": "link:../COMPRESS-214_unix_symlinks/././a/b/",
        C214 + "\u03c4\xa2\u2524\xb5\xbf\u2563": "link:./g",
        C214 + "\u2229\xaa\xd6": "link:./\u82b1\u5b50/\u745b\u5b50/\u5897\u8c37/\uf999",
    },
    "zip2_zip64_demo.zip": {"-": 14},
    "go-zip_zip64.zip": {"README": 36},
    "libarchive_zip_zip64a.zip": {"-": 6},
    "cpython_exe_with_z64": {"-": 69},
    "go-zip_comment-truncated.zip": {"FILE": 1},
    "go-zip_test-trailing-junk.zip": {"test.txt": 26, "gophercolor16x16.png": 785},
    "dotnet_empty.zip": {},
    "libarchive_tar_concatenated.tar": {"file1": 0},
    "commons-compress_archive_with_trailer.tar": {"test1.xml": 610, "test2.xml": 82},
    "cpython_zip_cp437_header.zip": {"filename_with_æoå.txt": 5, "filename_without.txt": 5},
    "go-zip_utf8-osx.zip": {"Σ╕ûτòî": 0},
    "zip2_non_utf8.zip": {"╓╨╬─": 16, "ô·ò╢": 18},
    "go-tar_gnu-not-utf8.tar": {os.fsdecode(b"hi\x80\x81\x82\x83bye"): 0},
    "dotnet-tar_prefixDotSlashAndCurrentFolderEntry.tar": {
        "file.txt": 6,
        "directory": "dir",
        "directory/file.txt": 6,
    },
    "dotnet-tar_duplicate_dirs.tar": {"some_dir": "dir"},
    "libarchive_zip_nested.zip": {"file.txt": 53, "small.zip": 211},
    "go-zip_unix.zip": {"hello": 8, "readonly": 12, "dir": "dir", "dir/bar": 6, "dir/empty": "dir"},
    "cpython_testtar.tar.xz": {"test.txt": 0},
}


def declared_format(name: str) -> str:
    """What the user says a file is when its name does not (--format)."""
    if name.endswith((".zip", ".tar", ".tar.xz")):
        return "auto"
    return "tar" if name.endswith(".bz2") else "zip"  # .notzip, exe_with_z64


def stage_with(twin: str, ip, archive: Path, target: Path, fmt: str) -> str | None:
    """Stage ARCHIVE into TARGET through TWIN; the refusal message, or None if staged."""
    try:
        if twin == "magic":
            ip.run_line_magic("stage", f'"{archive}" --to "{target}" --format {fmt}')
        elif twin == "python":
            colabmagic.stage(archive, target, format=fmt, quiet=True)
        else:
            code = cli(["stage", str(archive), "--to", str(target), "--format", fmt, "-q"])
            return None if code == 0 else "cli refused"
    except (UsageError, ColabMagicError) as error:
        return str(error)
    return None


@pytest.mark.skipif(not ROWS, reason="../shared/hostile-archives not found")
@pytest.mark.parametrize("twin", ["magic", "python", "cli"])
@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_hostile_archive_gets_its_manifest_outcome(ip, tmp_path, capsys, row, twin):
    name = row["file"]
    box = tmp_path / "box"  # target and a neighbour: nothing else may appear in here
    target = box / "target"
    sibling = box / "sibling"
    target.mkdir(parents=True)
    sibling.mkdir()
    (target / "sentinel.txt").write_bytes(b"the user's own work")
    (sibling / "notes.txt").write_bytes(b"next door")
    refusal = stage_with(twin, ip, CORPUS / name, target, declared_format(name))

    assert sorted(os.listdir(box)) == ["sibling", "target"]  # nothing escaped
    assert tree(sibling) == {"notes.txt": b"next door"}
    assert (target / "sentinel.txt").read_bytes() == b"the user's own work"
    leftovers = [n for n in os.listdir(target / ".colabmagic") if n.startswith(("tmp-", "trash-"))]
    assert leftovers == []
    staged = {k: v for k, v in contents(target, sizes=True).items() if k != "sentinel.txt"}
    if row["outcome"] == "refuse":
        assert refusal is not None, f"{name} should have been refused"
        assert "\n" not in refusal
        if twin == "cli":
            assert capsys.readouterr().err.startswith("colabmagic stage: ")
        assert staged == {}
    else:
        assert refusal is None, f"{name} was refused: {refusal}"
        assert staged == EXTRACTED[name]
        for path in target.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert path.stat().st_mode & 0o600 == 0o600  # the user can clean up
                assert path.stat().st_mode & 0o022 == 0  # no group/other write


@pytest.mark.skipif(not ROWS, reason="../shared/hostile-archives not found")
def test_every_manifest_row_is_covered():
    extract_rows = {r["file"] for r in ROWS if r["outcome"] == "extract"}
    assert extract_rows == set(EXTRACTED)
