"""Targets for paths users take: a child's last records, backoffs, missed ready_timeouts."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from gymnasiarch import child_context


def crash_once_after(marker: str, seconds: float) -> None:
    """The first run crashes after *seconds*; later runs get ready and stay."""
    if not os.path.exists(marker):
        Path(marker).write_text("ran")
        time.sleep(seconds)
        sys.exit(1)
    child_context().ready()
    while True:
        time.sleep(3600)


def log_until_stopped() -> None:
    """Log to ``sim.env`` while it works, and twice more in its ``finally``, as it cleans up."""
    log = logging.getLogger("sim.env")
    log.info("env working")
    try:  # a SIGTERM may come as soon as the supervisor has heard ready()
        child_context().ready()
        while True:
            time.sleep(3600)
    finally:
        log.info("cleanup begins")
        time.sleep(0.2)
        log.info("cleanup done")


def never_ready_but_cleans_up(marker: str) -> None:
    """Never call ready(); write a line to stderr first and *marker* in its ``finally``."""
    print("env: still loading the scenario", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        Path(marker).write_text("cleaned up")


def ready_once_then_never(marker: str) -> None:
    """The first run gets ready and crashes; every later run never gets ready."""
    if not os.path.exists(marker):
        Path(marker).write_text("ran")
        child_context().ready()
        sys.exit(1)
    while True:
        time.sleep(3600)


def structlog_inside(count: int) -> None:
    """Import structlog only inside the function (as a lazy module does), then log with it."""
    import structlog

    log = structlog.get_logger("sim.chatty")
    for i in range(count):
        log.info("step", i=i)


def spawn_wrapper_in_a_process_of_its_own(config: dict[str, object]) -> None:
    """The seed's use: a process of the caller's own runs spawn_wrapper (the log config given)."""
    import anyio

    from gymnasiarch.logserver import LOG_CONFIG_KEY
    from gymnasiarch.spawn import spawn_wrapper

    target = "targets.user_paths:structlog_inside"
    anyio.run(spawn_wrapper, "worker", {LOG_CONFIG_KEY: config}, target, [3])


def ready_then_beat_until_frozen() -> None:
    """Get ready, then beat (the watchdog's heartbeat) for ever: only a freeze stops the beats."""
    child_context().ready()
    while True:
        child_context().heartbeat()
        time.sleep(0.01)


def ignore_sigterm_never_ready() -> None:
    """Ignore SIGTERM from the first line and never call ready(): only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


def raise_before_ready() -> None:
    """Fail in its start: it raises before it calls ready()."""
    raise RuntimeError("cannot load the scenario")


def slow_to_be_ready(seconds: float) -> None:
    """Call ready() only after *seconds*, then sleep."""
    time.sleep(seconds)
    child_context().ready()
    time.sleep(3600)


def slow_to_be_ready_after_its_first_run(marker: str) -> None:
    """Ready at once on its first run; on every later run only after 60 s."""
    path = Path(marker)
    if path.exists():
        time.sleep(60)
    path.write_text("ran")
    child_context().ready()
    time.sleep(3600)
