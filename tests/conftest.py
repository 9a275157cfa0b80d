"""Fixtures shared by the suite: a real InteractiveShell and a fake Drive root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.is_dir():
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def drive_root(tmp_path, monkeypatch):
    """A plain folder acting as the Drive root, with MyDrive inside, for every magic."""
    from colabmagic import drive

    root = tmp_path / "drive"
    (root / "MyDrive").mkdir(parents=True)
    monkeypatch.delenv(drive.ENV_VAR, raising=False)
    drive.use_root(root)
    yield root
    drive.use_root(None)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory: %stage's default target."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def ip(drive_root):
    """A real IPython shell with history off and colabmagic loaded through %load_ext."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "colabmagic")
    # The drive_root fixture set the root directly; make the trait agree with it.
    shell.run_line_magic("config", f'ColabMagic.drive_root = "{drive_root}"')
    shell.run_line_magic("config", "ColabMagic.progress = False")
    yield shell
    shell.run_line_magic("unload_ext", "colabmagic")
    # %config writes into the shell's config, which outlives this test's instance.
    shell.config.pop("ColabMagic", None)


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every file under FOLDER (relative name -> bytes; symlink -> 'link:target')."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                found[rel] = path.read_bytes()
    return found


def contents(folder: Path, *, sizes: bool = False) -> dict[str, object]:
    """Everything under FOLDER but colabmagic's state: each file's bytes (or size, with
    SIZES), each link as 'link:target', each folder as 'dir'."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != ".colabmagic"]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.stat().st_size if sizes else path.read_bytes()
    return found
