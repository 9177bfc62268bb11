"""Child targets that log at many levels and report what their root handlers saw.

A record that reaches the root logger's handlers in a supervised child is a
record sent to the parent (the log client is the root's only handler, and
these targets add a counter beside it): what they return is what went on
the wire.
"""

from __future__ import annotations

import logging
import time

from gymnasiarch import child_context


class _Sent(logging.Handler):
    """Notes each record the root's handlers get: the records the child sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.sent.append((record.name, record.levelno))


def _watch_sending() -> _Sent:
    watcher = _Sent()
    logging.getLogger().addHandler(watcher)
    return watcher


def log_pairs(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Log one record per ``(logger name, level)``, message ``name|level``; return those sent."""
    watcher = _watch_sending()
    for name, level in pairs:
        logging.getLogger(name).log(level, "%s|%d", name, level)
    return watcher.sent


def tick_until_debug(name: str, limit: int, after: int) -> dict[str, object]:
    """Log DEBUG ticks on *name* until the parent turns DEBUG on, then *after* more.

    A simulation at work: it logs a tick every millisecond or so. It says it
    is ready after the first tick, which the parent (at INFO) would drop.
    Gives up after *limit* ticks. Returns how many ticks it logged before
    DEBUG reached it, and what its root's handlers saw.
    """
    log = logging.getLogger(name)
    watcher = _watch_sending()
    before = 0
    remaining = after
    for tick in range(limit):
        sent = len(watcher.sent)
        log.debug("tick %d", tick)
        if len(watcher.sent) > sent:  # DEBUG is on: this tick went out
            remaining -= 1
            if remaining == 0:
                break
        else:
            before += 1
        if tick == 0:
            child_context().ready()
        time.sleep(0.001)  # the simulation's step
    return {"before": before, "sent": watcher.sent}
