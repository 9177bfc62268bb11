"""Actors and child targets of ``bench_ray``, importable in Ray's workers.

Only the standard library is imported at module level: the bare baseline
actor must not pay for importing gymnasiarch (or anyio), which our host
actor does pay for, and a supervised child imports this module by its
dotted path.
"""

from __future__ import annotations

import importlib
import os
import time

STAMP_LOGGER = "bench.ray.stamp"


class BareActor:
    """The least an actor can be: a method that returns, and one that waits."""

    def ping(self) -> int:
        """Return at once, with this worker's pid."""
        return os.getpid()

    def import_then_ping(self, module: str) -> int:
        """Import *module* (what our host actor imports), then return this worker's pid."""
        importlib.import_module(module)
        return os.getpid()

    def sleep(self, seconds: float) -> None:
        """Block for *seconds* (a call still pending when the actor dies)."""
        time.sleep(seconds)


def stamp_ready_then_sleep() -> None:
    """Log one record (its ``created`` is when our code began), say ready, then sleep.

    The record is how the parent learns, without private attributes, when
    the child's code started: one log call costs microseconds.
    """
    import logging  # noqa: PLC0415 - see the module docstring

    from gymnasiarch import child_context  # noqa: PLC0415

    log = logging.getLogger(STAMP_LOGGER)
    log.setLevel(logging.INFO)  # whatever the parent's level
    log.info("code runs")
    child_context().ready()
    while True:
        time.sleep(3600)
