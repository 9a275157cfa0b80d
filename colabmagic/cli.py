"""`colabmagic COMMAND ...`: the magics from a shell, with the same arguments.

Commands take the magic's name or the Python twin's (`packdrive` or `pack`); the
arguments, defaults and dispatch are the magics' own (`commands`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import commands, drive, source
from .errors import ColabMagicError


def build_parser() -> argparse.ArgumentParser:
    import colabmagic

    parser = commands.Parser(
        prog="colabmagic",
        description="Stop Colab training from waiting on Google Drive.",
    )
    parser.add_argument(
        "--version", action="version", version=f"colabmagic {colabmagic.__version__}"
    )
    parser.add_argument(
        "--drive",
        metavar="ROOT",
        default=None,
        help="folder that holds MyDrive (default: $COLABMAGIC_DRIVE or Colab's mount)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        metavar="N",
        help=f"retries of a Drive read after EIO/ENOTCONN (default: {source.RETRIES})",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=commands.Parser
    )
    for name, (description, _) in commands.COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            aliases=commands.ALIASES.get(name, []),
            help=description,
            description=description,
            prog=f"colabmagic {name}",
        )
        commands.add_arguments(sub, name)
    demo = subparsers.add_parser(
        "demo",
        help="stage a sample data set from a temporary simulated Drive (no account)",
        prog="colabmagic demo",
    )
    demo.add_argument(
        "--files", type=int, default=2000, help="files in the sample set (default: 2000)"
    )
    demo.add_argument(
        "--profile",
        choices=["colab", "bench", "multistream", "fast", "none"],
        default="bench",
        metavar="PROFILE",
        help="how slow the simulated Drive is: colab, bench, multistream, fast or none "
        "(default: bench)",
    )
    return parser


def run(args: argparse.Namespace) -> Any:
    """Call the Python twin that ARGS names and return its result."""
    options = {k: v for k, v in vars(args).items() if k not in ("command", "drive", "retries")}
    if args.command == "demo":
        from .demo import demo

        return demo(files=options["files"], profile=options["profile"])
    return commands.run(
        args.command, argparse.Namespace(**options), commands.Defaults(kernel=False)
    )


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args = commands.parse(parser, argv)
    if args.retries is not None:
        if args.retries < 0:
            raise ColabMagicError("--retries must be 0 or more")
        source.set_retries(args.retries)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except ColabMagicError as error:
        where = _command_of(argv)
        sub = f"colabmagic {where}" if where else "colabmagic"
        print(f"{sub}: {error}\n(see {sub} --help)", file=sys.stderr)
        return 2
    if args.drive:
        drive.use_root(args.drive)
    name = args.command  # as typed: "pack" or "packdrive"
    try:
        result = run(args)
    except ColabMagicError as error:
        print(f"colabmagic {name}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"colabmagic {name}: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(result)
    return 0


def _command_of(argv: list[str]) -> str | None:
    """The command ARGV names, if it names one (for the error line)."""
    known = {*commands.COMMANDS, "demo"} | {a for al in commands.ALIASES.values() for a in al}
    for word in argv:
        if word in known:
            return word
    return None


if __name__ == "__main__":
    sys.exit(main())
