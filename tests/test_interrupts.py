"""Ctrl-C held until a safe point (colabmagic.interrupts), with real SIGINTs."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from colabmagic import interrupts


def press() -> None:
    """Ctrl-C, as the terminal or Jupyter's interrupt button sends it."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def settle() -> None:
    # Python runs a handler between bytecodes; a short sleep gives it the chance to.
    time.sleep(0.05)


@pytest.fixture(autouse=True)
def default_handler():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_press_waits_for_check_and_then_raises_there():
    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        press()
        settle()
        reached.append("after the press")  # not cut short by it
        interrupts.check()
        reached.append("after check")
    assert reached == ["after the press"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_press_not_taken_inside_is_delivered_as_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        press()
        settle()
        done.append(True)
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_press_nothing_is_raised_and_the_handler_is_put_back():
    with interrupts.deferred():
        interrupts.check()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_on_its_way_out_wins_over_a_held_press():
    with pytest.raises(ValueError, match="the real problem"), interrupts.deferred():
        press()
        settle()
        raise ValueError("the real problem")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    interrupts.check()  # the dropped press does not come back later


def test_nested_blocks_share_the_outer_one():
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        with interrupts.deferred():
            press()
            settle()
        # The inner block ended normally and did not deliver: the outer one owns it.
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_previous_handler_is_the_one_called():
    calls = []

    def own(signum, frame):
        calls.append((signum, frame.f_code.co_name))

    signal.signal(signal.SIGINT, own)
    with interrupts.deferred():
        press()
        settle()
        assert calls == []
        interrupts.check()
    assert calls == [(signal.SIGINT, "test_the_previous_handler_is_the_one_called")]
    assert signal.getsignal(signal.SIGINT) is own


def test_an_ignored_ctrl_c_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupts.deferred():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        press()
        settle()
        interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_outside_the_main_thread_it_changes_nothing():
    seen = []

    def work():
        with interrupts.deferred():
            seen.append(signal.getsignal(signal.SIGINT))
            interrupts.check()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]


def test_waiting_on_a_future_that_never_ends_still_takes_the_press():
    never = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(never.wait)
        threading.Timer(0.2, press).start()
        with pytest.raises(KeyboardInterrupt), interrupts.deferred():
            interrupts.result(stuck)
        never.set()
    assert stuck.result() is True


def test_sleep_takes_the_press_before_the_time_is_up():
    threading.Timer(0.2, press).start()
    slept = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        interrupts.sleep(3600)
        slept.append(True)
    assert slept == []


def test_a_second_press_breaks_a_wait_that_never_checks():
    """Joining a thread stuck in a read that never returns cannot check(); the user's
    second press must still get out."""
    release, finished = threading.Event(), threading.Event()

    def read_that_hangs():
        release.wait()
        finished.set()

    stuck = threading.Thread(target=read_that_hangs, daemon=True)
    stuck.start()

    def press_twice():
        press()
        time.sleep(0.2)
        press()

    threading.Timer(0.2, press_twice).start()
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        stuck.join()
    # The wait was broken, not finished.  (Not stuck.is_alive(): Python 3.11 marks a
    # thread stopped when a KeyboardInterrupt cuts a join() short.)
    assert not finished.is_set()
    release.set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert interrupts._previous is None  # the next block holds presses again


def test_a_job_that_times_out_is_an_error_not_a_wait():
    import errno

    def drive_timeout():
        raise OSError(errno.ETIMEDOUT, "Connection timed out")

    with ThreadPoolExecutor(1) as pool, interrupts.deferred():
        failed = pool.submit(drive_timeout)
        with pytest.raises(TimeoutError, match="timed out"):
            interrupts.result(failed)


def test_after_a_failed_job_the_queued_ones_never_start():
    ran = []

    def job(i):
        ran.append(i)
        if i == 0:
            raise OSError("Drive is gone")
        time.sleep(0.01)  # a Drive read: the other 49 take far longer than noticing
        return i

    with ThreadPoolExecutor(1) as pool:
        jobs = [pool.submit(job, i) for i in range(50)]
        with pytest.raises(OSError, match="Drive is gone"):
            list(interrupts.results(jobs))
    assert len(ran) < 50 and all(f.cancelled() for f in jobs[len(ran) :])
