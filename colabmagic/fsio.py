"""Writing files, on local disk and in Drive: the one place each of these is decided.

- `create_file`: a new file, never an existing one, never through a link;
- `write_all` and `copy_chunks`: the one write loop every copy goes through;
- `atomic_write` / `atomic_copy`: write ``NAME.partial``, check, fsync, rename over NAME,
  so that a reader (or a resume after a crash) sees the old file or the whole new one;
- `free_bytes` / `require_free`: the free-space check made before a large write;
- `WriteBack`: the disk set to work on what was written, while more arrives;
- `remove_quietly` and `partial_of`: the clean-up and naming the above share.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import ColabMagicError

CHUNK = 1 << 20  # 1 MiB per read or write: few syscalls, and FUSE fans it out
PARTIAL = ".partial"  # suffix of a file (or folder) being written, before its rename
WRITEBACK_STEP = 32 << 20  # bytes written between two starts of the write-back (WriteBack)


def partial_of(path: Path) -> Path:
    """Where PATH is written before it is renamed into place: ``PATH.partial``."""
    return path.with_name(path.name + PARTIAL)


def create_file(path: Path, *, executable: bool = False) -> io.FileIO:
    """A new file at PATH (never an existing file or a link through which to write),
    rw-r--r-- or rwxr-xr-x less the umask, as an object that closes itself.

    Not a raw descriptor: CPython runs signal handlers as os.open() returns, so a
    Ctrl-C at that moment drops the number, and the file stays open for the life of
    the kernel.  A dropped file object is closed at once.
    """
    out = open(path, "xb", buffering=0)  # noqa: SIM115 - returned to the caller
    try:
        made = os.fstat(out.fileno()).st_mode & 0o777  # 0o666 less the umask
        wanted = made & 0o644 | ((made & 0o444) >> 2 if executable else 0)
        if wanted != made:
            os.fchmod(out.fileno(), wanted)
    except BaseException:
        out.close()
        raise
    return out


def write_all(out: io.RawIOBase, data: bytes | memoryview) -> None:
    """Write every byte of DATA to the unbuffered OUT (raw writes may be short)."""
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]


def copy_chunks(
    chunks: Iterable[bytes | memoryview],
    out: io.RawIOBase,
    *,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Write CHUNKS to OUT; call ON_CHUNK(bytes) after each; return the bytes written.
    The one copy loop: staging, packing, checkpoints and timeread all write through it."""
    written = 0
    for chunk in chunks:
        write_all(out, chunk)
        written += len(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
    return written


def fsync(out: io.RawIOBase | int) -> None:
    """Flush OUT to its device.  Some FUSE file systems do not implement fsync; for
    them the rename that follows is as good as it gets."""
    fd = out if isinstance(out, int) else out.fileno()
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise


class WriteBack:
    """Has the kernel write a file system's dirty data to its disk while more is being
    written: `wrote(n)` counts the bytes written into FOLDER, and every STEP of them
    starts a `syncfs` of FOLDER's file system in a thread (one at a time), not waited for.

    Linux keeps written data in memory until a `sync` or until gigabytes are dirty,
    so the disk stays idle while an archive streams in and then writes all of it at
    the end.  Flushed as it goes, the writing overlaps with the reading, and the
    final `sync` (or the next fsync) finds little left to do.  The kernel's own
    write-back of many files in one pass keeps its large, merged writes, which a
    per-file `sync_file_range` loses.  Advice only: where `syncfs` is missing or fails
    (not Linux, a FUSE file system that ignores it), nothing happens.
    """

    def __init__(self, folder: Path, *, step: int | None = None) -> None:
        self.folder = folder
        self.step = WRITEBACK_STEP if step is None else step
        self.started = 0  # syncfs calls started, for the tests
        self._since = 0
        self._thread: threading.Thread | None = None

    def wrote(self, n: int) -> None:
        self._since += n
        if self._since < self.step or (self._thread is not None and self._thread.is_alive()):
            return
        call = _syncfs()
        if call is None:
            return
        self._since = 0
        self.started += 1
        self._thread = threading.Thread(
            target=_syncfs_of, args=(call, self.folder), name="colabmagic-writeback", daemon=True
        )
        self._thread.start()


def _syncfs_of(call: Callable[[int], int], folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # gone (a stage that failed and cleaned up): nothing to flush
    try:
        call(fd)  # its -1 and errno are ignored: advice
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2), or None.  Through ctypes, which releases the GIL for the
    call (os has no binding for it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int,)
    call.restype = ctypes.c_int
    return call


def remove_quietly(path: Path) -> None:
    """Remove PATH (a file, a link, or a folder tree) if it is there; never raise."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: Path, *, executable: bool = False, sync: bool = True) -> Iterator[io.FileIO]:
    """A new file to write that appears at PATH, whole, only when the block succeeds.

    Written as ``PATH.partial`` (any leftover of that name from a killed run is
    replaced), fsynced when SYNC, then renamed over PATH.  An exception or Ctrl-C in
    the block removes the partial file and leaves PATH as it was.
    """
    partial = partial_of(path)
    remove_quietly(partial)
    try:
        with create_file(partial, executable=executable) as out:
            yield out
            if sync:
                fsync(out)
        os.replace(partial, path)
    except BaseException:
        remove_quietly(partial)
        raise


def write_text_atomic(path: Path, text: str, *, sync: bool = True) -> None:
    """PATH holds TEXT (UTF-8), replaced in one rename: a marker, a manifest, a sidecar."""
    with atomic_write(path, sync=sync) as out:
        write_all(out, text.encode("utf-8"))


def atomic_copy(
    chunks: Iterable[bytes | memoryview],
    path: Path,
    *,
    size: int | None = None,
    times_ns: tuple[int, int] | None = None,
    executable: bool = False,
    sync: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    before_publish: Callable[[Path], None] | None = None,
) -> int:
    """Copy CHUNKS to PATH through ``PATH.partial``; return the bytes written.

    SIZE, when given, is checked before the rename (a source that shrank or grew
    while it was read is not published); TIMES_NS (atime, mtime) are set on the copy
    where the file system allows; BEFORE_PUBLISH(partial) runs last, to verify it.
    """
    with atomic_write(path, executable=executable, sync=sync) as out:
        written = copy_chunks(chunks, out, on_chunk=on_chunk)
        if size is not None and written != size:
            raise ColabMagicError(
                f'"{path.name}" changed while it was being copied '
                f"({written:,} bytes read, {size:,} expected)"
            )
        if times_ns is not None:
            with contextlib.suppress(OSError):  # DriveFS may refuse: only the mtime suffers
                os.utime(out.fileno(), ns=times_ns)
        if before_publish is not None:
            before_publish(partial_of(path))
    return written


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use where PATH is; None if unknown."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    if st.f_blocks == 0:  # a FUSE file system without statfs reports all zeros
        return None
    return st.f_bavail * st.f_frsize


def require_free(path: Path, need: int, *, shown_as: str | None = None) -> int:
    """Free bytes where PATH is; refuse, before writing, when NEED does not fit.
    SHOWN_AS names the folder the user knows, if PATH is a work folder inside it."""
    from .results import size

    free = free_bytes(path)
    if free is None:
        return need
    if need > free:
        raise ColabMagicError(
            f"needs {size(need)} but {shown_as or path} has only {size(free)} free; "
            "free some space or write to another disk"
        )
    return free


def is_full(error: OSError) -> bool:
    """Whether ERROR is a full disk or quota, which callers report for the whole job."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)
