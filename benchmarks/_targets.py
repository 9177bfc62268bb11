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


async def async_ready_then_sleep() -> None:
    """The ``async def`` kind of :func:`ready_then_sleep` (cancelled by SIGTERM)."""
    import anyio  # noqa: PLC0415 - see the module docstring

    from gymnasiarch import child_context  # noqa: PLC0415

    child_context().ready()
    await anyio.sleep_forever()


# -- targets for both: the same target, run the same way ----------------------------


def _loop() -> str:
    import sniffio  # noqa: PLC0415 - see the module docstring

    return str(sniffio.current_async_library())


async def async_send_time(conn: Connection) -> None:
    """Send the wall-clock time at which the target's first line ran, and its event loop."""
    started = time.time()
    conn.send((started, _loop()))
    conn.close()


async def async_signal_then_sleep(conn: Connection) -> None:
    """The ``async def`` kind of :func:`signal_then_sleep`."""
    import anyio  # noqa: PLC0415

    conn.send("ready")
    conn.close()
    await anyio.sleep_forever()


def run_async(conn: Connection, target: str, backend: str) -> None:
    """A bare baseline child running ``async def`` *target* of this module on *backend*.

    What a supervised child does with an async target: ``anyio.run`` on the
    backend's loop, with the backends preloaded in the fork server alike.
    """
    import anyio  # noqa: PLC0415

    anyio.run(globals()[target], conn, backend=backend)


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


# -- targets of the logging benchmarks -------------------------------------------
# logging is imported inside each target: the spawn baseline of bench_supervisor
# imports this module in a fresh interpreter, and its start time must not
# include loading logging (and, for the SocketHandler, logging.handlers).

BURST_LOGGER = "bench.burst"
BURST_MESSAGE = "record %d"


def _queued_in_handlers() -> int | None:
    """Records our log handler still holds (not yet sent), or None if there is none.

    Peeks at a private attribute on purpose: how far the sender lags behind
    the logging loop is the one thing the public API does not say.
    """
    import logging  # noqa: PLC0415 - see the comment above the logging targets

    for handler in logging.getLogger().handlers:
        pending = getattr(handler, "_pending", None)
        if pending is not None:
            return len(pending)
    return None


def log_burst(count: int) -> dict[str, float | int | None]:
    """Log *count* records as fast as they are taken, in a supervised child.

    Returns the wall-clock times the loop started and ended, and how many
    records were still queued in our handler when it ended.
    """
    import logging  # noqa: PLC0415

    log = logging.getLogger(BURST_LOGGER)
    log.setLevel(logging.INFO)  # whatever the parent's level, nothing is filtered
    started = time.time()
    for i in range(count):
        log.info(BURST_MESSAGE, i)
    ended = time.time()
    return {"started": started, "ended": ended, "queued": _queued_in_handlers()}


def log_to_nowhere(conn: Connection) -> None:
    """Keep one core busy logging into a ``NullHandler`` until told to stop over *conn*.

    The load a burst's child puts beside its parent, for the in-process
    baseline of figure L5: on a shared VM, CPU time runs slower while the
    other core is busy too, and both sides must pay that alike.
    """
    import logging  # noqa: PLC0415

    log = logging.getLogger("bench.nowhere")
    log.handlers[:] = [logging.NullHandler()]
    log.propagate = False
    log.setLevel(logging.INFO)
    conn.send("busy")
    i = 0
    while not conn.poll():  # a check between batches, not a wait: the point is to burn CPU
        for _ in range(1000):
            log.info(BURST_MESSAGE, i)
            i += 1
    conn.close()


def log_burst_to_socket(port: int, count: int, conn: Connection) -> None:
    """The baseline child: the same burst through a stdlib ``SocketHandler`` (pickle/TCP).

    Sends ``(started, ended)`` of its loop over *conn* once the handler is closed.
    """
    import logging  # noqa: PLC0415
    import logging.handlers  # noqa: PLC0415

    handler = logging.handlers.SocketHandler("127.0.0.1", port)
    log = logging.getLogger(BURST_LOGGER)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    started = time.time()
    for i in range(count):
        log.info(BURST_MESSAGE, i)
    ended = time.time()
    handler.close()
    conn.send((started, ended))
    conn.close()


def log_paced(count: int, interval: float) -> int:
    """Log *count* records *interval* seconds apart, in a supervised child (latency)."""
    import logging  # noqa: PLC0415

    log = logging.getLogger(BURST_LOGGER)
    log.setLevel(logging.INFO)
    for i in range(count):
        time.sleep(interval)
        log.info("paced " + BURST_MESSAGE, i)
    return count


def emit_rates(count: int, rounds: int) -> dict[str, list[float]]:
    """Records/s of this child's logging loop, by where the records go (a supervised child).

    ``ours``: the root handler a supervised child has, our
    ``LogClientHandler``. ``null``: a ``NullHandler``, what any log call costs.
    ``encode``: a handler that only encodes each record as ours does and
    drops it, which tells the encoding apart from the queue and the sender
    thread. Each round times one loop of *count* calls each way, in rotating
    order; after each loop it waits (untimed) until our sender thread has
    sent everything, so that thread does not steal the next loop's time.
    """
    import logging  # noqa: PLC0415

    from gymnasiarch._wire import frames  # noqa: PLC0415 - see the module docstring
    from gymnasiarch._wire.logclient import _encode_record, _pack_record  # noqa: PLC0415

    # The encoding our handler uses here: msgpack where it is installed.
    encode = _pack_record if frames.reads_msgpack() else _encode_record

    class EncodeOnly(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            encode(record)

    loggers = {
        "ours": logging.getLogger("bench.emit.ours"),
        "null": logging.getLogger("bench.emit.null"),
        "encode": logging.getLogger("bench.emit.encode"),
    }
    for name, log in loggers.items():
        log.setLevel(logging.INFO)
        if name != "ours":
            log.handlers[:] = [logging.NullHandler() if name == "null" else EncodeOnly()]
            log.propagate = False

    def rate(log: logging.Logger) -> float:
        began = time.perf_counter()
        for i in range(count):
            log.info(BURST_MESSAGE, i)
        per_second = count / (time.perf_counter() - began)
        for handler in logging.getLogger().handlers:
            handler.flush()
        return per_second

    names = list(loggers)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            results[name].append(rate(loggers[name]))
    return results
