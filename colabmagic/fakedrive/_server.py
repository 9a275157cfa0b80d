"""The FUSE server of the simulated Drive. Runs in its own process, never the client's.

Started as ``python -m colabmagic.fakedrive._server CONFIG_JSON`` by ``start()`` or run
in the foreground by the CLI. Imports mfusepy, so clients must never import this.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from ._settings import CONTROL_XATTR, FAULT_KEYS, Settings, apply_changes

if not (os.environ.get("FUSE_LIBRARY_PATH") or os.environ.get("FUSE_LIBRARY_NAME")):
    # mfusepy picks libfuse2 when both are installed; this server is written for libfuse3.
    os.environ["FUSE_LIBRARY_NAME"] = "fuse3"

import mfusepy  # noqa: E402
from mfusepy import FuseOSError  # noqa: E402

# A reader that comes back for more within this long after its last transfer ended
# is still streaming: the gap is its own overhead, not idle time, so it is not
# charged again. Without this, Python's per-request overhead would make the
# achieved rate a few percent lower than the cap.
_STREAM_SLACK = 0.005

# libfuse turns UTIME_NOW / UTIME_OMIT into tv_sec=0 and these tv_nsec values, and
# mfusepy hands them on as plain nanosecond counts.
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2

# Flags that the backing file system may refuse (O_DIRECT on tmpfs) and that mean
# nothing for the pass-through: the kernel has already handled them for the mount.
_STRIP_OPEN_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, "O_DIRECT", 0)


class _Gate:
    """At most ``limit`` requests inside at once (0: no cap); the limit may change live."""

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._limit = limit

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self._limit = limit
            self._cond.notify_all()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self._limit and self._active >= self._limit:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify()


class _Pipe:
    """One shared link of ``rate`` bytes/s: each transfer books the next free time on it.

    Booking rather than a token bucket with a burst allowance keeps the cap exact: no
    window of time ever moves more than rate * window (+ the streaming slack).

    Each stream (one open file handle) also has a link of its own, of ``per_stream``
    bytes/s, booked the same way: a transfer ends when both bookings have ended, so
    one stream never beats ``per_stream`` and all of them together never beat ``rate``.
    """

    def __init__(self, rate: float, per_stream: float = float("inf")) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0
        self._last_stream = -1
        # stream -> monotonic time at which its own link is free again.
        self._stream_free_at: dict[int, float] = {}
        self.rate = rate
        self.per_stream = per_stream

    def transfer(self, nbytes: int, stream: int) -> None:
        rate, per_stream = self.rate, self.per_stream
        if nbytes <= 0 or (rate == float("inf") and per_stream == float("inf")):
            return
        with self._lock:
            now = time.monotonic()
            end = now
            if rate != float("inf"):
                if now < self._free_at:
                    start = self._free_at
                elif stream == self._last_stream and now < self._free_at + _STREAM_SLACK:
                    # Only the same open file continues a stream: a new open starts
                    # uncredited, so a measurement that begins with an open never
                    # sees more than the cap.
                    start = self._free_at
                else:
                    start = now
                self._free_at = end = start + nbytes / rate
                self._last_stream = stream
            if per_stream != float("inf"):
                # A stream's own link is free again only when its last transfer
                # really ended (the shared link may have held it longer).
                free_at = self._stream_free_at.get(stream, 0.0)
                start = free_at if now < free_at + _STREAM_SLACK else now
                end = max(end, start + nbytes / per_stream)
                self._stream_free_at[stream] = end
        delay = end - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def forget(self, stream: int) -> None:
        """The stream's file was closed: drop its booking."""
        with self._lock:
            self._stream_free_at.pop(stream, None)


def _renameat2(old: str, new: str, flags: int) -> None:
    # os.rename cannot pass RENAME_NOREPLACE / RENAME_EXCHANGE, which `mv` relies on.
    libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is None:
        raise FuseOSError(errno.EINVAL)
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), ctypes.c_uint(flags)) != 0:
        raise FuseOSError(ctypes.get_errno())


class DriveOps(mfusepy.Operations):
    """Pass-through of ``src`` with DriveFS's delays, caps and faults."""

    use_ns = True  # nanosecond timestamps, so utimens and stat round-trip exactly

    def __init__(self, src: str, settings: Settings, announce: str | None = None) -> None:
        self.src = src.rstrip("/") or "/"
        self.settings = settings
        self.initialized = threading.Event()
        self._announce = announce
        self._lock = threading.Lock()
        # path -> monotonic time at which its first open completes; present = warm.
        self._warm: dict[str, float] = {}
        self._gate = _Gate(settings.inflight)
        self._pipe = _Pipe(settings.bandwidth, settings.per_stream)
        self._rng = random.Random(settings.seed)
        self._armed = True
        # Open files: fh -> (path at open time, serial of the open). Reads come with an
        # fh; faults match paths; the serial tells the pipe which stream a read is in
        # (fds are reused, serials are not).
        self._handles: dict[int, tuple[str, int]] = {}
        self._serial = 0
        # fh -> (offset, errno) of a stream that broke: the kernel retries a failed
        # readahead page by page, and those retries must fail too, or the reader
        # would never see a once-only fault.
        self._broken: dict[int, tuple[int, int]] = {}
        # Bytes served by read(), readahead included: what the link really carried,
        # which is more than a reader of part of a file asked for.
        self._bytes_read = 0

    # --- helpers -----------------------------------------------------------------

    def _full(self, path: str | None) -> str:
        if path is None:  # an open file that was unlinked: no name left to act on
            raise FuseOSError(errno.ESTALE)
        return self.src + path if path != "/" else self.src

    def _open_delay(self, path: str) -> float:
        s = self.settings
        now = time.monotonic()
        with self._lock:
            ready = self._warm.get(path)
            if ready is None:
                self._warm[path] = now + s.open_latency
                return s.open_latency
        # A second open while the first is still fetching waits for that fetch.
        return max(s.warm_latency, ready - now)

    def _fault(self, fh: int, size: int, offset: int) -> int | None:
        broken = self._broken.get(fh)
        if broken is not None and offset + size > broken[0]:
            return broken[1]
        s = self.settings
        if s.fail_after is None and not s.fail_rate:
            return None
        path = self._handles.get(fh, ("", 0))[0]
        if s.fail_path is not None and path != s.fail_path:
            return None
        if s.fail_after is not None:
            # The range actually read: a request past EOF must not trip a fault that
            # lies beyond a short file's end.
            end = min(offset + size, os.fstat(fh).st_size)
            if end > s.fail_after:
                with self._lock:
                    fire = s.fail_always or self._armed
                    self._armed = False
                if fire:
                    self._broken[fh] = (s.fail_after, s.errno_value)
                    return s.errno_value
        if s.fail_rate:
            with self._lock:
                roll = self._rng.random()
            if roll < s.fail_rate:
                # Sticky like fail_after, so the kernel's page-by-page retry of a
                # failed readahead cannot hide the fault (the reader would see about
                # P squared instead of P).
                self._broken[fh] = (offset, s.errno_value)
                return s.errno_value
        return None

    def _remember(self, fd: int, path: str) -> None:
        with self._lock:
            self._serial += 1
            self._handles[fd] = (path, self._serial)

    def _stream(self, fh: int) -> int:
        return self._handles.get(fh, ("", 0))[1]

    def _forget(self, path: str, new: str | None = None) -> None:
        # Keep warm state with the file across renames (DriveFS caches by file id).
        with self._lock:
            prefix = path.rstrip("/") + "/"
            for key in [k for k in self._warm if k == path or k.startswith(prefix)]:
                ready = self._warm.pop(key)
                if new is not None:
                    self._warm[new + key[len(path) :]] = ready

    def _control(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            op = message["op"]
            if op == "reset":
                with self._lock:
                    self._warm.clear()
                return
            if op != "configure":
                raise ValueError(f"unknown op {op!r}")
            changes = message["changes"]
            new = apply_changes(self.settings, changes)
        except (ValueError, TypeError, KeyError) as exc:
            print(f"fakedrive: bad control message: {exc}", file=sys.stderr)
            raise FuseOSError(errno.EINVAL) from None
        with self._lock:
            if any(key in changes for key in FAULT_KEYS):
                self._armed = True  # a new fault setting is a new fault
                self._broken.clear()
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            self.settings = new
        self._gate.set_limit(new.inflight)
        self._pipe.rate = new.bandwidth
        self._pipe.per_stream = new.per_stream

    def _status(self) -> bytes:
        with self._lock:
            state = {
                "pid": os.getpid(),
                "src": self.src,
                "settings": self.settings.to_dict(),
                "warm": len(self._warm),
                "armed": self._armed,
                "bytes_read": self._bytes_read,
            }
        return json.dumps(state).encode()

    # --- FUSE operations -----------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        if conn is not None:
            # The kernel keeps at most max_background readahead requests in flight
            # (default 12); raise it so that `inflight` is the limit that binds.
            conn.max_background = 128
            conn.congestion_threshold = 96
        self.initialized.set()
        if self._announce:
            print(self._announce, file=sys.stderr, flush=True)

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        st = os.fstat(fh) if fh is not None and fh in self._handles else os.lstat(self._full(path))
        return {
            "st_mode": st.st_mode,
            "st_ino": st.st_ino,
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_rdev": st.st_rdev,
            "st_size": st.st_size,
            "st_blocks": st.st_blocks,
            "st_blksize": st.st_blksize,
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }

    def readdir(self, path: str, fh: int) -> list[Any]:
        entries: list[Any] = [".", ".."]
        with os.scandir(self._full(path)) as it:
            for entry in it:
                # d_type from the listing, so `find` and `ls` need no extra getattr.
                if entry.is_symlink():
                    mode = stat.S_IFLNK
                elif entry.is_dir(follow_symlinks=False):
                    mode = stat.S_IFDIR
                elif entry.is_file(follow_symlinks=False):
                    mode = stat.S_IFREG
                else:
                    mode = stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)
                entries.append((entry.name, {"st_mode": mode, "st_ino": entry.inode()}, 0))
        # libfuse asks once per opendir and pages the rest itself, so this is paid once
        # per listing, like one DriveFS folder fetch.
        delay = self.settings.list_latency * (len(entries) - 2) / 1000
        if delay > 0:
            time.sleep(delay)
        return entries

    def open(self, path: str, flags: int) -> int:
        fd = os.open(self._full(path), flags & ~_STRIP_OPEN_FLAGS)
        if self.settings.shaped:
            with self._gate.slot():
                delay = self._open_delay(path)
                if delay > 0:
                    time.sleep(delay)
        else:
            with self._lock:
                self._warm.setdefault(path, 0.0)
        self._remember(fd, path)
        return fd

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        # O_EXCL stays: the kernel's lookup said "absent", SRC must agree at creation.
        keep = flags & ~(_STRIP_OPEN_FLAGS & ~os.O_EXCL)
        fd = os.open(self._full(path), keep | os.O_CREAT, mode)
        with self._lock:
            self._warm[path] = 0.0  # written here, so DriveFS has it cached
        self._remember(fd, path)
        delay = self.settings.warm_latency
        if delay > 0:
            with self._gate.slot():
                time.sleep(delay)
        return fd

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        failure = self._fault(fh, size, offset)
        if failure is not None:
            raise FuseOSError(failure)
        if not self.settings.shaped:
            data = os.pread(fh, size, offset)
        else:
            with self._gate.slot():
                data = os.pread(fh, size, offset)
                self._pipe.transfer(len(data), self._stream(fh))
        with self._lock:
            self._bytes_read += len(data)
        return data

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        if not self.settings.shaped:
            return os.pwrite(fh, data, offset)
        with self._gate.slot():
            written = os.pwrite(fh, data, offset)
            self._pipe.transfer(written, self._stream(fh))
        return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        os.truncate(self._full(path), length)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            self._pipe.forget(handle[1])
        self._broken.pop(fh, None)
        os.close(fh)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        self._forget(path)
        return 0

    def unlink(self, path: str) -> int:
        os.unlink(self._full(path))
        self._forget(path)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags:
            _renameat2(self._full(old), self._full(new), flags)
        else:
            os.rename(self._full(old), self._full(new))
        self._forget(new)
        self._forget(old, new)
        return 0

    def symlink(self, target: str, source: str) -> int:
        # mfusepy's naming: `target` is the new link, `source` what it points at.
        os.symlink(source, self._full(target))
        return 0

    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    def link(self, target: str, source: str) -> int:
        os.link(self._full(source), self._full(target))
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        os.mknod(self._full(path), mode, dev)
        return 0

    def chmod(self, path: str | None, mode: int) -> int:
        os.chmod(self._full(path), stat.S_IMODE(mode))
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        os.lchown(self._full(path), uid, gid)
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        full = self._full(path)
        now = time.time_ns()
        if times is None:
            os.utime(full, ns=(now, now), follow_symlinks=False)
            return 0
        current = os.lstat(full)
        atime, mtime = times
        atime = (
            now if atime == _UTIME_NOW else current.st_atime_ns if atime == _UTIME_OMIT else atime
        )
        mtime = (
            now if mtime == _UTIME_NOW else current.st_mtime_ns if mtime == _UTIME_OMIT else mtime
        )
        os.utime(full, ns=(atime, mtime), follow_symlinks=False)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.src)
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail")
        keys += ("f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")
        return {key: getattr(st, key) for key in keys}

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if name == CONTROL_XATTR:
            return self._status()
        return os.getxattr(self._full(path), name, follow_symlinks=False)

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        if name == CONTROL_XATTR:
            self._control(value)
            return 0
        os.setxattr(self._full(path), name, value, options, follow_symlinks=False)
        return 0

    def listxattr(self, path: str) -> list[str]:
        names = os.listxattr(self._full(path), follow_symlinks=False)
        return [name for name in names if name != CONTROL_XATTR]

    def removexattr(self, path: str, name: str) -> int:
        if name == CONTROL_XATTR:
            raise FuseOSError(errno.EPERM)
        os.removexattr(self._full(path), name, follow_symlinks=False)
        return 0


class _FUSE(mfusepy.FUSE):
    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        # mfusepy drops rename's flags; `mv` uses RENAME_NOREPLACE to avoid clobbering.
        return self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )


def _watch_parent(parent: int) -> None:
    # When the client process dies without stopping us (a killed Jupyter kernel),
    # unmount rather than leave a mount nobody will clean up. The signal goes to the
    # main thread, which libfuse's handler must interrupt to end the loop.
    while os.getppid() == parent:
        time.sleep(0.5)
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


def serve(config: dict[str, Any], *, announce: bool = False) -> int:
    """Mount and serve until unmounted or signalled; return an exit status."""
    settings = apply_changes(None, config["settings"])
    src, mountpoint = config["src"], config["mountpoint"]
    line = f"fakedrive: {src} mounted at {mountpoint} ({settings.profile}); Ctrl-C unmounts"
    ops = DriveOps(src, settings, announce=line if announce else None)
    if config.get("watch_parent"):
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    options: dict[str, Any] = {
        "foreground": True,
        "fsname": "colabmagic-fakedrive",
        "subtype": "colabmagic-fakedrive",
        "default_permissions": True,  # the kernel checks SRC's modes, as on a disk
        "use_ino": True,
        "hard_remove": True,  # no .fuse_hidden files appearing in SRC
    }
    if (mfusepy.fuse_version_major, mfusepy.fuse_version_minor) >= (3, 12):
        # libfuse >= 3.12 serves at most 10 requests at once unless told otherwise.
        options["max_threads"] = 256
    try:
        _FUSE(ops, mountpoint, **options)
    except RuntimeError as exc:
        # libfuse reports a signal-ended loop as an error, but after a mount that
        # came up, SIGTERM / Ctrl-C / fusermount -u are the normal ways to stop.
        if not ops.initialized.is_set():
            print(
                f"fakedrive: mounting {mountpoint} failed (libfuse status {exc})", file=sys.stderr
            )
            return 1
    if config.get("remove_mountpoint"):
        # A temporary mountpoint whose client died would otherwise litter /tmp.
        with suppress(OSError):
            os.rmdir(mountpoint)
    if config.get("log"):
        # A detached server's log, kept only while it ran or when it failed.
        with suppress(OSError):
            os.unlink(config["log"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return serve(json.loads(args[0]))


if __name__ == "__main__":
    sys.exit(main())
