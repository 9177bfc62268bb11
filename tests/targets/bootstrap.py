"""Child targets for the bootstrap's tests: first lines, stops, results that do not travel.

Imports only what the fork server preloads (the standard library, anyio,
gymnasiarch), so that what a child imports before its target's first line
is this module alone.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from gymnasiarch import child_context

log = logging.getLogger("targets.bootstrap")


# -- first lines ---------------------------------------------------------------------


def modules_at_first_line() -> list[str]:
    """The modules loaded when a sync target's first line runs."""
    return sorted(sys.modules)


async def async_modules_at_first_line() -> list[str]:
    """The modules loaded when an async target's first line runs (and its event loop)."""
    loaded = sorted(sys.modules)
    import sniffio  # after the snapshot: which loop runs us

    return [*loaded, f"loop:{sniffio.current_async_library()}"]


# -- stops ---------------------------------------------------------------------------


def _record(path: str, text: str) -> None:
    """Write *text* to *path*, blocking: in a ``finally`` that runs under cancellation."""
    Path(path).write_text(text)


def _tell(fifo: str, what: bytes) -> None:
    """Write *what* to the test's FIFO (it waits for it, event-driven)."""
    with open(fifo, "wb") as pipe:
        pipe.write(what)


def log_until_stopped(counted: str) -> None:
    """Log numbered records as fast as possible until stopped; in the end, write the count.

    ``n`` counts the log calls that returned: the parent must have them all.
    """
    n = 0
    try:
        child_context().ready()
        while True:
            log.info("record %d", n)
            n += 1
    finally:
        Path(counted).write_text(str(n))


async def async_log_until_stopped(counted: str) -> None:
    """The same in an ``async def`` target, with a checkpoint after every record."""
    n = 0
    try:
        child_context().ready()
        while True:
            log.info("record %d", n)
            n += 1
            await anyio.lowlevel.checkpoint()
    finally:
        _record(counted, str(n))


def sleep_then_clean_up(fifo: str, marker: str, cleanup: float) -> None:
    """Sleep until stopped; the cleanup says it started, takes *cleanup* seconds, then marks."""
    try:
        child_context().ready()
        while True:
            time.sleep(3600)
    finally:
        _tell(fifo, b"cleaning")
        time.sleep(cleanup)
        Path(marker).write_text("cleaned up")


async def async_sleep_until_cancelled(fifo: str, marker: str) -> None:
    """Sleep until stopped; write which cancellation reached us (and that finally ran)."""
    cancelled = "not cancelled"
    try:
        _tell(fifo, b"running")
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class() as error:
        cancelled = f"{type(error).__module__}.{type(error).__qualname__}"
        raise
    finally:
        _record(marker, cancelled)


async def async_sleep_forever() -> None:
    """An async target that only waits (for the stubborn test)."""
    child_context().ready()
    await anyio.sleep_forever()


# -- results -------------------------------------------------------------------------


def return_a_lock(runs: str) -> dict[str, Any]:
    """Count this run in *runs*, then return something with a lock inside (it cannot pickle)."""
    path = Path(runs)
    path.write_text(str(int(path.read_text() or 0) + 1) if path.exists() else "1")
    return {"model": [1, 2, 3], "guard": threading.Lock()}


def return_a_local_function() -> Any:
    """Return a function defined inside us: pickle cannot find it by name."""

    def local() -> None:
        pass

    return local
