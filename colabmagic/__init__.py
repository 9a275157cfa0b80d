"""colabmagic: IPython magics that make Colab training stop waiting on Google Drive.

    %load_ext colabmagic
    %stage "My Drive/datasets/cats_dogs.zip"

Every magic has a Python twin here (``colabmagic.stage(...)``) and a CLI twin
(``colabmagic stage ...``).  Importing this package stays cheap: the modules below
import their heavy dependencies (tqdm, humanize, zipfile, tarfile) where they use them.
"""

from __future__ import annotations

from typing import Any

# The twins share their names with the modules that define them; binding the
# functions here, after the submodules are imported, keeps `colabmagic.stage` the
# function (a later `import colabmagic.stage` does not rebind a loaded module).
from .checkpoints import latest_checkpoint, link_checkpoints
from .errors import ColabMagicError
from .pack import pack
from .stage import stage
from .status import drive_status
from .timeread import timeread

__version__ = "0.1.0"

__all__ = [
    "ColabMagicError",
    "drive_status",
    "latest_checkpoint",
    "link_checkpoints",
    "load_ipython_extension",
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


def __getattr__(name: str) -> Any:
    # `colabmagic.fakedrive.mount(...)` without importing the FUSE code up front.
    if name == "fakedrive":
        import importlib

        return importlib.import_module(".fakedrive", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
