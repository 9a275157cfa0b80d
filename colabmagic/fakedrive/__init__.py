"""A simulated Google Drive: a local folder seen through a FUSE mount as slow as DriveFS.

The model, per request that reaches the mount:

- **open**: the first open of a file is *cold* and waits ``open_latency``; later opens
  are *warm* and wait ``warm_latency`` (a file created or renamed through the mount is
  warm). ``reset(root)`` makes every file cold again.
- **listing** a folder waits ``list_latency`` per 1,000 entries, once per listing.
- **reads and writes** share one link of ``bandwidth`` bytes/s: each transfer books the
  next free slot on it, so the cap holds across all threads and files.
- each **stream** (one open file handle: two opens of one file are two streams) may
  also be held to ``per_stream`` bytes/s of its own, within the shared link; off
  (``math.inf``) except in the ``multistream`` profile, where ranged readers pay.
- at most ``inflight`` opens, reads and writes are served at once; more wait their turn
  (the latency and the transfer time are spent holding a slot).
- everything else (create, mkdir, rename, unlink, rmdir, truncate, utimens, chmod,
  symlinks, xattrs, statfs) passes straight through to SRC.
- **faults**: with ``fail_after=N`` the first read whose range reaches past byte N of a
  file (``fail_path`` only, if given) fails with ``fail_errno`` (EIO or ENOTCONN); the
  open file that hit it stays broken past N, the fault then disarms so a re-open
  succeeds, unless ``fail_always``. With ``fail_rate=P`` each read request fails with
  probability P (seeded by ``seed``) and that open file stays broken past that point.
  ``configure`` with any fault setting heals broken files and re-arms.

Files are read through the kernel's page cache within one open (so ``mmap``, ``cp`` and
``unzip`` work as on DriveFS) but never kept across opens, so every open pays the
bandwidth again. The kernel reads ahead in blocks of up to 128 KiB, so a small random
read can cost a block; a faulted read fails whole, so a reader gets the bytes before
the faulting block, never more than ``fail_after``.

The server runs in a subprocess (a Python FUSE server in the reader's process would
compete with it for the GIL and can deadlock). It is steered through an extended
attribute that exists only inside the server (``status``, ``reset``, ``configure``), so
it works for any mount, however started, and shows nothing in the mounted tree.

Needs Linux, ``/dev/fuse``, libfuse3 (``apt-get install fuse3``) and ``mfusepy``
(``pip install 'colabmagic[fakedrive]'``); ``available()`` says which one is missing.
"""

from __future__ import annotations

from ._client import (
    FakeDriveError,
    Mount,
    available,
    configure,
    mount,
    reset,
    start,
    status,
)
from ._settings import PROFILES, Profile

__all__ = [
    "PROFILES",
    "FakeDriveError",
    "Mount",
    "Profile",
    "available",
    "configure",
    "mount",
    "reset",
    "start",
    "status",
]
