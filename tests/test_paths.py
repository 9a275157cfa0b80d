"""DESIGN §2: where Drive is and what a path typed in a magic names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from colabmagic import drive
from colabmagic.errors import ColabMagicError


@pytest.mark.parametrize(
    ("typed", "under"),
    [
        ("My Drive/data/x.zip", "MyDrive/data/x.zip"),
        ("MyDrive/data/x.zip", "MyDrive/data/x.zip"),
        ("/content/drive/MyDrive/data/x.zip", "MyDrive/data/x.zip"),
        ("/content/drive/My Drive/data/x.zip", "MyDrive/data/x.zip"),
        ("Shared drives/Team/x.zip", "Shareddrives/Team/x.zip"),
        ("Shareddrives/Team/x.zip", "Shareddrives/Team/x.zip"),
        ("My Drive", "MyDrive"),
    ],
)
def test_drive_spellings_name_the_same_place(drive_root, typed, under):
    assert drive.to_path(typed) == drive_root / under


@pytest.mark.parametrize("typed", ["/tmp/x.zip", "./x.zip", "../x.zip", "~/x.zip"])
def test_explicit_local_paths_stay_local(drive_root, typed):
    assert drive.to_path(typed) == Path(typed).expanduser()


def test_bare_relative_path_is_local_if_it_exists_else_in_my_drive(drive_root, workdir):
    (workdir / "here.zip").write_bytes(b"x")
    assert drive.to_path("here.zip") == Path("here.zip")
    assert drive.to_path("there.zip") == drive_root / "MyDrive" / "there.zip"


def test_environment_variable_sets_the_root(tmp_path, monkeypatch):
    drive.use_root(None)
    monkeypatch.setenv("COLABMAGIC_DRIVE", str(tmp_path))
    assert drive.to_path("My Drive/a") == tmp_path.resolve() / "MyDrive" / "a"


def test_config_trait_sets_the_root(ip, tmp_path):
    other = tmp_path / "other"
    (other / "MyDrive").mkdir(parents=True)
    ip.run_line_magic("config", f'ColabMagic.drive_root = "{other}"')
    assert drive.root() == other.resolve()


def test_not_mounted_outside_colab_says_how_to_fake_it(monkeypatch):
    drive.use_root(None)
    monkeypatch.delenv("COLABMAGIC_DRIVE", raising=False)
    with pytest.raises(ColabMagicError, match=r"COLABMAGIC_DRIVE=.*%drive --fake"):
        drive.root()


def test_missing_path_suggests_the_closest_sibling(drive_root):
    (drive_root / "MyDrive" / "datasets").mkdir()
    with pytest.raises(ColabMagicError) as caught:
        drive.resolve("My Drive/datsets/cats.zip")
    message = str(caught.value)
    assert 'did you mean "datasets"' in message
    assert "\n" not in message


def test_missing_path_without_drive_prefix_explains_the_rule(drive_root):
    with pytest.raises(ColabMagicError, match='start with "My Drive/" or "MyDrive/"'):
        drive.resolve("Mydrive/cats.zip")


def test_magic_error_is_one_line_usage_error(ip):
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("stage", '"My Drive/nope.zip"')
    assert str(caught.value).startswith("%stage: no such file or folder")
    assert "\n" not in str(caught.value)


def test_glob_lists_sorted_matches(drive_root):
    shards = drive_root / "MyDrive" / "shards"
    shards.mkdir()
    for name in ("b-1.tar", "a-0.tar", "c.txt"):
        (shards / name).write_bytes(b"")
    assert [p.name for p in drive.resolve_glob("My Drive/shards/*.tar")] == ["a-0.tar", "b-1.tar"]
    with pytest.raises(ColabMagicError, match="nothing matches"):
        drive.resolve_glob("My Drive/shards/*.zip")


def test_quoted_path_with_spaces_and_variable_expansion(ip, drive_root, workdir):
    folder = drive_root / "MyDrive" / "my data"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"hello")
    ip.user_ns["name"] = "notes.txt"
    ip.run_cell('r = %stage "My Drive/my data/{name}"')
    assert ip.user_ns["r"].action == "staged"
    assert (workdir / "notes.txt").read_bytes() == b"hello"
    assert os.path.samefile(ip.user_ns["r"].dest, workdir)


def test_missing_path_suggests_only_close_names(ip, drive_root):
    for name in ("corrupt.zip", "cats_dogs.zip"):
        (drive_root / "MyDrive" / name).write_bytes(b"")
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("stage", '"My Drive/nope.zip"')
    assert "did you mean" not in str(caught.value), caught.value
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("stage", '"My Drive/cats_dog.zip"')
    assert 'did you mean "cats_dogs.zip"' in str(caught.value)
