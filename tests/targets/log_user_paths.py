"""Children that log as ported code does: their own logging setup, last words, odd text."""

from __future__ import annotations

import logging
import logging.config
import os
import signal
import time
import warnings

log = logging.getLogger("sim.env")


def configures_its_own_levels() -> None:
    """A worker that sets up its loggers' levels itself (dictConfig closes every handler)."""
    logging.config.dictConfig({"version": 1, "loggers": {"sim": {"level": "INFO"}}})
    log.info("episode done", extra={"episode": 3})


def last_words(ending: str) -> None:
    """An error record, then an end that runs no exit code: ``os._exit`` or SIGKILL."""
    log.error("calling the solver with bad input")
    if ending == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


def odd_text() -> None:
    """A file name that is not UTF-8, a bad %-format, big records."""
    name = os.fsdecode(b"data-\xff.csv")
    log.info("loading %s", name)
    log.warning("bad %d", "x")
    log.info("%s", "日" * 300_000)
    log.info("small message", extra={"episode": 3, "blob": "x" * 600_000})
    log.info("the end")


def prints() -> None:
    print("a line of output", flush=True)
    logging.getLogger("gymnasiarch.mine").warning("a record of a gymnasiarch logger")


def burst(count: int) -> None:
    for number in range(count):
        log.info("record %d", number)


def logs_an_exception() -> None:
    try:
        {}["missing-agent"]
    except KeyError:
        log.exception("child boom")


def warns() -> None:
    warnings.warn("the scenario file is old", UserWarning, stacklevel=1)


def many_small_extras() -> None:
    log.info("before")
    log.info("many extras", extra={f"k{number}": "x" * 4000 for number in range(300)})
    log.info("after")


def announces_a_big_value() -> None:
    from gymnasiarch import child_context

    child_context().ready({"blob": "x" * 2_000_000})
    time.sleep(3600)
