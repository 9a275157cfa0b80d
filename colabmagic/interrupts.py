"""Ctrl-C, taken only where stopping is safe.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives: after
a lock inside `threading.Condition.__enter__` is taken but before the `with` that
would release it exists, between a thread pool's bookkeeping steps, inside a weakref
callback (where it is dropped).  A stranded lock is one a writer thread then waits on
for ever, and the kernel hangs while joining it (seen: a stage of a tar.gz, interrupted
inside `ThreadPoolExecutor.submit`).  So while colabmagic works, a press is only
noted; `check()`, called between chunks, members, files and renames, hands it to the
handler that was there before, which raises KeyboardInterrupt as the user expects.
Blocking waits in the main thread poll with a short timeout so that a press is
taken within about 0.1 s.  A second press is not held: it is delivered at once, so
that a wait which cannot end (a Drive read that hangs) can still be broken.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

POLL = 0.1  # seconds between checks while the main thread waits

_previous: Callable[[int, Any], Any] | None = None  # the handler we stand in for
_pressed = False  # a press is waiting for check()
_taken = False  # a press was delivered; its KeyboardInterrupt is on its way out


def _note(signum: int, frame: Any) -> None:
    global _pressed
    if (_pressed or _taken) and _previous is not None:
        # A second press, while the first waits or while its clean-up does (joining a
        # thread stuck in a Drive read that never returns, say): the user means it.
        _previous(signum, frame)
    _pressed = True


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C until the next `check()` for the duration of the block.

    Only in the main thread (the only one Python delivers signals to), only when the
    handler in place is a Python callable (not SIG_IGN or SIG_DFL), and only once:
    nested blocks share the outer one.  A press left over when the block ends
    normally is delivered then; one that comes with an exception already on its way
    out is dropped, the exception being what the user needs to see.
    """
    global _previous, _pressed, _taken
    current = signal.getsignal(signal.SIGINT) if _in_main_thread() else None
    if _previous is not None or not callable(current):
        yield
        return
    _pressed = _taken = False
    # _note first, then _previous: signal.signal() runs a pending handler before it
    # returns, and a KeyboardInterrupt from it must not leave _previous set for good.
    signal.signal(signal.SIGINT, _note)
    _previous = current
    try:
        yield
    except BaseException:
        _release()
        raise
    previous, pressed = _release()
    if pressed:
        previous(signal.SIGINT, sys._getframe(0))


def _release() -> tuple[Callable[[int, Any], Any], bool]:
    global _previous, _pressed, _taken
    previous, _previous = _previous, None
    assert previous is not None
    signal.signal(signal.SIGINT, previous)  # from here on a press goes to it directly
    pressed, _pressed, _taken = _pressed, False, False
    return previous, pressed


def check() -> None:
    """Deliver a held Ctrl-C here, if there is one (main thread only)."""
    global _pressed, _taken
    if _pressed and _previous is not None and _in_main_thread():
        _pressed, _taken = False, True
        _previous(signal.SIGINT, sys._getframe(1))


def result(future: Any) -> Any:
    """FUTURE's result, waited for in short steps so that a held Ctrl-C gets in."""
    from concurrent.futures import wait

    # Not result(timeout=...): its "still running" is TimeoutError, which is also what
    # a job failing with ETIMEDOUT raises, and that would be waited on for ever.
    while not wait([future], timeout=POLL).done:
        check()
    return future.result()


def results(futures: list[Any]) -> Iterator[Any]:
    """Each of FUTURES' results in turn, waited for as `result` waits.  On an error or
    Ctrl-C the futures not started yet are cancelled, as Executor.map does."""
    try:
        for future in futures:
            yield result(future)
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def sleep(seconds: float) -> None:
    """time.sleep(SECONDS), taking a held Ctrl-C within POLL."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, POLL))
        check()


@contextmanager
def pool(workers: int, name: str) -> Iterator[Any]:
    """A thread pool of WORKERS threads named NAME: the only way colabmagic runs jobs
    side by side.  Leaving the block, by an error or Ctrl-C too, cancels the jobs not
    started yet and waits for the running ones, so no thread outlives the command."""
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def run_all(
    job: Callable[[Any], Any], items: Iterable[Any], *, workers: int, name: str
) -> Iterator[Any]:
    """JOB(item) for each of ITEMS, WORKERS at a time; results in ITEMS' order.  The
    first error (or Ctrl-C) cancels what has not started and is raised here."""
    with pool(workers, name) as executor:
        yield from results([executor.submit(job, item) for item in items])
