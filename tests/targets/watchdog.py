"""Targets of tests/test_watchdog.py: children that beat, and children that hang."""

from __future__ import annotations

import re
import threading
import time

import anyio

from gymnasiarch import child_context


def sleep_in_the_loop() -> None:
    """What blocks an event loop: a synchronous sleep inside a coroutine."""
    time.sleep(30)


async def blocks_its_loop(after: float = 0.1) -> str:
    """Beats while its loop turns, then blocks the loop; at a restart it ends normally."""
    if child_context().restarts:
        return "ok"
    await anyio.sleep(after)
    sleep_in_the_loop()
    return "not reached"


async def idles() -> None:
    """An idle async child: it beats by itself, forever."""
    await anyio.sleep_forever()


def stop_beating() -> None:
    """Where the sync child stops calling heartbeat()."""
    time.sleep(30)


def beats_then_stops(seconds: float = 0.3) -> None:
    """Calls heartbeat() in a hot loop for *seconds*, then never again."""
    context = child_context()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        context.heartbeat()
    stop_beating()


def beats_forever() -> None:
    """A sync child that works and beats, never hung (unless its machine is stalled)."""
    context = child_context()
    while True:
        context.heartbeat()
        time.sleep(0.001)


def _take_both(first: threading.Lock, second: threading.Lock, met: threading.Barrier) -> None:
    with first:
        met.wait()
        with second:  # the other thread holds it, and waits for ours
            pass


def deadlocks() -> None:
    """Two threads, each holding the lock the other waits for; the main thread joins them."""
    a, b = threading.Lock(), threading.Lock()
    met = threading.Barrier(2)
    threads = [
        threading.Thread(target=_take_both, args=(a, b, met), name="left"),
        threading.Thread(target=_take_both, args=(b, a, met), name="right"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def backtrack() -> None:
    """A catastrophic regex: C code that never lets go of the GIL (2**40 steps)."""
    re.match(r"(a+)+$", "a" * 40 + "b")


async def raises_while_beating() -> None:
    """An async child with a watchdog whose target raises: the error is its own."""
    await anyio.sleep(0.05)
    raise ValueError("from the target")


def returns_with_thread(seconds: float = 1.0) -> str:
    """Returns at once; a non-daemon thread makes the interpreter's exit take *seconds*."""
    threading.Thread(target=time.sleep, args=(seconds,)).start()
    return "done"


def raises_with_thread(seconds: float = 1.0) -> None:
    """Raises at once; a non-daemon thread makes the interpreter's exit take *seconds*."""
    threading.Thread(target=time.sleep, args=(seconds,)).start()
    raise ValueError("the real error")


def irregular_heartbeats(watchdog: float) -> str:
    """Calls heartbeat() never more than 0.85 watchdogs apart, but in bursts.

    Each burst's calls after its first are skipped as too recent (less than
    a quarter of the watchdog after the beat): the gap that follows is
    longer than the watchdog, counted from the last real beat.
    """
    context = child_context()
    for _ in range(3):
        context.heartbeat()
        end = time.monotonic() + 0.2 * watchdog
        while time.monotonic() < end:
            context.heartbeat()
        time.sleep(0.85 * watchdog)
    return "alive"
