"""Child targets of the benchmarks, importable as ``benchmarks._targets:name``.

Only the standard library is imported at module level: a spawn-started
baseline child imports this module, and it must not pay for importing
gymnasiarch (or anyio). The targets run by a supervisor import
``child_context`` when they run; in a fork-server child it is preloaded.
"""

from __future__ import annotations

import signal
import time
from multiprocessing.connection import Connection


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


# -- targets for gymnasiarch children ----------------------------------------


def report_time() -> float:
    """Return the wall-clock time at which the child's code started."""
    return time.time()


def ready_then_sleep() -> None:
    """Tell the supervisor we are ready, then sleep until stopped (SIGTERM ends us)."""
    from gymnasiarch import child_context  # noqa: PLC0415 - see the module docstring

    child_context().ready()
    _sleep_forever()


def ignore_sigterm_then_sleep() -> None:
    """A stubborn child: ignores SIGTERM, so only SIGKILL stops it."""
    from gymnasiarch import child_context  # noqa: PLC0415 - see the module docstring

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child_context().ready()
    _sleep_forever()


# -- targets for bare multiprocessing baselines --------------------------------


def send_time(conn: Connection) -> None:
    """Send the wall-clock time at which the child's code started."""
    conn.send(time.time())
    conn.close()


def signal_then_sleep(conn: Connection) -> None:
    """Signal readiness over *conn*, then sleep until stopped (SIGTERM ends us)."""
    conn.send("ready")
    conn.close()
    _sleep_forever()


# -- targets of the logging benchmarks ---------------------------------------------

BURST_LOGGER = "bench.burst"


def log_burst(count: int) -> int:
    """Log *count* records as fast as the handler takes them (a supervised child)."""
    import logging  # noqa: PLC0415 - stdlib, cheap; keeps the module's top small

    log = logging.getLogger(BURST_LOGGER)
    log.setLevel(logging.INFO)
    for i in range(count):
        log.info("record %d of the burst", i)
    return count


def log_burst_to_socket(port: int, count: int) -> None:
    """The baseline's child: the same burst through a stdlib SocketHandler (pickle/TCP)."""
    import logging  # noqa: PLC0415
    import logging.handlers  # noqa: PLC0415

    handler = logging.handlers.SocketHandler("127.0.0.1", port)
    log = logging.getLogger(BURST_LOGGER)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    for i in range(count):
        log.info("record %d of the burst", i)
    handler.close()


def log_paced(count: int, interval: float) -> int:
    """Log *count* records *interval* seconds apart (the latency figure)."""
    import logging  # noqa: PLC0415

    log = logging.getLogger(BURST_LOGGER)
    log.setLevel(logging.INFO)
    for i in range(count):
        time.sleep(interval)
        log.info("paced record %d", i)
    return count


def emit_rate(count: int, null: bool) -> float:
    """Records per second this child can emit: with the handler it has, or a NullHandler."""
    import logging  # noqa: PLC0415

    log = logging.getLogger("bench.emit")
    log.setLevel(logging.INFO)
    if null:
        log.handlers[:] = [logging.NullHandler()]
        log.propagate = False
    began = time.perf_counter()
    for i in range(count):
        log.info("record %d of the burst", i)
    return count / (time.perf_counter() - began)
