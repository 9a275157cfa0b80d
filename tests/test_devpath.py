"""%devpath: a code folder in Drive on sys.path, edited between cells, with its pitfalls.

A real InteractiveShell runs the cells; the Drive is a plain folder, and once the
simulated Drive (FUSE).  Each test uses its own module names: sys.modules is shared.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
from pathlib import Path

import pytest

import colabmagic

devpath_module = importlib.import_module("colabmagic.devpath")  # not the twin
_names = itertools.count()


@pytest.fixture
def project(drive_root, monkeypatch, tmp_path):
    """MyDrive/proj with one module (its name unique to the test) and a package; the
    bytecode folder in tmp_path, bytecode writing on; everything undone after."""
    monkeypatch.setattr(devpath_module, "BYTECODE", tmp_path / "pycache")
    monkeypatch.setattr(devpath_module, "LOCAL_COPIES", tmp_path / "copies")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    name = f"helpers_{os.getpid()}_{next(_names)}"
    folder = drive_root / "MyDrive" / "proj"
    (folder / f"{name}pkg").mkdir(parents=True)
    (folder / f"{name}.py").write_text("def f():\n    return 1\n")
    (folder / f"{name}pkg" / "__init__.py").write_text("X = 'pkg'\n")
    before = list(sys.path)
    yield folder, name
    devpath_module.remove_all()
    sys.path[:] = before
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


@pytest.fixture
def shell(ip):
    yield ip
    if "AutoreloadMagics" in ip.magics_manager.registry:
        ip.run_line_magic("autoreload", "0")


def edit(path: Path, text: str) -> None:
    """Change PATH as a sync from the PC would: new bytes, a new mtime."""
    path.write_text(text)


def run(ip, code: str):
    result = ip.run_cell(code)
    assert result.success, result.error_in_exec or result.error_before_exec
    return result


def pycache_dirs(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("__pycache__")]


def test_the_folder_goes_first_and_an_edit_runs_in_the_next_cell(shell, project):
    folder, name = project
    result = shell.run_line_magic("devpath", '"My Drive/proj"')
    assert sys.path[0] == str(folder.resolve()) and result.action == "added"
    assert "mode 2" in result.autoreload
    run(shell, f"import {name}, {name}pkg\nfirst = {name}.f()")
    assert shell.user_ns["first"] == 1
    edit(folder / f"{name}.py", "def f():\n    return 2\n")  # same size, same second
    run(shell, f"second = {name}.f()")
    assert shell.user_ns["second"] == 2
    assert {m.name for m in result.modules} == {name, f"{name}pkg"}
    assert "<table>" in result._repr_html_() and f"{name}.py" in str(result)


def test_no_pycache_is_written_into_drive(shell, project, tmp_path):
    folder, name = project
    shell.run_line_magic("devpath", '"My Drive/proj"')
    run(shell, f"import {name}, {name}pkg")
    assert pycache_dirs(folder) == []
    kept = [p.name for p in (tmp_path / "pycache").rglob("*.pyc")]
    assert sorted(kept) == sorted(
        [
            f"{name}.{sys.implementation.cache_tag}.pyc",
            f"__init__.{sys.implementation.cache_tag}.pyc",
        ]
    )
    assert sys.pycache_prefix is None  # global bytecode of every other library untouched


def test_drive_copies_named_name_1_are_warned_about(shell, project):
    folder, name = project
    edit(folder / f"{name} (1).py", "def f():\n    return 'the new one'\n")
    os.utime(folder / f"{name}.py", (1_000_000_000, 1_000_000_000))  # the old one is older
    (folder / "orphan (2).py").write_text("")
    result = shell.run_line_magic("devpath", '"My Drive/proj"')
    copy = [w for w in result.warnings if f'"{name} (1).py"' in w]
    assert len(copy) == 1 and "copy Drive made instead of updating" in copy[0]
    assert f'Python imports "{name}.py", which is older' in copy[0]
    assert any('"orphan (2).py" cannot be imported' in w for w in result.warnings)
    assert f"{name} (1).py" in result._repr_html_()


def test_a_module_imported_from_elsewhere_is_shadowing(shell, project, tmp_path):
    folder, name = project
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    (elsewhere / f"{name}.py").write_text("def f():\n    return 'site'\n")
    sys.path.insert(0, str(elsewhere))
    run(shell, f"import {name}")
    sys.path.remove(str(elsewhere))
    result = shell.run_line_magic("devpath", '"My Drive/proj"')
    shadow = [w for w in result.warnings if "shadows the one in Drive" in w]
    assert len(shadow) == 1 and str(elsewhere) in shadow[0] and name in shadow[0]


def test_a_stale_module_is_warned_about_without_autoreload(shell, project):
    folder, name = project
    shell.run_line_magic("devpath", '"My Drive/proj" --no-autoreload')
    run(shell, f"import {name}")
    edit(folder / f"{name}.py", "def f():\n    return 'edited, longer'\n")
    result = shell.run_line_magic("devpath", '"My Drive/proj" --no-autoreload')
    assert result.action == "refreshed" and result.autoreload == "off"
    stale = [w for w in result.warnings if "changed in Drive since it was imported" in w]
    assert len(stale) == 1 and f"importlib.reload({name})" in stale[0]
    run(shell, f"old = {name}.f()")
    assert shell.user_ns["old"] == 1  # no autoreload: the old code still runs


def test_local_copy_is_imported_and_an_edit_arrives_through_the_pre_run_hook(shell, project):
    folder, name = project
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    result = shell.run_line_magic("devpath", '"My Drive/proj" --local')
    copy = result.local
    assert copy is not None and sys.path[0] == str(copy) and result.synced == 2
    assert (copy / f"{name}.py").read_text() == "def f():\n    return 1\n"
    assert not (copy / ".git").exists()  # not code: never listed, never copied
    run(shell, f"import {name}\nfirst = {name}.f()")
    assert shell.user_ns["first"] == 1
    assert Path(sys.modules[name].__file__).parent == copy
    edit(folder / f"{name}.py", "def f():\n    return 2\n")
    run(shell, f"second = {name}.f()")  # the hook syncs, then autoreload reloads
    assert shell.user_ns["second"] == 2
    assert (copy / f"{name}.py").read_text() == "def f():\n    return 2\n"
    (folder / f"{name}.py").unlink()
    run(shell, "pass")
    assert not (copy / f"{name}.py").exists() and pycache_dirs(folder) == []


def test_a_sync_with_nothing_changed_lists_each_folder_once_and_copies_nothing(
    project, tmp_path, monkeypatch
):
    folder, _ = project
    (folder / "deep" / "er").mkdir(parents=True)
    (folder / "deep" / "er" / "data.txt").write_text("x")
    copy = tmp_path / "copy"
    assert devpath_module.sync(folder, copy) == 3
    listed: list[str] = []
    real = os.scandir

    def counting(path="."):
        listed.append(os.fspath(path))
        return real(path)

    opened: list[str] = []
    real_open = devpath_module._copy_one

    monkeypatch.setattr(os, "scandir", counting)
    monkeypatch.setattr(devpath_module, "_copy_one", lambda *a: opened.append(a) or real_open(*a))
    assert devpath_module.sync(folder, copy) == 0
    in_drive = sorted(p for p in listed if p.startswith(str(folder)))
    assert len(in_drive) == len(set(in_drive)) == 4  # proj, its package, deep, deep/er
    assert opened == []


def test_remove_undoes_sys_path_the_hook_and_autoreload(shell, project):
    folder, name = project
    hooks_before = list(shell.events.callbacks["pre_run_cell"])
    autoreload_before = "AutoreloadMagics" in shell.magics_manager.registry
    result = shell.run_line_magic("devpath", '"My Drive/proj" --local')
    assert len(shell.events.callbacks["pre_run_cell"]) > len(hooks_before)
    removed = shell.run_line_magic("devpath", "--remove")
    assert removed.action == "removed" and str(result.local) not in sys.path
    assert shell.events.callbacks["pre_run_cell"][: len(hooks_before)] == hooks_before
    assert devpath_module._pre_run_cell not in shell.events.callbacks["pre_run_cell"]
    assert devpath_module._path_hook not in sys.path_hooks
    if not autoreload_before:
        assert "autoreload is off again" in str(removed)
    with pytest.raises(colabmagic.ColabMagicError, match="no folder was added"):
        colabmagic.devpath(remove=True)


def test_a_windows_style_path_and_a_missing_folder(shell, project):
    folder, _ = project
    result = colabmagic.devpath("My Drive\\proj", shell=shell, autoreload=False)
    assert result.folder == folder.resolve()
    missing = shell.run_cell('%devpath "My Drive/projx"')
    assert not missing.success and str(missing.error_in_exec).startswith("%devpath: ")
    assert 'did you mean "proj"' in str(missing.error_in_exec)


fakedrive = colabmagic.fakedrive
_no_fake = fakedrive.available()


@pytest.mark.skipif(_no_fake is not None, reason=f"simulated Drive: {_no_fake}")
def test_on_the_simulated_drive_an_edit_runs_and_no_pycache_appears(shell, tmp_path, monkeypatch):
    from colabmagic import drive

    monkeypatch.setattr(devpath_module, "BYTECODE", tmp_path / "pycache")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    name = f"simulated_{os.getpid()}"
    src = tmp_path / "drive-src"
    (src / "MyDrive" / "code").mkdir(parents=True)
    (src / "MyDrive" / "code" / f"{name}.py").write_text("VALUE = 'first'\n")
    before = list(sys.path)
    try:
        with fakedrive.mount(src, profile="fast") as root:
            drive.use_root(root)
            shell.run_line_magic("devpath", '"My Drive/code"')
            run(shell, f"import {name}\nfirst = {name}.VALUE")
            (root / "MyDrive" / "code" / f"{name}.py").write_text("VALUE = 'second, edited'\n")
            run(shell, f"second = {name}.VALUE")
            assert (shell.user_ns["first"], shell.user_ns["second"]) == ("first", "second, edited")
            devpath_module.remove_all()
        assert pycache_dirs(src) == []
    finally:
        devpath_module.remove_all()
        sys.path[:] = before
        sys.modules.pop(name, None)


def test_a_module_named_like_the_standard_library_is_warned_about(shell, project):
    folder, _ = project
    (folder / "antigravity.py").write_text("")  # in the standard library, never imported
    assert "antigravity" not in sys.modules
    result = shell.run_line_magic("devpath", '"My Drive/proj" --no-autoreload')
    assert any('"antigravity" is also a standard-library module' in w for w in result.warnings)


def test_unload_ext_undoes_devpath(shell, project):
    folder, _ = project
    result = shell.run_line_magic("devpath", '"My Drive/proj" --local')
    assert devpath_module.active() == [folder.resolve()] and sys.path[0] == str(result.local)
    shell.run_line_magic("unload_ext", "colabmagic")
    try:
        assert devpath_module.active() == [] and devpath_module._path_hook not in sys.path_hooks
        assert str(result.local) not in sys.path
    finally:
        shell.run_line_magic("load_ext", "colabmagic")


def test_a_package_given_as_the_folder_is_warned_about(shell, project):
    folder, name = project
    result = colabmagic.devpath(f"My Drive/proj/{name}pkg", shell=shell, autoreload=False)
    assert any(
        "is itself a package" in w and "the folder that holds it" in w for w in result.warnings
    )
