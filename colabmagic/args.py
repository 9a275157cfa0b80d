"""One argument definition per command, shared by the magic, the CLI and the docs.

Each entry is ``(flags, argparse keyword arguments)``.  ``magics.py`` turns them into
``@argument`` decorators, ``cli.py`` into subparsers, so ``%stage?`` and
``colabmagic stage --help`` can never disagree.  ``dest`` names equal the keyword
arguments of the Python twins, so a parsed namespace is passed straight through.
"""

from __future__ import annotations

from typing import Any

Arg = tuple[tuple[str, ...], dict[str, Any]]

QUIET: Arg = (("--quiet", "-q"), {"action": "store_true", "help": "no progress bar"})
WORKERS: Arg = (
    ("--workers",),
    {"type": int, "default": None, "metavar": "N", "help": "reads in flight (default 16)"},
)
FORCE: Arg = (("--force",), {"action": "store_true", "help": "redo even if up to date"})

COMMANDS: dict[str, tuple[str, list[Arg]]] = {
    "stage": (
        "Bring SRC (an archive, a folder, a file or a glob) from Drive to local disk, once.",
        [
            (("src",), {"metavar": "SRC", "help": 'e.g. "My Drive/datasets/cats.zip"'}),
            (("--to",), {"metavar": "DIR", "default": None, "help": "target (default: .)"}),
            (
                ("--force",),
                {"action": "store_true", "help": "re-stage, replacing what is in the way"},
            ),
            (
                ("--keep-archive",),
                {"action": "store_true", "help": "also keep a local copy of the archive"},
            ),
            (("--sha256",), {"metavar": "HEX", "default": None, "help": "verify the source"}),
            (
                ("--format",),
                {
                    "choices": ["auto", "zip", "tar", "file"],
                    "default": "auto",
                    "help": "what SRC is (default: from its name, else its first bytes)",
                },
            ),
            (
                ("--allow-ratio",),
                {"action": "store_true", "help": "unpack even if it expands over 1000:1"},
            ),
            WORKERS,
            QUIET,
        ],
    ),
    "packdrive": (
        "Pack a Drive folder of many small files into one archive in Drive.",
        [
            (("folder",), {"metavar": "FOLDER", "help": 'e.g. "My Drive/datasets/train"'}),
            (
                ("archive",),
                {"metavar": "ARCHIVE", "nargs": "?", "default": None, "help": "FOLDER.zip"},
            ),
            (("--format",), {"choices": ["zip", "tar"], "default": "zip"}),
            (("--shard-size",), {"metavar": "SIZE", "default": None, "help": "e.g. 1GB"}),
            (
                ("--compress",),
                {"choices": ["auto", "store", "deflate"], "default": "auto"},
            ),
            WORKERS,
            FORCE,
            QUIET,
        ],
    ),
    "ckptlink": (
        "Keep checkpoints in Drive so that a disconnect loses nothing.",
        [
            (("local",), {"metavar": "LOCAL", "nargs": "?", "default": None}),
            (("drive_dir",), {"metavar": "DRIVE_DIR", "nargs": "?", "default": None}),
            (
                ("--mirror",),
                {"action": "store_true", "help": "keep LOCAL local, copy to Drive in background"},
            ),
            (("--every",), {"type": float, "default": 30.0, "metavar": "SECONDS"}),
            (("--keep",), {"type": int, "default": None, "metavar": "N"}),
            (("--stop",), {"action": "store_true", "help": "end the mirror after a last sync"}),
            (("--status",), {"action": "store_true", "help": "show the mirror's state"}),
            (("--force",), {"action": "store_true", "help": "relink a link that points elsewhere"}),
        ],
    ),
    "timeread": (
        "Measure what reading PATH costs from Drive against local disk.",
        [
            (("path",), {"metavar": "PATH", "nargs": "?", "default": None}),
            (("--files",), {"type": int, "default": 100, "metavar": "N"}),
            WORKERS,
            (("--local",), {"metavar": "DIR", "default": None}),
            QUIET,
        ],
    ),
    "drive": (
        "Show where Drive is and how it is doing; --fake mounts a simulated Drive.",
        [
            (("--fake",), {"metavar": "DIR", "default": None}),
            (
                ("--profile",),
                {"choices": ["colab", "bench", "fast", "none"], "default": "bench"},
            ),
            (("--remount",), {"action": "store_true"}),
            (("--unmount",), {"action": "store_true"}),
        ],
    ),
}
