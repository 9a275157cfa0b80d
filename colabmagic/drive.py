"""Where Drive is, and what a path typed in a magic names (DESIGN §2)."""

from __future__ import annotations

import difflib
import glob
import logging
import os
from pathlib import Path

from .errors import ColabMagicError

log = logging.getLogger(__name__)

COLAB_MOUNT_POINT = "/content/drive"
ENV_VAR = "COLABMAGIC_DRIVE"

# Set by `%config ColabMagic.drive_root`, `%drive --fake` or `use_root()`; wins over
# the environment, which wins over Colab's own mount.
_root_override: Path | None = None
_mount_point = COLAB_MOUNT_POINT

# Spellings users type for the two Drive trees, longest first so that
# "/content/drive/MyDrive" is matched before "MyDrive".
_DRIVE_PREFIXES = (
    ("/content/drive/MyDrive", "MyDrive"),
    ("/content/drive/My Drive", "MyDrive"),
    ("/content/drive/Shareddrives", "Shareddrives"),
    ("/content/drive/Shared drives", "Shareddrives"),
    ("My Drive", "MyDrive"),
    ("MyDrive", "MyDrive"),
    ("Shared drives", "Shareddrives"),
    ("Shareddrives", "Shareddrives"),
)
_RULE = 'Drive paths start with "My Drive/" or "MyDrive/" (or "Shared drives/NAME/")'


def use_root(root: str | os.PathLike | None) -> None:
    """Make ROOT (a folder that holds ``MyDrive``) the Drive for every command."""
    global _root_override
    _root_override = Path(root).expanduser().resolve() if root else None


def use_mount_point(path: str) -> None:
    """Where Colab's Drive is mounted (default ``/content/drive``)."""
    global _mount_point
    _mount_point = path


def root_override() -> Path | None:
    """The root set by `%config ColabMagic.drive_root`, `%drive --fake` or `use_root`."""
    return _root_override


def mount_point() -> Path:
    return Path(_mount_point)


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def current_root() -> Path | None:
    """The Drive root in force, without mounting anything: None if there is none yet."""
    if _root_override is not None:
        return _root_override
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    if in_colab() and (mount_point() / "MyDrive").is_dir():
        return mount_point()
    return None


def root() -> Path:
    """The folder that holds ``MyDrive``, mounting Drive in Colab on first need."""
    found = current_root()
    if found is not None:
        return found
    if in_colab():
        from google.colab import drive as colab_drive

        colab_drive.mount(str(mount_point()))
        return mount_point()
    raise ColabMagicError(
        "Drive is not mounted here. Outside Colab, point colabmagic at a folder that "
        f"holds MyDrive: set {ENV_VAR}=/path/to/folder, or run %drive --fake /path/to/folder"
    )


def split_drive_prefix(text: str) -> tuple[str, str] | None:
    """("MyDrive", rest) when TEXT names something in Drive by one of its spellings."""
    for prefix, tree in _DRIVE_PREFIXES:
        if text == prefix:
            return tree, ""
        if text.startswith(prefix + "/"):
            return tree, text[len(prefix) + 1 :]
    return None


def shown(path: str | os.PathLike) -> str:
    """PATH as a user types it in a magic: "My Drive/x" inside Drive, else as is."""
    found = current_root()
    if found is None:
        return str(path)
    for tree, spelling in (("MyDrive", "My Drive"), ("Shareddrives", "Shared drives")):
        try:
            rel = Path(path).relative_to(found / tree)
        except ValueError:
            continue
        return spelling if str(rel) == "." else f"{spelling}/{rel.as_posix()}"
    return str(path)


def _is_explicitly_local(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


def to_path(text: str) -> Path:
    """The path TEXT names, by the rules of DESIGN §2, without checking that it exists."""
    text = text.strip()
    if not text:
        raise ColabMagicError("empty path")
    drive_part = split_drive_prefix(text)
    if drive_part is not None:
        tree, rest = drive_part
        return root() / tree / rest if rest else root() / tree
    if _is_explicitly_local(text):
        return Path(text).expanduser()
    if Path(text).exists() or glob.has_magic(text) and glob.glob(text):
        return Path(text)
    return root() / "MyDrive" / text


def resolve(text: str) -> Path:
    """The existing path TEXT names; a one-line error with a suggestion if there is none."""
    path = to_path(text)
    if os.path.lexists(path):
        return path
    raise ColabMagicError(_missing_message(text, path))


def resolve_glob(text: str) -> list[Path]:
    """The existing paths TEXT names; a glob gives its sorted matches, at least one."""
    if not glob.has_magic(text):
        return [resolve(text)]
    pattern = to_path(text)
    matches = sorted(Path(p) for p in glob.glob(str(pattern)))
    if not matches:
        raise ColabMagicError(f'nothing matches "{text}"')
    return matches


def _closest(name: str, names: list[str]) -> str | None:
    """The name among NAMES that NAME is most likely a typo of, if one is close.

    Shared extensions count for nothing: "nope.zip" is not close to "corrupt.zip",
    however alike the ".zip" makes them look to difflib.
    """
    stem = _stem(name)
    for candidate in difflib.get_close_matches(name, names, n=5, cutoff=0.6):
        if difflib.SequenceMatcher(None, stem, _stem(candidate)).ratio() >= 0.7:
            return candidate
    return None


def _stem(name: str) -> str:
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0] or name


def _missing_message(text: str, path: Path) -> str:
    message = f'no such file or folder: "{text}"'
    # The deepest ancestor that exists, and the first component below it that does not.
    existing = path
    missing = None
    while not os.path.lexists(existing) and existing != existing.parent:
        missing = existing.name
        existing = existing.parent
    if missing is not None and existing.is_dir():
        try:
            names = os.listdir(existing)
        except OSError:
            names = []
        close = _closest(missing, names)
        if close:
            message += f'; did you mean "{close}" in {existing}?'
    if split_drive_prefix(text.strip()) is None or "My Drive" not in text:
        message += f". {_RULE}"
    return message
