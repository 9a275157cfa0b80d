"""The one argument table, its defaults, and the dispatch shared by the magics and the CLI.

Each entry of `COMMANDS` is ``(description, [(flags, argparse keyword arguments), ...])``.
``magics.py`` turns the entries into ``@argument`` decorators (so ``%stage?`` shows
them), ``cli.py`` into subparsers, and both parse with `parser()` and call `run()`,
so ``%stage?``, ``colabmagic stage --help`` and what each accepts can never disagree.
``dest`` names equal the keyword arguments of the Python twins, so a parsed namespace
is passed straight through.  Every option's help is one line that ends with its default.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import ranged, source
from .errors import ColabMagicError

Arg = tuple[tuple[str, ...], dict[str, Any]]


QUIET: Arg = (("--quiet", "-q"), {"action": "store_true", "help": "no progress bar"})
WORKERS: Arg = (
    ("--workers",),
    {
        "type": int,
        "default": None,
        "metavar": "N",
        "help": f"reads in flight, 1 to {source.MAX_WORKERS} "
        f"(default: ColabMagic.workers, {source.WORKERS})",
    },
)
FORCE: Arg = (("--force",), {"action": "store_true", "help": "redo even if up to date"})

COMMANDS: dict[str, tuple[str, list[Arg]]] = {
    "stage": (
        "Bring SRC (an archive, a folder, a file or a glob) from Drive to local disk, once.",
        [
            (("src",), {"metavar": "SRC", "help": 'what to bring, e.g. "My Drive/data/cats.zip"'}),
            (
                ("--to",),
                {"metavar": "DIR", "default": None, "help": "target folder (default: .)"},
            ),
            (
                ("--force",),
                {"action": "store_true", "help": "re-stage, replacing what is in the way"},
            ),
            (
                ("--keep-archive",),
                {"action": "store_true", "help": "also keep a local copy of the archive"},
            ),
            (
                ("--sha256",),
                {"metavar": "HEX", "default": None, "help": "verify the source (default: no)"},
            ),
            (
                ("--format",),
                {
                    "choices": ["auto", "zip", "tar", "file"],
                    "default": "auto",
                    "metavar": "FORMAT",
                    "help": "what SRC is: auto, zip, tar or file "
                    "(default: auto, from its name, else its first bytes)",
                },
            ),
            (
                ("--allow-ratio",),
                {"action": "store_true", "help": "unpack even if it expands over 1000:1"},
            ),
            (
                ("--streams",),
                {
                    "type": int,
                    "default": None,
                    "metavar": "N",
                    "help": f"ranged reads of one archive at once, 1 to {ranged.MAX_STREAMS} "
                    f"(default: {ranged.DEFAULT} for {ranged.THRESHOLD >> 20} MiB or more "
                    "on a FUSE mount such as Drive, else 1)",
                },
            ),
            WORKERS,
            QUIET,
        ],
    ),
    "packdrive": (
        "Pack a Drive folder of many small files into one archive in Drive.",
        [
            (
                ("folder",),
                {"metavar": "FOLDER", "help": 'what to pack, e.g. "My Drive/data/train"'},
            ),
            (
                ("archive",),
                {
                    "metavar": "ARCHIVE",
                    "nargs": "?",
                    "default": None,
                    "help": "the archive to write (default: FOLDER.zip beside FOLDER)",
                },
            ),
            (
                ("--format",),
                {
                    "choices": ["zip", "tar"],
                    "default": "zip",
                    "metavar": "FORMAT",
                    "help": "zip or tar (default: zip)",
                },
            ),
            (
                ("--shard-size",),
                {
                    "metavar": "SIZE",
                    "default": None,
                    "help": "write tar shards of SIZE, e.g. 1GB (default: one archive)",
                },
            ),
            (
                ("--compress",),
                {
                    "choices": ["auto", "store", "deflate"],
                    "default": "auto",
                    "metavar": "MODE",
                    "help": "auto (store what is compressed already), store or deflate "
                    "(default: auto)",
                },
            ),
            WORKERS,
            FORCE,
            QUIET,
        ],
    ),
    "ckptlink": (
        "Keep checkpoints in Drive so that a disconnect loses nothing.",
        [
            (
                ("local",),
                {
                    "metavar": "LOCAL",
                    "nargs": "?",
                    "default": None,
                    "help": "the local folder training writes to, e.g. checkpoints "
                    "(with --stop, default: every mirror)",
                },
            ),
            (
                ("drive_dir",),
                {
                    "metavar": "DRIVE_DIR",
                    "nargs": "?",
                    "default": None,
                    "help": 'where they are kept, e.g. "My Drive/runs/resnet" '
                    "(required unless --stop or --status)",
                },
            ),
            (
                ("--mirror",),
                {"action": "store_true", "help": "keep LOCAL local, copy to Drive in background"},
            ),
            (
                ("--every",),
                {
                    "type": float,
                    "default": 30.0,
                    "metavar": "SECONDS",
                    "help": "seconds between the mirror's copies (default: 30)",
                },
            ),
            (
                ("--keep",),
                {
                    "type": int,
                    "default": None,
                    "metavar": "N",
                    "help": "keep the newest N checkpoints in DRIVE_DIR (default: all)",
                },
            ),
            (("--stop",), {"action": "store_true", "help": "end the mirror after a last sync"}),
            (("--status",), {"action": "store_true", "help": "show the mirror's state"}),
            (("--force",), {"action": "store_true", "help": "relink a link that points elsewhere"}),
        ],
    ),
    "timeread": (
        "Measure what reading PATH costs from Drive against local disk.",
        [
            (
                ("path",),
                {
                    "metavar": "PATH",
                    "nargs": "?",
                    "default": None,
                    "help": "the files to sample (default: all of My Drive)",
                },
            ),
            (
                ("--files",),
                {
                    "type": int,
                    "default": 100,
                    "metavar": "N",
                    "help": "files in the sample (default: 100)",
                },
            ),
            WORKERS,
            (
                ("--local",),
                {
                    "metavar": "DIR",
                    "default": None,
                    "help": "local folder for the cold copies (default: a temporary one)",
                },
            ),
            QUIET,
        ],
    ),
    "drive": (
        "Show where Drive is and how it is doing; --fake mounts a simulated Drive.",
        [
            (
                ("--fake",),
                {
                    "metavar": "DIR",
                    "default": None,
                    "help": "make DIR (a folder holding MyDrive) a simulated Drive (default: none)",
                },
            ),
            (
                ("--profile",),
                {
                    "choices": ["colab", "bench", "multistream", "fast", "none"],
                    "default": None,
                    "metavar": "PROFILE",
                    "help": "with --fake: how slow, colab, bench, multistream, fast or none "
                    "(default: bench)",
                },
            ),
            (
                ("--remount",),
                {"action": "store_true", "help": "flush and remount Drive (all files cold again)"},
            ),
            (
                ("--unmount",),
                {"action": "store_true", "help": "flush and unmount Drive, or end --fake"},
            ),
        ],
    ),
    "cache": (
        "Run the cell once and keep its outputs in Drive; later sessions restore them.",
        [
            (
                ("drive_dir",),
                {
                    "metavar": "DRIVE_DIR",
                    "help": 'where the outputs are kept, e.g. "My Drive/cache/darknet"',
                },
            ),
            (
                ("--outputs",),
                {
                    "nargs": "+",
                    "required": True,
                    "metavar": "PATH",
                    "help": "files and folders the cell makes, relative to the working "
                    "directory or absolute (required)",
                },
            ),
            (
                ("--key",),
                {
                    "metavar": "TEXT",
                    "default": None,
                    "help": 'also key the entry by TEXT, e.g. "{torch.__version__}" '
                    "(default: the cell and --outputs only)",
                },
            ),
            (
                ("--force",),
                {"action": "store_true", "help": "run the cell again and replace the entry"},
            ),
            (
                ("--clear",),
                {"action": "store_true", "help": "delete this cell's entry; run nothing"},
            ),
            QUIET,
        ],
    ),
    "devpath": (
        "Put a code folder in Drive first on sys.path, with autoreload and its pitfalls shown.",
        [
            (
                ("drive_dir",),
                {
                    "metavar": "DRIVE_DIR",
                    "nargs": "?",
                    "default": None,
                    "help": 'the folder that holds your code, e.g. "My Drive/project" '
                    "(required, but for --remove: default every folder)",
                },
            ),
            (
                ("--local",),
                {
                    "action": "store_true",
                    "help": "import from a local copy, re-synced before each cell (default: no)",
                },
            ),
            (
                ("--no-autoreload",),
                {
                    "action": "store_false",
                    "dest": "autoreload",
                    "help": "leave autoreload alone (default: turn it on, mode 2)",
                },
            ),
            (
                ("--remove",),
                {
                    "action": "store_true",
                    "help": "undo it: take DRIVE_DIR (default: every one) off sys.path",
                },
            ),
        ],
    ),
}

# The Python twin of each command, where its name differs: the CLI takes both names.
ALIASES = {"packdrive": ["pack"], "ckptlink": ["link-checkpoints"]}


def canonical(name: str) -> str:
    """The command a CLI name or alias stands for ("pack" -> "packdrive")."""
    for command, aliases in ALIASES.items():
        if name in aliases:
            return command
    return name


# --- parsing -------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse that raises a one-line `ColabMagicError` instead of exiting."""

    def error(self, message: str) -> Any:
        raise ColabMagicError(message)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for flags, options in COMMANDS[command][1]:
        parser.add_argument(*flags, **options)
    return parser


def parser(command: str, *, prog: str | None = None, add_help: bool = False) -> Parser:
    """The parser of COMMAND; PROG ("%stage", "colabmagic stage") starts its usage line."""
    made = Parser(
        prog=prog or f"%{command}",
        description=COMMANDS[command][0],
        add_help=add_help,
    )
    return add_arguments(made, command)


def split(line: str) -> list[str]:
    """A magic's line split like a POSIX shell, without one trailing ``;``.

    ``;`` hides a result (see `magics._semicolon_hides`); in a line that reaches a
    magic with it (``ip.run_line_magic("stage", "x --to out;")``) it would otherwise
    end up in a path.
    """
    line = line.strip()
    if line.endswith(";"):
        line = line[:-1].rstrip()
    try:
        return shlex.split(line)
    except ValueError as error:
        raise ColabMagicError(f"{error} (quote paths with spaces in double quotes)") from None


def parse(made: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """ARGV parsed by MADE (a `Parser`); extra words that are the rest of a path with
    spaces get a hint that shows the line quoted."""
    args, extra = made.parse_known_args(list(argv))
    if extra:
        message = f"unrecognized arguments: {' '.join(extra)}"
        hint = _quoting_hint(made.prog, list(argv))
        raise ColabMagicError(f"{message}; {hint}" if hint else message)
    return args


def _quoting_hint(prog: str, argv: list[str]) -> str | None:
    """'quote paths with spaces: %stage "My Drive/a b.zip"' when two or more words of
    ARGV, joined with spaces, name an existing path or a Drive path."""
    for start, word in enumerate(argv):
        if word.startswith("-"):
            continue
        end = start + 1
        while end < len(argv) and not argv[end].startswith("-"):
            end += 1
        for stop in range(end, start + 1, -1):
            joined = " ".join(argv[start:stop])
            if _names_a_path(joined):
                words = [*argv[:start], joined, *argv[stop:]]
                line = " ".join(_quoted(w) for w in words)
                return f"quote paths with spaces: {prog} {line}"
    return None


def _names_a_path(text: str) -> bool:
    """Whether TEXT is a Drive path or names something that exists; never mounts Drive
    (an error message is no reason to)."""
    from . import drive

    if drive.split_drive_prefix(text) is not None:
        return True
    if os.path.lexists(os.path.expanduser(text)):
        return True
    root = drive.current_root()
    return root is not None and os.path.lexists(root / "MyDrive" / text)


def _quoted(word: str) -> str:
    if word and all(c.isalnum() or c in "-_./=:@%+,~" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- dispatch ------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """What a command takes when its line does not say: the magics' traits, or the CLI's."""

    workers: int = source.WORKERS
    quiet: bool = False  # True: no progress bars, whatever --quiet says
    kernel: bool = True  # False in the CLI: nothing may outlive the call (mirror, --fake)
    shell: Any = None  # the IPython shell a magic runs in (%%cache runs its cell there)


def run(command: str, args: argparse.Namespace, defaults: Defaults | None = None) -> Any:
    """Call the Python twin of COMMAND with ARGS (parsed by `parser(command)`)."""
    defaults = defaults or Defaults()
    options = dict(vars(args))
    if "workers" in options:
        options["workers"] = source.workers(
            defaults.workers if options["workers"] is None else options["workers"]
        )
    if "quiet" in options:
        options["quiet"] = options["quiet"] or defaults.quiet
    return _HANDLERS[canonical(command)](options, defaults)


def _stage(options: dict[str, Any], defaults: Defaults) -> Any:
    import colabmagic

    return colabmagic.stage(options.pop("src"), options.pop("to"), **options)


def _packdrive(options: dict[str, Any], defaults: Defaults) -> Any:
    import colabmagic

    return colabmagic.pack(options.pop("folder"), options.pop("archive"), **options)


def _ckptlink(options: dict[str, Any], defaults: Defaults) -> Any:
    from . import checkpoints

    if options.pop("status"):
        return checkpoints.mirror_status()
    if options.pop("stop"):
        return checkpoints.stop_mirror(options["local"])
    if options["local"] is None or options["drive_dir"] is None:
        raise ColabMagicError("give LOCAL and DRIVE_DIR, or --stop / --status")
    if options["mirror"] and not defaults.kernel:
        raise ColabMagicError("--mirror needs a running kernel; use %ckptlink in the notebook")
    return checkpoints.link_checkpoints(options.pop("local"), options.pop("drive_dir"), **options)


def _timeread(options: dict[str, Any], defaults: Defaults) -> Any:
    import colabmagic

    return colabmagic.timeread(options.pop("path"), **options)


def _drive(options: dict[str, Any], defaults: Defaults) -> Any:
    from . import status

    chosen = [flag for flag in ("fake", "remount", "unmount") if options[flag]]
    if len(chosen) > 1:
        raise ColabMagicError(f"choose one of --{' / --'.join(chosen)}")
    if options["profile"] is not None and not options["fake"]:
        raise ColabMagicError("--profile goes with --fake DIR")
    if options["fake"]:
        if not defaults.kernel:
            raise ColabMagicError("--fake needs a running kernel; use %drive --fake in a notebook")
        return status.fake(options["fake"], profile=options["profile"] or "bench")
    if options["unmount"]:
        return status.unmount()
    if options["remount"]:
        return status.remount()
    return status.drive_status()


def _cache(options: dict[str, Any], defaults: Defaults) -> Any:
    import colabmagic

    from .cache import cell_runner

    cell = options.pop("cell", None)
    if defaults.shell is None:
        raise ColabMagicError("it caches a notebook cell; use %%cache in a notebook")
    if cell is None:
        raise ColabMagicError("it is a cell magic: start the cell with %%cache (two %)")
    run = cell_runner(defaults.shell, cell)
    folder, outputs = options.pop("drive_dir"), options.pop("outputs")
    return colabmagic.cache(folder, outputs, run, source=cell, **options)


def _devpath(options: dict[str, Any], defaults: Defaults) -> Any:
    import colabmagic

    if not defaults.kernel:
        raise ColabMagicError("it changes a kernel's sys.path; use %devpath in a notebook")
    return colabmagic.devpath(options.pop("drive_dir"), shell=defaults.shell, **options)


_HANDLERS = {
    "stage": _stage,
    "packdrive": _packdrive,
    "ckptlink": _ckptlink,
    "timeread": _timeread,
    "drive": _drive,
    "cache": _cache,
    "devpath": _devpath,
}
