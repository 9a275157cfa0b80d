"""Loading, unloading, configuration and import cost of the extension."""

from __future__ import annotations

import subprocess
import sys

import pytest

MAGICS = {"stage", "packdrive", "ckptlink", "timeread", "drive"}


def test_load_registers_and_unload_removes_the_magics(ip):
    assert set(ip.magics_manager.magics["line"]) >= MAGICS
    ip.run_line_magic("unload_ext", "colabmagic")
    assert not MAGICS & set(ip.magics_manager.magics["line"])
    ip.run_line_magic("load_ext", "colabmagic")
    assert set(ip.magics_manager.magics["line"]) >= MAGICS


def test_usage_is_generated_from_the_shared_arguments(ip):
    doc = ip.magics_manager.magics["line"]["stage"].__doc__
    for flag in ("--to", "--force", "--keep-archive", "--sha256", "--workers", "--quiet"):
        assert flag in doc


def test_cli_has_the_same_arguments(capsys):
    from colabmagic.cli import main

    with pytest.raises(SystemExit):
        main(["stage", "--help"])
    text = capsys.readouterr().out
    for flag in ("--to", "--force", "--keep-archive", "--sha256", "--workers", "--quiet"):
        assert flag in text


def test_config_traits(ip):
    ip.run_line_magic("config", "ColabMagic.workers = 32")
    magic = ip.magics_manager.registry["ColabMagic"]
    assert magic.workers == 32
    from traitlets import TraitError

    with pytest.raises(TraitError, match="between 1 and 256"):
        magic.workers = 0


def test_import_is_cheap():
    # Compared with a bare interpreter: site hooks may import some of these first.
    code = (
        "import sys; before = set(sys.modules); {}; "
        "heavy = {{'tqdm', 'humanize', 'tarfile', 'zipfile', 'IPython', 'mfusepy'}}; "
        "print(sorted(heavy & {{m.split('.')[0] for m in set(sys.modules) - before}}))"
    )
    bare = subprocess.run([sys.executable, "-c", code.format("pass")], capture_output=True)
    assert bare.returncode == 0
    out = subprocess.run(
        [sys.executable, "-c", code.format("import colabmagic")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_python_twin_error_renders_as_one_line(drive_root):
    import colabmagic

    with pytest.raises(colabmagic.ColabMagicError) as caught:
        colabmagic.stage("My Drive/missing.zip")
    assert caught.value._render_traceback_() == [f"ColabMagicError: {caught.value}"]
