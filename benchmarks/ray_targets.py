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


class LogBurstActor:
    """A bare actor that logs as a user's code on bare Ray would: to stderr, which Ray forwards.

    Ray's log monitor tails each worker's output files and publishes new
    lines to the driver: that is bare Ray's way to a remote actor's logs.
    """

    def burst(self, count: int, tag: str) -> float:
        """Log *count* records marked with *tag*; return when the first log call was made."""
        import logging  # noqa: PLC0415 - see the module docstring
        import sys  # noqa: PLC0415

        from benchmarks._targets import BURST_LOGGER, BURST_MESSAGE  # noqa: PLC0415

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        log = logging.getLogger(BURST_LOGGER)
        log.handlers[:] = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)
        message = f"{tag} {BURST_MESSAGE}"
        started = time.time()
        for i in range(count):
            log.info(message, i)
        handler.flush()
        return started


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
