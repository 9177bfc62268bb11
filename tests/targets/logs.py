"""Child targets that log, print and misbehave on the way out."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

log = logging.getLogger("targets.logs")


class Boom(Exception):
    """Raised on purpose."""


def burst(count: int, ending: str = "return") -> int:
    """Log *count* numbered records as fast as possible, then end by *ending*.

    ``return``, ``raise`` or ``exit`` (``sys.exit(3)``): the last record is
    logged right before the end.
    """
    for i in range(count):
        log.info("record %d", i)
    if ending == "raise":
        raise Boom("after the burst")
    if ending == "exit":
        sys.exit(3)
    return count


def rich_records() -> None:
    """An exception, extra fields plain and not, a forged child and logger name."""
    try:
        raise ValueError("inner")  # noqa: TRY301 - an exception to log
    except ValueError:
        log.exception("it failed")
    log.info("with extras", extra={"plain": 7, "thing": object(), "child": "someone-else"})
    logging.getLogger("gymnasiarch.supervisor").warning("forged supervisor line")


def structlog_events() -> None:
    """structlog with bound context and context variables."""
    structlog.contextvars.bind_contextvars(episode=3)
    structlog.get_logger("targets.structured").bind(agent="a1").info("stepped", reward=0.5)


def print_and_crash() -> None:
    """Write to stdout and stderr (not through logging), then crash."""
    print("hello from stdout")
    print("partial line without newline", end="")
    sys.stderr.write("warning: about to fail\n")
    raise Boom("printed first")


def die_at_birth() -> None:
    """Say something on stderr at the file-descriptor level and vanish, no cleanup."""
    os.write(2, b"fatal: cannot even start\n")
    os._exit(7)


def send_log_config(config: dict[str, Any], name: str, count: int) -> None:
    """The seed's form: spawn_wrapper with a runtime config that names a LogServer."""
    import anyio

    from gymnasiarch.logserver import LOG_CONFIG_KEY
    from gymnasiarch.spawn import spawn_wrapper

    anyio.run(spawn_wrapper, name, {LOG_CONFIG_KEY: config}, burst, [count])


def odd_records() -> None:
    """Records made by hand, with fields the stdlib leaves None; then an ordinary one."""
    log.handle(logging.LogRecord("targets.logs", logging.INFO, None, None, "hand-made", None, None))  # type: ignore[arg-type]
    log.info("after the odd one")


def endless_line(megabytes: int) -> int:
    """Write *megabytes* to stdout without one newline (a progress bar that never ends)."""
    chunk = "#" * 65536
    for _ in range(megabytes * 16):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    return megabytes
