"""``python -m colabmagic.fakedrive SRC MOUNTPOINT``: mount a simulated Drive."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._client import FakeDriveError, _prepare_mountpoint, available, start
from ._settings import PROFILES, apply_changes, parse_bandwidth, parse_duration, parse_size


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    # argparse reports ArgumentTypeError text as is; ValueError text it would hide.
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _whole(text: str) -> int:
    value = parse_size(text)
    if not value.is_integer():
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m colabmagic.fakedrive",
        description="Mount SRC at MOUNTPOINT through a FUSE view as slow as Google Drive on Colab.",
        epilog="Without --foreground the server keeps running after this command returns; "
        "unmount with: fusermount3 -u MOUNTPOINT",
    )
    parser.add_argument("src", metavar="SRC", help="local folder to serve")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the fake Drive appears")
    parser.add_argument("--profile", choices=list(PROFILES), default="bench", help="default: bench")
    duration = {"type": _arg(parse_duration), "metavar": "TIME"}
    parser.add_argument("--open-latency", **duration, help="cold open, e.g. 500ms, 0.5s or 0.5")
    parser.add_argument("--warm-latency", **duration, help="warm open, e.g. 5ms")
    parser.add_argument("--list-latency", **duration, help="per 1,000 entries, e.g. 750ms")
    parser.add_argument(
        "--bandwidth", type=_arg(parse_bandwidth), metavar="RATE", help="e.g. 50MB/s, 50e6, inf"
    )
    parser.add_argument(
        "--per-stream",
        type=_arg(parse_bandwidth),
        metavar="RATE",
        help="cap for each open file on its own, e.g. 25MB/s (default: inf, none)",
    )
    parser.add_argument(
        "--inflight", type=int, metavar="N", help="requests served at once (0: no cap)"
    )
    parser.add_argument(
        "--fail-after", type=_arg(_whole), metavar="BYTES", help="fail reads past this offset"
    )
    parser.add_argument(
        "--errno", dest="fail_errno", default="EIO", metavar="EIO|ENOTCONN", help="default: EIO"
    )
    parser.add_argument("--fail-path", metavar="P", help="only this file (relative to SRC) fails")
    parser.add_argument("--fail-always", action="store_true", help="fail every time, not once")
    parser.add_argument(
        "--fail-rate", type=float, metavar="P", help="each read fails with probability P"
    )
    parser.add_argument("--seed", type=int, metavar="S", help="seed for --fail-rate")
    parser.add_argument(
        "--foreground", action="store_true", help="serve here until Ctrl-C or SIGTERM"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"fakedrive: {reason}", file=sys.stderr)
        return 2
    options = {
        key: getattr(args, key)
        for key in (
            "open_latency",
            "warm_latency",
            "list_latency",
            "bandwidth",
            "inflight",
            "per_stream",
            "fail_after",
            "fail_errno",
            "fail_path",
            "fail_always",
            "fail_rate",
            "seed",
        )
    }
    try:
        settings = apply_changes(None, {"profile": args.profile, **options})
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        if args.foreground:
            return _serve_here(args.src, args.mountpoint, settings.to_dict())
        handle = start(args.src, args.mountpoint, profile=args.profile, _detach=True, **options)
    except FakeDriveError as exc:
        print(f"fakedrive: {exc}", file=sys.stderr)
        return 1
    print(
        f"fakedrive: {handle.src} mounted at {handle.root} ({args.profile}, pid {handle.pid}); "
        f"log {handle._log.name}; unmount with: fusermount3 -u {handle.root}"
    )
    return 0


def _serve_here(src: str, mountpoint: str, settings: dict[str, Any]) -> int:
    source = Path(src).expanduser().resolve()
    if not source.is_dir():
        raise FakeDriveError(f"source folder not found: {source}")
    root, _ = _prepare_mountpoint(mountpoint, source)
    from ._server import serve  # imports mfusepy, so only here

    return serve({"src": str(source), "mountpoint": str(root), "settings": settings}, announce=True)


if __name__ == "__main__":
    sys.exit(main())
