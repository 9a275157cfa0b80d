"""devpath(): a code folder in Drive on ``sys.path``, with its pitfalls shown.

The recipe it replaces: ``sys.path.append('/content/drive/My Drive/project')``,
``%load_ext autoreload``, ``%autoreload 2``, and then the surprises: Drive's web upload
makes ``preprocessing (1).py`` beside ``preprocessing.py`` instead of updating it,
Python keeps using an already imported (or an older) module, and ``__pycache__``
folders are written into Drive, slowly, and synced back to the PC.

- The folder goes first on ``sys.path``.  Imports from it go through a path hook of
  this module whose loader keeps bytecode in a local folder (`BYTECODE`), so nothing
  is ever written into Drive.  Not ``sys.pycache_prefix``: that setting is global, and
  every library imported after it (torch, transformers, ...) would be compiled again
  from source, once per session, instead of using its own ``__pycache__``.
- ``local=True`` copies the folder to local disk first (many reads in flight) and
  puts the copy on ``sys.path``; `sync` then copies only the files whose Drive size or
  mtime changed, from one listing per folder, before each cell (the magic registers it
  as a ``pre_run_cell`` hook).
- Autoreload (mode 2) and the hook need the IPython shell, which is passed in: this
  module never imports IPython.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import drive, fsio, interrupts
from .errors import ColabMagicError
from .results import Result, size

# Not a folder named "colabmagic": with the temporary folder as the working directory
# it would be importable as a namespace package of that name.
BYTECODE = Path(tempfile.gettempdir()) / "colabmagic-pycache"
LOCAL_COPIES = Path(tempfile.gettempdir()) / "colabmagic-devpath"
_COPY = re.compile(r"^(?P<base>.+?) \((?P<n>\d+)\)(?P<ext>\.py)?$")  # Drive's "name (1).py"


@dataclass(frozen=True)
class Module:
    """A module found in the folder: a top-level ``.py`` file or a package."""

    name: str
    kind: str  # "module" or "package"
    path: Path
    bytes: int
    mtime: float


@dataclass(frozen=True, repr=False)
class DevPathResult(Result):
    action: str  # "added", "refreshed" or "removed"
    folder: Path  # the folder in Drive
    path: Path | None  # what is on sys.path: the folder, or its local copy
    local: Path | None = None
    autoreload: str = "off"
    modules: tuple[Module, ...] = ()
    synced: int = 0  # files copied to the local copy by this call
    warnings: tuple[str, ...] = ()

    title = "%devpath"

    def rows(self) -> list[tuple[str, str]]:
        rows = [("action", self.action), ("folder", drive.shown(self.folder))]
        if self.action == "removed":
            return rows
        rows.append(("sys.path[0]", str(self.path)))
        if self.local is not None:
            rows.append(("local copy", f"{self.local} ({self.synced:,} files copied now)"))
        rows.append(("autoreload", self.autoreload))
        rows.append(("bytecode", f"{BYTECODE} (never in Drive)"))
        for module in self.modules:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(module.mtime))
            label = module.name + ("/" if module.kind == "package" else ".py")
            rows.append((label, f"{size(module.bytes)}, modified {when}"))
        if not self.modules:
            rows.append(("modules", "none found (no .py files or packages at the top)"))
        return rows

    def notes(self) -> list[str]:
        return list(self.warnings)

    def __repr__(self) -> str:
        return f"DevPathResult(action={self.action!r}, path={str(self.path)!r})"


@dataclass
class _Active:
    folder: Path
    entry: str  # the sys.path entry
    local: Path | None
    hook: Any = None  # the pre_run_cell callback, when there is a shell
    loaded_autoreload: bool = False  # this module turned autoreload on
    autoreload: bool = False  # on for this folder: a sync is followed by a reload
    shell: Any = None
    errors: list[str] = field(default_factory=list)


_active: dict[Path, _Active] = {}
_loaded: dict[str, tuple[float, int]] = {}  # source path -> (mtime, size) when imported


def devpath(
    drive_dir: str | os.PathLike | None = None,
    *,
    local: bool = False,
    autoreload: bool = True,
    remove: bool = False,
    shell: Any = None,
) -> DevPathResult:
    """Put DRIVE_DIR first on sys.path with autoreload on; a table of its modules and
    of what would bite (Drive's ``name (1).py`` copies, shadowed and stale modules).

    ``local`` works from a local copy that is re-synced before each cell; ``remove``
    undoes it (for every folder when DRIVE_DIR is None).  SHELL is the IPython shell
    (default: the running one, if IPython is already imported).
    """
    shell = shell if shell is not None else _running_shell()
    if remove:
        return _remove(drive_dir, shell)
    if drive_dir is None:
        raise ColabMagicError("give the Drive folder that holds your code")
    folder = _folder(os.fspath(drive_dir))
    action = "added"
    previous = _active.pop(folder, None)
    loaded_autoreload = False
    if previous is not None:
        action = "refreshed"
        loaded_autoreload = previous.loaded_autoreload
        _undo(previous)
    copy = None
    synced = 0
    if local:
        copy = LOCAL_COPIES / f"{folder.name}-{_short_hash(folder)}"
        with interrupts.deferred():
            synced = sync(folder, copy)
    entry = str(copy if copy is not None else folder)
    state = _Active(folder, entry, copy, loaded_autoreload=loaded_autoreload, shell=shell)
    _install(state)
    _active[folder] = state
    mode = "off"
    if shell is not None:
        if autoreload:
            state.loaded_autoreload |= _autoreload_on(shell)
            state.autoreload = True
            mode = "on (mode 2: every module is reloaded when its file changes)"
        if copy is not None:
            state.hook = lambda *info: _pre_run_cell(state)
            shell.events.register("pre_run_cell", state.hook)
    elif autoreload:
        mode = "off (no IPython shell)"
    return DevPathResult(
        action=action,
        folder=folder,
        path=Path(entry),
        local=copy,
        autoreload=mode,
        modules=tuple(modules(folder)),
        synced=synced,
        warnings=tuple(warnings(folder, copy, autoreload=autoreload and shell is not None)),
    )


def active() -> list[Path]:
    """The Drive folders devpath has put on sys.path, in the order they were added."""
    return list(_active)


def remove_all(shell: Any = None) -> None:
    """Undo every devpath (on `%unload_ext colabmagic`), autoreload included if it
    was devpath that turned it on."""
    states = list(_active.values())
    for state in states:
        _undo(state)
    _active.clear()
    if shell is not None and any(s.loaded_autoreload for s in states):
        shell.run_line_magic("autoreload", "0")


# --------------------------------------------------------------------------- the folder


def _running_shell() -> Any:
    ipython = sys.modules.get("IPython")  # only if it is already imported: stay cheap
    return ipython.get_ipython() if ipython is not None else None


def _folder(text: str) -> Path:
    try:
        path = drive.resolve(text)
    except ColabMagicError:
        if "\\" not in text:
            raise
        path = drive.resolve(text.replace("\\", "/"))  # a path copied from Windows
    if not path.is_dir():
        raise ColabMagicError(f'"{text}" is not a folder; give the folder that holds your code')
    return path.resolve()


def _short_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha1(os.fsencode(path)).hexdigest()[:8]


def _skipped(name: str) -> bool:
    """Not code: caches, hidden folders (.git, .ipynb_checkpoints), half-written files."""
    return name == "__pycache__" or name.startswith(".") or name.endswith(fsio.PARTIAL)


def modules(folder: Path) -> list[Module]:
    """The top-level modules and packages in FOLDER, by name."""
    found = []
    for entry in _scan(folder):
        if entry.is_dir() and (Path(entry.path) / "__init__.py").is_file():
            total, newest = _package_size(Path(entry.path))
            found.append(Module(entry.name, "package", Path(entry.path), total, newest))
        elif entry.is_file() and entry.name.endswith(".py") and entry.name[:-3].isidentifier():
            st = entry.stat()
            found.append(
                Module(entry.name[:-3], "module", Path(entry.path), st.st_size, st.st_mtime)
            )
    return sorted(found, key=lambda m: m.name)


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if not _skipped(e.name)]
    except OSError as error:
        raise ColabMagicError(f'cannot list "{folder}": {error.strerror}') from None


def _package_size(path: Path) -> tuple[int, float]:
    total, newest = 0, 0.0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not _skipped(d)]
        for name in filenames:
            if name.endswith(".py"):
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(dirpath, name))
                    total += st.st_size
                    newest = max(newest, st.st_mtime)
    return total, newest


def warnings(folder: Path, copy: Path | None, *, autoreload: bool) -> list[str]:
    """What would surprise: Drive's copies, shadowed and stale modules."""
    found: list[str] = []
    entries = {e.name: e for e in _scan(folder)}
    for name, entry in sorted(entries.items()):
        match = _COPY.match(name)
        if match is None or (match["ext"] is None) != entry.is_dir():
            continue
        ext = match["ext"] or ""
        base = match["base"] + ext
        if base in entries:
            newer = entry.stat().st_mtime > entries[base].stat().st_mtime
            found.append(
                f'"{name}" is a copy Drive made instead of updating "{base}"; Python imports '
                f'"{base}", which is {"older" if newer else "newer"}. '
                + (
                    f'If the copy is the version you want, delete "{base}" and rename the copy.'
                    if newer
                    else "Delete the copy if you do not need it."
                )
            )
        else:
            found.append(
                f'"{name}" cannot be imported (a space and brackets in its name): '
                f'Drive made it from "{base}"; rename it to "{base}"'
            )
    if "__init__.py" in entries:
        found.append(
            f'{drive.shown(folder)} is itself a package (it has __init__.py): to "import '
            f'{folder.name}", give the folder that holds it'
        )
    roots = [folder] + ([copy] if copy is not None else [])
    for module in modules(folder):
        imported = sys.modules.get(module.name)
        if module.name in getattr(sys, "stdlib_module_names", ()) and imported is None:
            found.append(
                f'"{module.name}" is also a standard-library module: Python now imports yours '
                "in its place, for every library that uses it; rename it"
            )
        if imported is None:
            continue
        where = getattr(imported, "__file__", None)
        if where is None or not any(_inside(where, root) for root in roots):
            found.append(
                f'"{module.name}" is already imported from {where or "the interpreter itself"}, '
                "which shadows the one in Drive; restart the session to import the Drive one"
            )
    if copy is not None:
        for name, module in list(sys.modules.items()):
            where = getattr(module, "__file__", None)
            if where and "." not in name and _inside(where, folder):
                found.append(
                    f'"{name}" was imported from Drive itself before --local; it keeps '
                    "reading Drive (autoreload too) until the session restarts"
                )
    for name, where in _stale(roots):
        fix = (
            "autoreload reloads it before the next cell runs"
            if autoreload
            else f"importlib.reload({name}) or a restart picks up the change"
        )
        found.append(f'"{name}" changed in Drive since it was imported ({where}); {fix}')
    return found


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def _inside(where: str, root: Path) -> bool:
    """Whether the absolute file name WHERE (a module's __file__) lies under ROOT."""
    return where.startswith(str(root) + os.sep)


def _stale(roots: list[Path]) -> list[tuple[str, Path]]:
    """Imported modules from ROOTS whose source changed since they were imported."""
    found = []
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if not where or not where.endswith(".py"):
            continue
        if not any(_inside(where, root) for root in roots):
            continue
        path = Path(where)
        seen = _loaded.get(str(path)) or _pyc_stats(module)
        if seen is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (int(st.st_mtime), st.st_size) != (int(seen[0]), seen[1]):
            found.append((name, path))
    return found


def _pyc_stats(module: Any) -> tuple[float, int] | None:
    """(mtime, size) of the source as the module's bytecode records it, if any."""
    spec = getattr(module, "__spec__", None)
    cached = getattr(spec, "cached", None)
    if not cached:
        return None
    for path in (_bytecode_path(cached), cached):
        try:
            with open(path, "rb") as pyc:
                header = pyc.read(16)
        except OSError:
            continue
        if len(header) == 16 and int.from_bytes(header[4:8], "little") == 0:
            return float(int.from_bytes(header[8:12], "little")), int.from_bytes(
                header[12:16], "little"
            )
    return None


# --------------------------------------------------------------------------- imports


def _bytecode_path(path: str) -> str:
    """Where the bytecode Python would put at PATH (``.../__pycache__/x.pyc``) is kept."""
    p = Path(path)
    if p.suffix == ".pyc" and p.parent.name == "__pycache__":
        return str(BYTECODE / p.relative_to(p.anchor))
    return path


class _Loader(importlib.machinery.SourceFileLoader):
    """A source loader that keeps bytecode in BYTECODE, never beside the source in Drive,
    and notes each source's mtime and size as it is loaded (for the stale warning)."""

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            _loaded[path] = (st.st_mtime, st.st_size)
        return super().get_code(fullname)

    def get_data(self, path: str) -> bytes:
        return super().get_data(_bytecode_path(path))

    def path_stats(self, path: str) -> dict[str, int]:
        # The bytecode records (mtime, size) of its source to tell when it is stale, and
        # Python keeps whole seconds: a file synced from the PC within the second, at
        # the same size (a 1 changed to a 2), would run the old code.  Nanoseconds
        # make any new mtime count; this bytecode is only ever read by this loader.
        st = os.stat(path)
        return {"mtime": st.st_mtime_ns, "size": st.st_size}

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        super().set_data(_bytecode_path(path), data, _mode=_mode)


def _path_hook(path: str) -> Any:
    """sys.path_hooks entry: a finder with `_Loader` for the folders devpath added."""
    if not any(_under(Path(path), Path(state.entry)) for state in _active.values()):
        raise ImportError("not a devpath folder")
    m = importlib.machinery
    return m.FileFinder(
        path,
        (m.ExtensionFileLoader, m.EXTENSION_SUFFIXES),
        (_Loader, m.SOURCE_SUFFIXES),
        (m.SourcelessFileLoader, m.BYTECODE_SUFFIXES),
    )


def _forget_finders(entry: str) -> None:
    for path in list(sys.path_importer_cache):
        if _under(Path(path), Path(entry)):
            sys.path_importer_cache.pop(path, None)


def _install(state: _Active) -> None:
    if _path_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, _path_hook)
    while state.entry in sys.path:
        sys.path.remove(state.entry)
    sys.path.insert(0, state.entry)
    _forget_finders(state.entry)
    _active[state.folder] = state  # before the import system asks _path_hook


def _undo(state: _Active) -> None:
    while state.entry in sys.path:
        sys.path.remove(state.entry)
    _active.pop(state.folder, None)
    _forget_finders(state.entry)
    if state.hook is not None and state.shell is not None:
        with contextlib.suppress(ValueError):
            state.shell.events.unregister("pre_run_cell", state.hook)
    if not _active and _path_hook in sys.path_hooks:
        sys.path_hooks.remove(_path_hook)


def _remove(drive_dir: str | os.PathLike | None, shell: Any) -> DevPathResult:
    if drive_dir is None:
        states = list(_active.values())
    else:
        folder = _folder(os.fspath(drive_dir))
        if folder not in _active:
            raise ColabMagicError(f'"{drive.shown(folder)}" was not added with %devpath')
        states = [_active[folder]]
    if not states:
        raise ColabMagicError("no folder was added with %devpath")
    for state in states:
        _undo(state)
    if not _active and shell is not None and any(s.loaded_autoreload for s in states):
        shell.run_line_magic("autoreload", "0")
    names = ", ".join(drive.shown(s.folder) for s in states)
    return DevPathResult(
        action="removed",
        folder=states[0].folder,
        path=None,
        warnings=(
            f"removed {names} from sys.path"
            + ("; autoreload is off again" if any(s.loaded_autoreload for s in states) else "")
            + "; modules already imported stay imported",
        ),
    )


# --------------------------------------------------------------------------- IPython


def _autoreload_on(shell: Any) -> bool:
    """Autoreload in mode 2 through the extension's own API; True if it was off."""
    was_loaded = "AutoreloadMagics" in shell.magics_manager.registry
    if not was_loaded:
        shell.extension_manager.load_extension("autoreload")
    shell.run_line_magic("autoreload", "2")
    return not was_loaded


def _pre_run_cell(state: _Active) -> None:
    if state.local is None or _active.get(state.folder) is not state:
        return
    try:
        changed = sync(state.folder, state.local)
        if changed and state.autoreload:
            # Autoreload's own pre_run_cell hook may have looked before this one
            # (IPython runs them in the order they were registered): ask it now.
            state.shell.run_line_magic("autoreload", "")
    except (ColabMagicError, OSError) as error:  # a cell must still run
        message = f"%devpath: could not sync {drive.shown(state.folder)}: {error}"
        if message not in state.errors:
            state.errors.append(message)
            print(message, file=sys.stderr)


# --------------------------------------------------------------------------- local copy


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """{relative name: (size, mtime_ns)} of the files under FOLDER: one listing per
    folder, sizes and times from the same pass (no read of any file)."""
    found: dict[str, tuple[int, int]] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            with os.scandir(folder / rel if rel else folder) as entries:
                for entry in entries:
                    if _skipped(entry.name):
                        continue
                    name = f"{rel}/{entry.name}" if rel else entry.name
                    st = entry.stat()
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(name)
                    elif stat.S_ISREG(st.st_mode):
                        found[name] = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            continue
    return found


def sync(folder: Path, copy: Path, *, workers: int | None = None) -> int:
    """Make COPY hold FOLDER's files: copy those whose size or mtime differ (many in
    flight), delete those gone from FOLDER; return how many were copied."""
    from .source import WORKERS

    remote = _listing(folder)
    copy.mkdir(parents=True, exist_ok=True)
    here = _listing(copy)
    changed = [name for name, seen in remote.items() if here.get(name) != seen]
    for name in here.keys() - remote.keys():
        fsio.remove_quietly(copy / name)
    for _ in interrupts.run_all(
        lambda name: _copy_one(folder / name, copy / name, remote[name]),
        changed,
        workers=workers or WORKERS,
        name="colabmagic-devpath",
    ):
        pass
    return len(changed)


def _copy_one(src: Path, dst: Path, seen: tuple[int, int]) -> None:
    from .source import SourceFile

    dst.parent.mkdir(parents=True, exist_ok=True)
    reader = SourceFile(src)
    try:
        executable = bool(os.stat(src).st_mode & 0o100)
        fsio.atomic_copy(
            reader.chunks(),
            dst,
            size=reader.size,
            times_ns=(seen[1], seen[1]),
            executable=executable,
            sync=False,  # a copy that a crash loses is made again from Drive
        )
    finally:
        reader.close()
