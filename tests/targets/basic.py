"""Small child targets: return, raise, exit, sleep, log, misbehave."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from gymnasiarch import RuntimeConfig, child_context

log = logging.getLogger("targets.basic")


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await anyio.lowlevel.checkpoint()
    return a + b


def whoami() -> dict[str, Any]:
    ctx = child_context()
    return {
        "name": ctx.name,
        "seed": ctx.seed,
        "restarts": ctx.restarts,
        "config": dict(RuntimeConfig.current()),
        "pid": os.getpid(),
        "pgid": os.getpgrp(),
        "sigint": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        "title": Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode(),
    }


class Boom(Exception):
    pass


def crash(message: str = "boom") -> None:
    log.error("about to crash")
    raise Boom(message)


def exit_with(code: int) -> None:
    log.info("exiting with %d", code)
    sys.exit(code)


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


async def async_sleep_forever() -> None:
    await anyio.sleep_forever()


def ignore_sigterm_and_sleep() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child_context().ready()
    sleep_forever()


def ready_then_sleep(value: Any = None) -> None:
    child_context().ready(value)
    sleep_forever()


def never_ready() -> None:
    sleep_forever()


def log_lines(count: int) -> int:
    for i in range(count):
        log.info("line %d", i, extra={"index": i})
    return count


def crash_after_first_run(marker: str) -> str:
    """Crash on the first run (creating *marker*), succeed on later runs."""
    path = Path(marker)
    if not path.exists():
        path.write_text("ran")
        raise Boom("first run")
    return "second run"


def crash_once_then_sleep(marker: str) -> None:
    """Crash on the first run (creating *marker*); later runs sleep until stopped."""
    path = Path(marker)
    if not path.exists():
        path.write_text("ran")
        raise Boom("first run")
    sleep_forever()


def append_and_sleep(journal: str) -> None:
    """Write our name and run count to *journal*, signal readiness, sleep until stopped."""
    ctx = child_context()
    with Path(journal).open("a") as f:
        f.write(f"start {ctx.name} {ctx.restarts}\n")
    ctx.ready()
    sleep_forever()


def spawn_grandchild_and_sleep(pidfile: str) -> None:
    """Start a grandchild in our process group, record its pid, sleep."""
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    Path(pidfile).write_text(str(grandchild.pid))
    child_context().ready()
    sleep_forever()


def unpicklable_result() -> Any:
    return lambda: None


def through_spawn_wrapper() -> dict[str, Any]:
    """Use the seed's spawn_wrapper directly, as palaestrAI code does."""
    from gymnasiarch.spawn import spawn_wrapper

    return anyio.run(spawn_wrapper, "renamed", {"k": 1}, "targets.basic:whoami")


def spawn_grandchild_and_return(pidfile: str) -> str:
    """Start a grandchild in our process group, record its pid, and return at once."""
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    Path(pidfile).write_text(str(grandchild.pid))
    return "done"


def return_on_sigterm() -> str:
    """Finish cleanly, with a result, when asked to stop."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    child_context().ready()
    stop.wait()
    return "stopped cleanly"


def started_from_spare() -> bool:
    """Whether this child was forked ahead of its request by our fork server."""
    from gymnasiarch._process import forkserver_main

    return forkserver_main.from_spare


def parent_and_env(variable: str) -> tuple[int, str | None]:
    """Our parent's pid (a fork server's, say) and *variable* in our environment."""
    return os.getppid(), os.environ.get(variable)
