"""The log pipeline's figures from its issue, side by side with the stdlib baseline.

Figures (targets from the issue):

L1. Records/s end to end, 4 children x 20,000 records, until the parent has
    handled the last one, and how many were lost (>= 2x the baseline, 0
    lost). Baseline: stdlib ``SocketHandler`` (pickle over TCP) in the same
    children, into a correct anyio reader (exact reads, ``makeLogRecord`` +
    ``handle``) in the parent.
L2. The same with 1 child (>= 2x the baseline).
L3. Latency of one record on an idle system, the child's log call to the
    parent's handler, median (<= 5 ms).
L4. Cost of a log call in the child: records/s one child can emit with our
    handler installed, against a NullHandler (reported).
L5. Parent CPU per forwarded record, against ``makeLogRecord`` + ``handle``
    in process with the same handler (reported; <= 1.2x).
L6. The wire format: encode + decode of one typical record, JSON (what we
    use) against msgpack, when msgpack is installed (reported).

Both sides count records with the same cheap handler on the same logger.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import pickle
import struct
import time
from time import perf_counter, process_time
from typing import Any

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from benchmarks import _targets
from benchmarks._report import median, progress, row
from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._logwire import make_record, record_to_dict

T = "benchmarks._targets"
FORKSERVER = multiprocessing.get_context("forkserver")
CHILDREN = 4


def _progress(text: str) -> None:
    progress("bench_logging", text)


class _Counter(logging.Handler):
    """Counts records; notes when the expected number has arrived, and latencies."""

    def __init__(self, expected: int) -> None:
        super().__init__(logging.DEBUG)
        self.expected = expected
        self.count = 0
        self.latencies: list[float] = []
        self.all_in = anyio.Event()
        self.last_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.latencies.append(time.time() - record.created)
        if self.count >= self.expected:
            self.last_at = perf_counter()
            self.all_in.set()


class _Attached:
    """The counter on the burst logger (not propagating) for one measurement."""

    def __init__(self, expected: int) -> None:
        self.counter = _Counter(expected)
        self.logger = logging.getLogger(_targets.BURST_LOGGER)

    def __enter__(self) -> _Counter:
        self.logger.handlers[:] = [self.counter]
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        return self.counter

    def __exit__(self, *_: object) -> None:
        self.logger.handlers[:] = []
        self.logger.propagate = True


# -- ours ---------------------------------------------------------------------------


async def _ours(children: int, count: int) -> tuple[float, int, float]:
    """(records/s, records lost, parent CPU s) for *children* supervised bursts."""
    specs = [
        ChildSpec(f"burst{i}", f"{T}:log_burst", args=(count,), restart="temporary")
        for i in range(children)
    ]
    with _Attached(children * count) as counter:
        cpu, began = process_time(), perf_counter()
        await Supervisor(specs, start_order="parallel").run()
        cpu = process_time() - cpu
        elapsed = (counter.last_at or perf_counter()) - began
    return counter.count / elapsed, children * count - counter.count, cpu


# -- the baseline: stdlib SocketHandler into a correct reader -----------------------


async def _read_pickles(stream: SocketStream) -> None:
    received = BufferedByteReceiveStream(stream)
    async with stream:
        while True:
            try:
                header = await received.receive_exactly(4)
            except (anyio.IncompleteRead, anyio.EndOfStream):
                return
            (length,) = struct.unpack(">L", header)
            record = logging.makeLogRecord(pickle.loads(await received.receive_exactly(length)))
            logging.getLogger(record.name).handle(record)


async def _baseline(children: int, count: int) -> tuple[float, int, float]:
    """(records/s, records lost, parent CPU s) for the stdlib SocketHandler pipeline."""
    with _Attached(children * count) as counter:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            async with anyio.create_task_group() as group:
                group.start_soon(listener.serve, _read_pickles)
                cpu, began = process_time(), perf_counter()
                processes = [
                    FORKSERVER.Process(target=_targets.log_burst_to_socket, args=(port, count))
                    for _ in range(children)
                ]
                for process in processes:
                    process.start()
                with anyio.move_on_after(60):
                    await counter.all_in.wait()
                cpu = process_time() - cpu
                elapsed = (counter.last_at or perf_counter()) - began
                for process in processes:
                    await anyio.wait_readable(process.sentinel)
                    process.join()
                    process.close()
                group.cancel_scope.cancel()
    return counter.count / elapsed, children * count - counter.count, cpu


# -- the other figures ----------------------------------------------------------------


async def _latency(count: int) -> list[float]:
    with _Attached(count) as counter:
        await Supervisor(
            [ChildSpec("paced", f"{T}:log_paced", args=(count, 0.02), restart="temporary")]
        ).run()
    return counter.latencies


async def _emit_rates(count: int) -> tuple[float, float]:
    results = await Supervisor(
        [
            ChildSpec("ours", f"{T}:emit_rate", args=(count, False), restart="temporary"),
            ChildSpec("null", f"{T}:emit_rate", args=(count, True), restart="temporary"),
        ]
    ).run()
    return results["ours"], results["null"]


def _in_process_cost(count: int) -> float:
    """CPU seconds per record of makeLogRecord + handle, with the counting handler."""
    record = logging.LogRecord(_targets.BURST_LOGGER, logging.INFO, __file__, 1, "x %d", (1,), None)
    data = record.__dict__.copy()
    with _Attached(count):
        logger = logging.getLogger(_targets.BURST_LOGGER)
        began = process_time()
        for _ in range(count):
            logger.handle(logging.makeLogRecord(data))
        return (process_time() - began) / count


def _wire_costs(count: int) -> tuple[float, float | None]:
    """Seconds per record to encode and decode (with our checks) in JSON, and in msgpack."""
    record = logging.LogRecord(
        _targets.BURST_LOGGER, logging.INFO, __file__, 1, "record %d of the burst", (7,), None
    )
    data = record_to_dict(record)
    began = perf_counter()
    for _ in range(count):
        make_record(json.loads(json.dumps(data)), "child")
    json_cost = (perf_counter() - began) / count
    try:
        import msgpack  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        return json_cost, None
    began = perf_counter()
    for _ in range(count):
        make_record(msgpack.unpackb(msgpack.packb(data)), "child")
    return json_cost, (perf_counter() - began) / count


async def _collect(quick: bool) -> list[dict[str, Any]]:
    count = 5000 if quick else 20000
    samples = 1 if quick else 3
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)  # the children's loggers start at the parent's level
    try:
        await Supervisor(
            [ChildSpec("warm", f"{T}:log_burst", args=(10,), restart="temporary")]
        ).run()
        rows: list[dict[str, Any]] = []
        for children, order in ((CHILDREN, "L1"), (1, "L2")):
            _progress(f"{order}: {children} x {count} records ({samples} samples)")
            ours: list[tuple[float, int, float]] = []
            base: list[tuple[float, int, float]] = []
            for _ in range(samples):
                base.append(await _baseline(children, count))
                ours.append(await _ours(children, count))
            base_rate = median([b[0] for b in base]) or 0.0
            rows.append(
                row(
                    order,
                    f"{order} records/s, {children} child(ren) x {count}",
                    [o[0] for o in ours],
                    base=[b[0] for b in base],
                    baseline="stdlib SocketHandler (pickle/TCP) + correct reader",
                    unit="rec/s",
                    better="higher",
                    target=">= 2x baseline, 0 lost",
                    target_value=2 * base_rate,
                    extra={
                        "ours_lost": [o[1] for o in ours],
                        "baseline_lost": [b[1] for b in base],
                        "ours_parent_cpu_s": [o[2] for o in ours],
                        "baseline_parent_cpu_s": [b[2] for b in base],
                    },
                )
            )
            if children == 1:
                per_record = [o[2] / count for o in ours]
                in_process = [_in_process_cost(count) for _ in range(samples)]
                rows.append(
                    row(
                        "L5",
                        "L5 parent CPU per forwarded record",
                        per_record,
                        base=in_process,
                        baseline="makeLogRecord + handle, in process",
                        target="<= 1.2x in-process",
                        target_value=1.2 * (median(in_process) or 0.0),
                        extra={"baseline_per_record_pickle": [b[2] / count for b in base]},
                    )
                )
        _progress("L3: latency of one record on an idle system")
        latencies = await _latency(20 if quick else 50)
        rows.append(
            row(
                "L3",
                "L3 latency, child log call -> parent handler",
                latencies,
                baseline="-",
                target="<= 5 ms",
                target_value=0.005,
            )
        )
        _progress("L4: cost of a log call in the child")
        rates = [await _emit_rates(count) for _ in range(samples)]
        rows.append(
            row(
                "L4",
                "L4 records/s one child emits",
                [r[0] for r in rates],
                base=[r[1] for r in rates],
                baseline="the same child with a NullHandler",
                unit="rec/s",
                better="higher",
                target="report",
            )
        )
        _progress("L6: wire format")
        json_cost, msgpack_cost = _wire_costs(20000)
        rows.append(
            row(
                "L6",
                "L6 encode + decode + check one record",
                [json_cost],
                base=[msgpack_cost] if msgpack_cost is not None else None,
                baseline="msgpack" if msgpack_cost is not None else "msgpack (not installed)",
                target="report",
            )
        )
        return rows
    finally:
        root.setLevel(old_level)


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """Run every figure; return the report rows."""
    return anyio.run(_collect, quick)
