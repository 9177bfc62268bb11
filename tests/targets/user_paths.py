"""Targets for paths users take: a child's last records, backoffs, missed ready_timeouts."""

from __future__ import annotations

import logging
import os
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
