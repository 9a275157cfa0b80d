"""`colabmagic COMMAND ...`: the magics from a shell, with the same arguments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import args as arg_specs
from . import drive
from .errors import ColabMagicError

# The magic is called %packdrive; its CLI and Python twin are "pack".
_CLI_NAMES = {"packdrive": "pack"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colabmagic",
        description="Stop Colab training from waiting on Google Drive.",
    )
    parser.add_argument(
        "--drive",
        metavar="ROOT",
        default=None,
        help="folder that holds MyDrive (default: $COLABMAGIC_DRIVE or Colab's mount)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (description, specs) in arg_specs.COMMANDS.items():
        sub = commands.add_parser(
            _CLI_NAMES.get(name, name), help=description, description=description
        )
        for flags, options in specs:
            sub.add_argument(*flags, **options)
    demo = commands.add_parser(
        "demo", help="stage a sample dataset from a temporary simulated Drive (no account)"
    )
    demo.add_argument("--files", type=int, default=2000, help="files in the sample set")
    demo.add_argument(
        "--profile",
        choices=["colab", "bench", "fast", "none"],
        default="bench",
        help="how slow the simulated Drive is",
    )
    return parser


def run(args: argparse.Namespace) -> Any:
    """Call the Python twin that ARGS names and return its result."""
    import colabmagic

    options = {k: v for k, v in vars(args).items() if k not in ("command", "drive")}
    if "workers" in options and options["workers"] is None:
        options["workers"] = 16
    command = args.command
    if command == "stage":
        return colabmagic.stage(options.pop("src"), options.pop("to"), **options)
    if command == "pack":
        return colabmagic.pack(options.pop("folder"), options.pop("archive"), **options)
    if command == "ckptlink":
        from . import checkpoints

        if options.pop("status"):
            return checkpoints.mirror_status()
        if options.pop("stop"):
            return checkpoints.stop_mirror(options["local"])
        if options["mirror"]:
            raise ColabMagicError("--mirror needs a running kernel; use %ckptlink in the notebook")
        return colabmagic.link_checkpoints(
            options.pop("local"), options.pop("drive_dir"), **options
        )
    if command == "timeread":
        return colabmagic.timeread(options.pop("path"), **options)
    if command == "drive":
        from . import status

        if options["fake"]:
            raise ColabMagicError("--fake needs a running kernel; use %drive --fake in a notebook")
        if options["unmount"]:
            return status.unmount()
        if options["remount"]:
            return status.remount()
        return status.drive_status()
    if command == "demo":
        from .demo import demo

        return demo(files=options["files"], profile=options["profile"])
    raise AssertionError(command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.drive:
        drive.use_root(args.drive)
    try:
        result = run(args)
    except ColabMagicError as error:
        print(f"colabmagic {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"colabmagic {args.command}: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
