"""Targets of tests/test_watchdog.py: children that beat, and children that hang."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator

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


async def leaves_an_executor_thread(seconds: float = 1.0, fail: bool = False) -> str:
    """Returns (or raises) at once; asyncio's shutdown then joins an executor thread: *seconds*."""
    import asyncio  # an asyncio child only

    asyncio.get_running_loop().run_in_executor(None, time.sleep, seconds)
    if fail:
        raise ValueError("the real error")
    return "done"


async def finalizes_slowly(seconds: float = 1.0) -> str:
    """Returns; its async generator's ``finally`` blocks for *seconds* at the loop's shutdown."""

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
        finally:
            time.sleep(seconds)  # noqa: ASYNC251 - a sync cleanup, run at the loop's end

    async for _ in numbers():
        break
    return "done"


def _beats_for(seconds: float) -> None:
    context = child_context()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        context.heartbeat()
        time.sleep(0.02)


def stuck_while_a_fork_beats() -> None:
    """Stuck itself, while a worker forked from it calls heartbeat() (killed with its group)."""
    import multiprocessing

    child_context().heartbeat()
    worker = multiprocessing.get_context("fork").Process(target=_beats_for, args=(30,))
    worker.start()
    time.sleep(30)


def systemd_environ() -> dict[str, str | None]:
    """The sd_notify and watchdog variables this child sees."""
    import os

    return {key: os.environ.get(key) for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}


def _deep(depth: int, event: threading.Event) -> None:
    if depth:
        _deep(depth - 1, event)
    else:
        event.wait()


def many_deep_threads(count: int = 60, depth: int = 60) -> None:
    """*count* threads *depth* calls deep, all waiting; its main thread stuck elsewhere."""
    event = threading.Event()
    for _ in range(count):
        threading.Thread(target=_deep, args=(depth, event), daemon=True).start()
    child_context().heartbeat()
    stop_beating()


def ignores_the_dump_request() -> None:
    """Stuck, with the watchdog's dump signal ignored: it cannot answer with its stacks."""
    import signal

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    stop_beating()


def _chatters(line: str) -> None:
    """Writes *line* to stderr every 2 ms, forever: a thread's own output."""
    import sys

    while True:
        sys.stderr.write(line)
        sys.stderr.flush()
        time.sleep(0.002)


def chatters_with_its_own_dump_signal(line: str = "tick\n") -> None:
    """Stuck, SIGUSR2 its own (a library's), while a thread writes *line* to stderr."""
    import signal

    signal.signal(signal.SIGUSR2, lambda *_: None)
    threading.Thread(target=_chatters, args=(line,), daemon=True).start()
    stop_beating()
