"""Starting, stopping and steering fake Drive servers from the client process."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from ._settings import CONTROL_XATTR, apply_changes

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_LIBFUSE3_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libfuse3.so.3",
    "/usr/lib/aarch64-linux-gnu/libfuse3.so.3",
    "/usr/lib64/libfuse3.so.3",
    "/usr/lib/libfuse3.so.3",
    "/lib/x86_64-linux-gnu/libfuse3.so.3",
)


class FakeDriveError(Exception):
    """A fake Drive could not be started, stopped or reached (one-line message)."""


def available() -> str | None:
    """None when a fake Drive can be mounted here, else a one-line reason why not."""
    if not sys.platform.startswith("linux"):
        return f"FUSE pass-through needs Linux, not {sys.platform}"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse missing"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse not accessible to this user"
    if not _have_libfuse3():
        return "libfuse3 not found: apt-get install fuse3"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "fusermount3 not found: apt-get install fuse3"
    import importlib.util

    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy not installed: pip install 'colabmagic[fakedrive]'"
    return None


def _have_libfuse3() -> bool:
    if os.environ.get("FUSE_LIBRARY_PATH"):
        return True  # the user points mfusepy at a library of their choice
    if any(os.path.exists(p) for p in _LIBFUSE3_PATHS):
        return True  # quicker than find_library, which runs ldconfig
    from ctypes.util import find_library

    return find_library("fuse3") is not None


class Mount:
    """A running fake Drive started by ``start()``; ``stop()`` unmounts it."""

    def __init__(
        self, root: Path, src: Path, profile: str, proc: Any, log: IO[bytes], remove_root: bool
    ) -> None:
        self.root = root
        self.src = src
        self._profile = profile
        self._proc = proc
        self._log = log
        self._remove_root = remove_root
        self._canonical = os.path.realpath(root)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def profile(self) -> str:
        """The profile in force now (``configure(..., profile=...)`` changes it)."""
        try:
            return status(self.root)["settings"]["profile"]
        except (FakeDriveError, OSError, KeyError):
            return self._profile

    @property
    def mounted(self) -> bool:
        """True while the server runs and the mount is in place."""
        return self._proc.poll() is None and _mounted_at(self._canonical)

    def stop(self) -> None:
        """Unmount (lazily if files are still open) and end the server. Idempotent."""
        _live.discard(self)
        try:
            if _mounted_at(self._canonical):
                _unmount(self._canonical)
            _wait_or_kill(self._proc)
            if _mounted_at(self._canonical):
                # The server died on its own and left a dead mount behind.
                _unmount(self._canonical)
        finally:
            if not self._log.closed:
                self._log.close()
            if self._remove_root and not _mounted_at(self._canonical):
                with suppress(OSError):
                    self.root.rmdir()

    def __enter__(self) -> Path:
        return self.root

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "mounted" if self.mounted else "stopped"
        return f"<fakedrive.Mount {self.src} at {self.root} ({self._profile}, {state})>"


# Mounts started by this process and not yet stopped: stopped at interpreter exit.
_live: weakref.WeakSet[Mount] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for m in list(_live):
        with suppress(Exception):
            m.stop()


def start(
    src: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str] | None = None,
    *,
    profile: str = "bench",
    open_latency: float | None = None,
    warm_latency: float | None = None,
    list_latency: float | None = None,
    bandwidth: float | None = None,
    inflight: int | None = None,
    per_stream: float | None = None,
    fail_after: int | None = None,
    fail_errno: str | int = "EIO",
    fail_path: str | None = None,
    fail_always: bool = False,
    fail_rate: float | None = None,
    seed: int | None = None,
    _detach: bool = False,
) -> Mount:
    """Mount SRC as a simulated Drive and return once it is really up.

    The server runs in a subprocess. ``mountpoint`` defaults to a fresh temporary
    folder (removed again by ``stop()``). A ``None`` latency/bandwidth/inflight/per_stream
    takes the profile's value.
    """
    reason = available()
    if reason:
        raise FakeDriveError(f"fake Drive unavailable: {reason}")
    settings = apply_changes(
        None,
        {
            "profile": profile,
            "open_latency": open_latency,
            "warm_latency": warm_latency,
            "list_latency": list_latency,
            "bandwidth": bandwidth,
            "inflight": inflight,
            "per_stream": per_stream,
            "fail_after": fail_after,
            "fail_errno": fail_errno,
            "fail_path": fail_path,
            "fail_always": fail_always,
            "fail_rate": fail_rate,
            "seed": seed,
        },
    )
    source = Path(src).expanduser().resolve()
    if not source.is_dir():
        raise FakeDriveError(f"source folder not found: {source}")
    root, remove_root = _prepare_mountpoint(mountpoint, source)

    import subprocess
    import tempfile

    config = {
        "src": str(source),
        "mountpoint": str(root),
        "settings": settings.to_dict(),
        # A mount of a detached CLI outlives its parent on purpose.
        "watch_parent": not _detach,
        "remove_mountpoint": remove_root,
    }
    if _detach:
        # The log lives as long as the Mount, which closes it: no `with` block fits.
        # It has a name, for the user to read; the server removes it after a clean
        # unmount (the CLI that started it is gone by then).
        log: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="colabmagic-fakedrive-", suffix=".log", delete=False
        )
        config["log"] = log.name
    else:
        log = tempfile.TemporaryFile(prefix="colabmagic-fakedrive-")  # noqa: SIM115
    env = dict(os.environ)
    # The server must import this very copy of colabmagic, installed or not.
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "colabmagic.fakedrive._server", json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd="/",  # hold no folder busy
            start_new_session=True,  # Ctrl-C in a terminal is for the client, which then unmounts
        )
    except BaseException:
        log.close()
        _remove_dir(root, remove_root)
        raise
    handle = Mount(root, source, settings.profile, proc, log, remove_root)
    try:
        _wait_until_mounted(handle)
    except BaseException:
        handle.stop()
        raise
    if not _detach:
        _live.add(handle)
    return handle


@contextmanager
def mount(
    src: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str] | None = None,
    *,
    profile: str = "bench",
    open_latency: float | None = None,
    warm_latency: float | None = None,
    list_latency: float | None = None,
    bandwidth: float | None = None,
    inflight: int | None = None,
    per_stream: float | None = None,
    fail_after: int | None = None,
    fail_errno: str | int = "EIO",
    fail_path: str | None = None,
    fail_always: bool = False,
    fail_rate: float | None = None,
    seed: int | None = None,
) -> Iterator[Path]:
    """Mount SRC as a simulated Drive for the ``with`` block; yield the mountpoint.

    Unmounts and stops the server on exit, also after an exception.
    """
    handle = start(
        src,
        mountpoint,
        profile=profile,
        open_latency=open_latency,
        warm_latency=warm_latency,
        list_latency=list_latency,
        bandwidth=bandwidth,
        inflight=inflight,
        per_stream=per_stream,
        fail_after=fail_after,
        fail_errno=fail_errno,
        fail_path=fail_path,
        fail_always=fail_always,
        fail_rate=fail_rate,
        seed=seed,
    )
    try:
        yield handle.root
    finally:
        handle.stop()


def reset(root: str | os.PathLike[str]) -> None:
    """Forget which files are warm: every file's next open pays the cold latency."""
    _send(root, {"op": "reset"})


def configure(root: str | os.PathLike[str], **changes: Any) -> None:
    """Change settings of a running fake Drive; takes effect for the next request.

    Takes the keyword arguments of ``mount()`` and ``profile``. A ``None`` latency,
    bandwidth, inflight or per_stream reverts to the profile's value, a ``None`` fault setting
    turns it off. Any fault setting re-arms a once-only ``fail_after``.
    """
    apply_changes(None, changes)  # raise TypeError/ValueError here, not as EINVAL
    _send(root, {"op": "configure", "changes": changes})


def status(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The server's state: ``pid``, ``src``, ``settings`` (a dict), ``warm`` (count) and
    ``bytes_read`` (served by reads since the start, the kernel's readahead included)."""
    try:
        raw = os.getxattr(os.fspath(root), CONTROL_XATTR)
        state = json.loads(raw)
        if not isinstance(state, dict) or "settings" not in state:
            raise ValueError
    except (OSError, ValueError):
        raise FakeDriveError(f"not a fake Drive mount: {root}") from None
    return state


def _send(root: str | os.PathLike[str], message: dict[str, Any]) -> None:
    # Ask first: on any other file system, setting the attribute would succeed and
    # silently tag a real folder.
    status(root)
    try:
        os.setxattr(os.fspath(root), CONTROL_XATTR, json.dumps(message).encode())
    except OSError as exc:
        raise FakeDriveError(
            f"fake Drive at {root} refused {message['op']}: {exc.strerror}"
        ) from None


def _prepare_mountpoint(
    mountpoint: str | os.PathLike[str] | None, source: Path
) -> tuple[Path, bool]:
    if mountpoint is None:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="colabmagic-drive-")), True
    root = Path(mountpoint).expanduser().absolute()
    resolved = root.resolve()
    if resolved == source or source in resolved.parents:
        # The server would list its own mount when it lists SRC, and deadlock.
        raise FakeDriveError(f"mountpoint {root} must not be inside the source folder {source}")
    if _mounted_at(str(resolved)):
        raise FakeDriveError(
            f"{root} is already a mount point; unmount it first (fusermount3 -u {root})"
        )
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FakeDriveError(f"cannot create mountpoint {root}: {exc.strerror}") from None
    if not root.is_dir():
        raise FakeDriveError(f"mountpoint is not a folder: {root}")
    return root, created


def _remove_dir(root: Path, remove: bool) -> None:
    if remove:
        with suppress(OSError):
            root.rmdir()


def _wait_until_mounted(handle: Mount) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        code = handle._proc.poll()
        if code is not None:
            raise FakeDriveError(
                f"fake Drive server exited with status {code}: {_tail(handle._log)}"
            )
        # mountinfo first: a stat of a mountpoint that is not yet served is cheap,
        # but of one that is mounted it waits for the server's first answer.
        if _mounted_at(handle._canonical) and os.path.ismount(handle.root):
            return
        if time.monotonic() > deadline:
            raise FakeDriveError(
                f"fake Drive did not come up within {_START_TIMEOUT:.0f} s: {_tail(handle._log)}"
            )
        time.sleep(0.01)


def _tail(log: IO[bytes], limit: int = 600) -> str:
    """The server's last stderr lines, folded onto one line."""
    try:
        log.flush()
        log.seek(0)
        text = log.read().decode(errors="replace")
    except (OSError, ValueError):
        return "(no output)"
    noise = "Ignoring invalid max threads value"  # printed by libfuse 3.12-3.14 on every start
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and noise not in ln]
    if any(ln.startswith("Traceback") for ln in lines):
        lines = lines[-1:]  # a Python traceback: its last line says what went wrong
    folded = " | ".join(lines[-4:]) or "(no output)"
    return folded if len(folded) <= limit else "..." + folded[-limit:]


def _mounted_at(canonical: str) -> bool:
    """Whether anything is mounted at this canonical path, dead mounts included.

    os.path.ismount cannot tell: it stats the path, which fails on a mount whose
    server died ("Transport endpoint is not connected") and then says False.
    """
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split(b" ", 5)
                if len(fields) > 4 and _unescape(fields[4]) == canonical:
                    return True
    except OSError:
        return os.path.ismount(canonical)
    return False


def _unescape(field: bytes) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i] == 0x5C and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return os.fsdecode(bytes(out))


def _unmount(canonical: str) -> None:
    """Unmount; lazily when busy, so open files keep working until closed."""
    import subprocess

    tool = shutil.which("fusermount3")
    attempts = (
        [[tool, "-u", canonical], [tool, "-uz", canonical]]
        if tool
        else [["umount", canonical], ["umount", "-l", canonical]]
    )
    last = ""
    for cmd in attempts:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0 or not _mounted_at(canonical):
            return
        last = done.stderr.strip()
    raise FakeDriveError(f"could not unmount {canonical}: {last}")


def _wait_or_kill(proc: Any) -> None:
    # After an unmount the server ends by itself; after a lazy one, only when the
    # last open file is closed, so give it a moment and then ask it to stop.
    import subprocess

    if proc.poll() is not None:
        return
    try:
        proc.wait(timeout=1.0)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
