"""colabmagic: IPython magics that make Colab training stop waiting on Google Drive.

    %load_ext colabmagic
    %stage "My Drive/datasets/cats_dogs.zip"

Every magic has a Python twin here (``colabmagic.stage(...)``) and a CLI twin
(``colabmagic stage ...``).  Importing this package stays cheap: each twin's module is
imported on first use, and imports its heavy dependencies where it uses them.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .errors import ColabMagicError

__version__ = "0.1.0"

__all__ = [
    "ArchiveDataset",
    "ColabMagicError",
    "cache",
    "devpath",
    "drive_status",
    "latest_checkpoint",
    "link_checkpoints",
    "load_ipython_extension",
    "open_archive",
    "pack",
    "stage",
    "timeread",
    "unload_ipython_extension",
]


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext colabmagic`: register %stage, %packdrive, %ckptlink, %timeread, %drive."""
    from .magics import load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """`%unload_ext colabmagic`: remove the magics and stop any checkpoint mirror."""
    from .magics import unload

    unload(ip)


# The Python twins and the module of each, imported on first use so that
# `import colabmagic` stays cheap (PEP 562).  Importing a submodule binds its name on
# the package, which would hide a function of the same name: where the two names are
# the same (the `pack` and `timeread` subpackages), _Package below keeps the function bound.
_TWINS = {
    "stage": "staging",
    "pack": "pack",
    "timeread": "timeread",
    "link_checkpoints": "checkpoints",
    "latest_checkpoint": "checkpoints",
    "drive_status": "status",
    "cache": "cache",
    "devpath": "devpath",
    "open_archive": "inplace",
    "ArchiveDataset": "inplace",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _TWINS:
        value = getattr(importlib.import_module(f".{_TWINS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name == "fakedrive":  # colabmagic.fakedrive.mount(...)
        return importlib.import_module(".fakedrive", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"fakedrive"})


class _Package(types.ModuleType):
    """This package, on which a twin's name stays bound to the function: the import
    system's ``setattr(colabmagic, "timeread", <subpackage>)``, made by any import of
    ``colabmagic.timeread`` or of a module inside it, binds the function instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _TWINS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
