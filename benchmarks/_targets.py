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
