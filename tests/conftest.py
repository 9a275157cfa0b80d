"""Fixtures shared by the suite: a real InteractiveShell and a fake Drive root."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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


@pytest.fixture
def sigint():
    """Ctrl-C as a terminal or Jupyter delivers it (KeyboardInterrupt in the main
    thread), whatever this run inherited: under `nohup ... &` SIGINT arrives ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def quick_retries(monkeypatch):
    """Back-off in milliseconds, not seconds: the retries are what is under test."""
    from colabmagic import source

    monkeypatch.setattr(source, "BACKOFF_FIRST", 0.001)


@pytest.fixture(scope="module")
def drive() -> Iterator[tuple[Path, Path]]:
    """(SRC, ROOT): a simulated Drive over SRC, mounted at ROOT for the test module."""
    from colabmagic import fakedrive

    if reason := fakedrive.available():
        pytest.skip(f"fake Drive unavailable: {reason}")
    with tempfile.TemporaryDirectory(prefix="colabmagic-drive-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        with fakedrive.mount(src, profile="fast") as root:
            yield src, root


@pytest.fixture
def faults(drive: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    """The module's Drive, every fault and profile change undone after the test."""
    from colabmagic import fakedrive

    yield drive
    fakedrive.configure(
        drive[1],
        fail_after=None,
        fail_errno=None,
        fail_path=None,
        fail_always=None,
        fail_rate=None,
        seed=None,
        profile="fast",
    )
