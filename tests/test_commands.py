"""The one argument table and dispatch (commands.py), through the magics and the CLI."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

import colabmagic
from colabmagic import commands
from colabmagic.cli import main as cli


def _usage_error(ip, magic: str, line: str) -> str:
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic(magic, line)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("magic", "line", "says"),
    [
        ("stage", '"My Drive/x.txt" --bogus', "unrecognized arguments: --bogus"),
        ("stage", '"My Drive/x.txt" --format rar', "argument --format: invalid choice: 'rar'"),
        ("stage", "", "the following arguments are required: SRC"),
        ("stage", '"My Drive/x.txt', "No closing quotation"),
        ("packdrive", "", "the following arguments are required: FOLDER"),
        ("ckptlink", "a b --every soon", "argument --every: invalid float value: 'soon'"),
        ("timeread", "--files many", "argument --files: invalid int value: 'many'"),
        ("drive", "--profile slow", "argument --profile: invalid choice: 'slow'"),
    ],
)
def test_argument_errors_keep_the_magic_prefix(ip, magic, line, says):
    message = _usage_error(ip, magic, line)
    assert message.startswith(f"%{magic}: ")
    assert says in message


# --- 1. a trailing ; -----------------------------------------------------------------


def test_trailing_semicolon_reaches_no_path_and_hides_the_result(ip, drive_root, workdir):
    (drive_root / "MyDrive" / "x.txt").write_bytes(b"x")
    shown = ip.run_cell('%stage "My Drive/x.txt" --to out', store_history=True)
    assert shown.success and shown.result is not None  # without ";" the table shows
    (workdir / "out" / "x.txt").unlink()

    hidden = ip.run_cell('%stage "My Drive/x.txt" --to out ;  ', store_history=True)
    assert hidden.success, hidden.error_in_exec
    assert hidden.result is None
    assert (workdir / "out" / "x.txt").read_bytes() == b"x"
    assert not (workdir / "out;").exists()

    bound = ip.run_cell('r = %stage "My Drive/x.txt" --to out --quiet;', store_history=True)
    assert bound.success, bound.error_in_exec
    assert ip.user_ns["r"].action == "skipped"


def test_semicolon_right_after_the_name(ip):
    shown = ip.run_cell("%drive", store_history=True)
    assert shown.success and type(shown.result).__name__ == "DriveStatus"
    for cell in ("%drive;", "  %drive ;", "status = %drive;"):
        run = ip.run_cell(cell, store_history=True)
        assert run.success, (cell, run.error_in_exec or run.error_before_exec)
        assert run.result is None, cell
    assert type(ip.user_ns["status"]).__name__ == "DriveStatus"


def test_semicolon_in_a_direct_call_is_dropped(ip, drive_root, workdir):
    (drive_root / "MyDrive" / "y.txt").write_bytes(b"y")
    result = ip.run_line_magic("stage", '"My Drive/y.txt" --to out -q;')
    assert result.action == "staged"
    assert (workdir / "out" / "y.txt").read_bytes() == b"y"


def test_unload_removes_the_semicolon_rewrite(ip):
    ip.run_line_magic("unload_ext", "colabmagic")
    try:
        assert "run_line_magic('drive;'" in ip.transform_cell("%drive;\n")
    finally:
        ip.run_line_magic("load_ext", "colabmagic")
    assert "run_line_magic('drive', '');" in ip.transform_cell("%drive;\n")


# --- 2. unquoted paths with spaces -----------------------------------------------------


def test_unquoted_path_with_spaces_gets_a_quoting_hint(ip, drive_root):
    folder = drive_root / "MyDrive" / "data sets"
    folder.mkdir()
    (folder / "x.zip").write_bytes(b"")
    message = _usage_error(ip, "stage", "My Drive/data sets/x.zip --to out")
    assert message == (
        "%stage: unrecognized arguments: Drive/data sets/x.zip; "
        'quote paths with spaces: %stage "My Drive/data sets/x.zip" --to out'
    )


def test_quoting_hint_for_a_local_path_and_a_second_argument(ip, drive_root, workdir):
    (workdir / "my runs").mkdir()
    message = _usage_error(ip, "ckptlink", 'my runs "My Drive/runs"')
    assert message.endswith('quote paths with spaces: %ckptlink "my runs" "My Drive/runs"')


def test_no_hint_when_the_words_name_nothing(ip):
    message = _usage_error(ip, "stage", "a b c")
    assert message == "%stage: unrecognized arguments: b c"


def test_cli_quoting_hint(drive_root, capsys):
    (drive_root / "MyDrive" / "data sets").mkdir()
    argv = ["--drive", str(drive_root), "stage", "My", "Drive/data", "sets"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("colabmagic stage: unrecognized arguments: Drive/data sets; ")
    assert f'colabmagic --drive {drive_root} stage "My Drive/data sets"' in err


# --- 3. one --workers check ------------------------------------------------------------


@pytest.mark.parametrize(
    ("magic", "line"),
    [
        ("stage", '"My Drive/x.txt" --workers 0'),
        ("stage", '"My Drive/x.txt" --workers -3'),
        ("packdrive", '"My Drive/d" --workers 0'),
        ("packdrive", '"My Drive/d" --workers 257'),
        ("timeread", '"My Drive/d" --workers 0'),
    ],
)
def test_workers_out_of_range_is_refused_by_every_magic(ip, drive_root, magic, line):
    (drive_root / "MyDrive" / "x.txt").write_bytes(b"x")
    (drive_root / "MyDrive" / "d").mkdir()
    message = _usage_error(ip, magic, line)
    assert message.startswith(f"%{magic}: --workers must be 1 or more, at most 256; not ")


def test_workers_trait_is_the_default_and_checked(ip):
    ip.run_line_magic("config", "ColabMagic.workers = 3")
    assert ip.magics_manager.registry["ColabMagic"]._defaults().workers == 3
    from traitlets import TraitError

    with pytest.raises(TraitError, match="between 1 and 256"):
        ip.magics_manager.registry["ColabMagic"].workers = 300


def test_cli_refuses_workers_out_of_range(drive_root, capsys):
    (drive_root / "MyDrive" / "x.txt").write_bytes(b"x")
    assert cli(["--drive", str(drive_root), "stage", "My Drive/x.txt", "--workers", "0"]) == 2
    assert "colabmagic stage: --workers must be 1 or more" in capsys.readouterr().err


def test_dispatch_defaults_come_from_source():
    from colabmagic import source

    assert commands.Defaults().workers == source.WORKERS
    with pytest.raises(colabmagic.ColabMagicError, match="at most 256"):
        commands.run("stage", argparse.Namespace(src="x", to=None, workers=999))


# --- 4. help ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(commands.COMMANDS))
def test_every_option_has_one_line_of_help_with_its_default(command):
    parser = commands.parser(command)
    for action in parser._actions:
        assert action.help and "\n" not in action.help, action.dest
        takes_value = action.option_strings and action.nargs != 0
        if takes_value or action.nargs == "?":
            assert "default" in action.help or "required" in action.help, action.help


def test_magic_help_shows_choices_and_defaults_readably(ip):
    magics = {**ip.magics_manager.magics["cell"], **ip.magics_manager.magics["line"]}
    docs = {name: magics[name].__doc__ for name in commands.COMMANDS}
    assert "--every SECONDS" in docs["ckptlink"]
    assert "seconds between the mirror's copies (default: 30)" in docs["ckptlink"]
    assert "keep the newest N checkpoints in DRIVE_DIR (default: all)" in docs["ckptlink"]
    assert "--format FORMAT" in docs["stage"] and "auto, zip, tar or file" in docs["stage"]
    for flag in ("--fake DIR", "--profile PROFILE", "--remount", "--unmount"):
        assert flag in docs["drive"]
    assert "(default: bench)" in docs["drive"]
    for doc in docs.values():  # no raw argparse choices such as <{auto,zip,tar,file}>
        assert not re.search(r"\{\w+(,\w+)+\}", doc) and "<{" not in doc


def test_help_inside_the_magic_prints_the_usage(ip, capsys):
    assert ip.run_line_magic("timeread", "--help") is None
    out = capsys.readouterr().out
    assert "%timeread" in out and "files in the sample (default: 100)" in out


# --- 5. the CLI's names and version ----------------------------------------------------


def _colabmagic(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colabmagic", *argv], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "shows"),
    [
        ("stage", "usage: colabmagic stage"),
        ("packdrive", "usage: colabmagic packdrive"),
        ("pack", "usage: colabmagic packdrive"),
        ("ckptlink", "usage: colabmagic ckptlink"),
        ("link-checkpoints", "usage: colabmagic ckptlink"),
        ("timeread", "usage: colabmagic timeread"),
        ("drive", "usage: colabmagic drive"),
        ("demo", "usage: colabmagic demo"),
    ],
)
def test_cli_takes_the_magic_names_and_the_verbs(name, shows):
    done = _colabmagic(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(shows)


def test_cli_packdrive_is_the_magic(drive_root, capsys):
    (drive_root / "MyDrive" / "train").mkdir()
    (drive_root / "MyDrive" / "train" / "a.txt").write_bytes(b"a")
    assert cli(["--drive", str(drive_root), "packdrive", "My Drive/train", "-q"]) == 0
    assert (drive_root / "MyDrive" / "train.zip").is_file()


def test_version():
    done = _colabmagic("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"colabmagic {colabmagic.__version__}"
    assert colabmagic.__version__.count(".") == 2


def test_cli_unknown_command_is_one_error_line(capsys):
    assert cli(["unzip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colabmagic: argument COMMAND: invalid choice: 'unzip'")


# --- 7. %drive --profile without --fake ------------------------------------------------


def test_drive_profile_needs_fake(ip):
    assert _usage_error(ip, "drive", "--profile colab") == "%drive: --profile goes with --fake DIR"


def test_drive_takes_one_action(ip, tmp_path):
    message = _usage_error(ip, "drive", f"--fake {tmp_path} --remount")
    assert message == "%drive: choose one of --fake / --remount"


def test_cli_drive_fake_needs_a_kernel(drive_root, tmp_path, capsys):
    assert cli(["drive", "--fake", str(tmp_path)]) == 2
    assert "--fake needs a running kernel" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("twin", "args"),
    [("stage", ("My Drive/x.txt",)), ("pack", ("My Drive/d",)), ("timeread", ("My Drive/d",))],
)
@pytest.mark.parametrize("workers", [0, -3, 257])
def test_every_python_twin_checks_workers(drive_root, workdir, twin, args, workers):
    (drive_root / "MyDrive" / "x.txt").write_bytes(b"x")
    (drive_root / "MyDrive" / "d").mkdir()
    (drive_root / "MyDrive" / "d" / "a").write_bytes(b"a")
    with pytest.raises(colabmagic.ColabMagicError, match="--workers must be 1 or more"):
        getattr(colabmagic, twin)(*args, workers=workers, quiet=True)
    assert list(workdir.iterdir()) == []
