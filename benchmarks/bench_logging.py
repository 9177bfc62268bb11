"""The log pipeline's figures from its issue, side by side with baselines in the same run.

Every figure is repeated and reported as a median; a figure and its baselines
are measured in the same run, their samples interleaved (the order
rotating), so a busy machine slows all sides alike. Timings are reported,
never asserted.

Figures (targets from the issue):

L1. Records/s end to end, 4 children x 20,000 records, from the first
    child's first log call until the parent handled the last record, and
    how many were lost on the way (>= 2x the baseline, 0 lost). Baseline
    (a): the stdlib ``SocketHandler`` (pickle over TCP) in 4 bare fork-server
    children, into a correct anyio reader in the parent (exact reads of the
    4-byte length and the pickle, ``makeLogRecord`` + ``handle``); the
    issue's target is set against it. Baseline (b), reported only: the same
    children into a reader that takes whole chunks and cuts the frames out
    itself, to show how much of the difference is the exact reads' cost.
L2. The same with 1 child (>= 2x baseline a).
L3. Latency of one record on an idle system, the child's log call to the
    parent's handler (``record.created`` against ``time.time()`` there),
    median over 50 records logged 20 ms apart (<= 5 ms).
L4. Cost of a log call in the child: records/s one child's logging loop
    runs at with our handler installed, against a ``NullHandler``; timed
    inside the child, only the loop (reported). The extras break it down.
L5. Parent CPU per forwarded record, ``time.process_time()`` across a whole
    supervisor run (1 child) over its records, against ``makeLogRecord`` +
    ``handle`` of such records in process with the same handler (<= 1.2x),
    samples of the two interleaved. The in-process loop runs while a bare
    child logs into a ``NullHandler`` on the other core, as the burst's
    child does beside the pipeline's parent: on this shared VM one core's
    CPU time runs up to 1.8x slower while the other is busy (measured; 1.0x
    at quiet times), so both sides get the same neighbour. Reported too:
    the in-process loop with the other core idle, and the parent CPU per
    record of the two baseline pipelines of L2, which pay a real run's costs
    (fresh data on every record, a busy child beside).
L6. The wire format: encode + decode per record, stdlib JSON (what we use)
    against msgpack, for one record dict of ``record_to_dict`` and for a
    batch of rows as our client sends them. msgpack is optional: without
    it, its side is reported as not measured.
L7. A level changed while a child runs (issue 13): from the parent's
    ``gymnasiarch.logging.set_level(logger, DEBUG)`` to the child's first
    DEBUG record (its ``record.created``), the child logging a DEBUG tick
    every millisecond that the parent dropped until then (<= 100 ms).
    Reported too: until that record reached the parent's handler; and the
    same pushed as soon as a child's code runs, before it has connected
    (it connects 50 ms after its start, when it has not logged before).
L8. Records the parent drops cost nothing on the wire (issue 13): DEBUG log
    calls/s in a supervised child on a logger the parent has at INFO,
    against the same loop on a logger the child set to INFO itself (the
    stdlib's own cost of a filtered call); and how many of them arrived in
    the parent (0).

All pipelines deliver into the same cheap counting handler, the only
handler on the parent's root logger while they run; levels are set so that
nothing is filtered, and the supervisor's own INFO records are held back.
No process may outlive its sample: each one is checked for.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import pickle
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

import gymnasiarch.logging
from benchmarks import _targets
from benchmarks._report import median, progress, row
from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._process.forkserver import SERVER
from gymnasiarch._wire.records import ROW, record_to_dict, record_to_row

T = "benchmarks._targets"
HERE = "benchmarks.bench_logging"  # targets of L7 and L8 (below)
BURST = _targets.BURST_LOGGER
LIVE = "bench.live"  # figure L7: the logger turned up to DEBUG while the child runs
DROPPED = "bench.dropped"  # figure L8: the logger whose DEBUG the parent drops
TICK = 0.001  # figure L7: seconds between the child's ticks
# The process-wide fork server gymnasiarch uses too: the baseline children
# start from the same preloaded server as ours (see _warm_up).
FORKSERVER = multiprocessing.get_context("forkserver")
CHILDREN = 4  # figure L1
PACE = 0.02  # figure L3: seconds between two records
WIRE_BATCH = 500  # figure L6: rows per batch; a burst's frames hold hundreds
RUN_TIMEOUT = 120.0  # no sample takes a tenth of this; a hang fails loudly instead
DRAIN_TIMEOUT = 10.0  # baseline: for the last connections to end once their children have

_BEGAN = perf_counter()


def _progress(text: str) -> None:
    # The time so far shows which figure eats the budget (~90 s full, ~25 s quick).
    progress("bench_logging", f"{perf_counter() - _BEGAN:5.1f} s  {text}")


# -- the parent's handlers ---------------------------------------------------------


class _Counter(logging.Handler):
    """Counts the burst's records per child and notes when the last one arrived.

    A child is its name on our records (``record.child``) and its pid on the
    baseline's. As cheap as a handler can be while still telling children
    apart: every pipeline pays for it alike.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[object] = collections.Counter()
        self.others = 0  # records of any other logger
        self.last = 0.0  # time.time() of the last burst record handled

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != BURST:
            self.others += 1
            return
        self.counts[record.__dict__.get("child", record.process)] += 1
        self.last = time.time()

    @property
    def total(self) -> int:
        """Burst records handled, all children together."""
        return sum(self.counts.values())


class _Latency(logging.Handler):
    """Notes, per burst record, the seconds from the child's log call to here."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == BURST:
            self.samples.append(time.time() - record.created)


@contextlib.contextmanager
def _only_handler(handler: logging.Handler) -> Iterator[None]:
    """Make *handler* the root logger's only handler, at INFO, for one measurement.

    Whatever handlers the root has otherwise (a console, say) are set aside:
    their cost is not the pipeline's. A supervised child's loggers follow
    the parent's levels, so INFO here lets its records through. The
    supervisor's own INFO records are held back (they would only cost time).
    """
    root = logging.getLogger()
    own = logging.getLogger("gymnasiarch")
    saved = root.handlers[:], root.level, own.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    own.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        own.setLevel(saved[2])


# -- processes ---------------------------------------------------------------------


def _helper_pids() -> set[int]:
    """The long-lived helpers: the fork servers and multiprocessing's resource tracker.

    They stay, by design, for the whole run; only their private fields tell
    them from a child left behind. (Our fork server's spare child is its
    grandchild, not ours.)
    """
    helpers = (
        getattr(multiprocessing.forkserver, "_forkserver", None),
        getattr(multiprocessing.resource_tracker, "_resource_tracker", None),
    )
    pids = (
        getattr(helper, "_forkserver_pid", None) or getattr(helper, "_pid", None)
        for helper in helpers
    )
    return {pid for pid in (*pids, SERVER.pid) if pid is not None}


def _leftover_processes() -> list[int]:
    """Our child processes other than multiprocessing's helpers: none should outlive a sample."""
    multiprocessing.active_children()  # reaps finished multiprocessing children
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in (task / "children").read_text().split())
    return sorted(pids - _helper_pids())


def _check_no_leftovers(where: str, found: list[int]) -> None:
    leftovers = _leftover_processes()
    if leftovers:
        _progress(f"WARNING: processes left behind after {where}: {leftovers}")
        found.extend(leftovers)


# -- figures L1, L2, L5: a burst through each pipeline --------------------------------


@dataclass
class _Burst:
    """One sample of a burst: what the parent saw, and what the children reported."""

    expected: int
    handled: int
    cpu: float  # the parent's CPU seconds for the whole run
    first_call: float  # time.time() of the first child's first log call
    last_handled: float  # time.time() the parent's handler took the last record
    last_call_done: float  # time.time() the last child's logging loop ended
    queued: list[int | None] = field(default_factory=list)  # ours: queued at loop end
    others: int = 0

    @property
    def rate(self) -> float:
        """Records handled per second, first log call to last record handled."""
        return self.handled / (self.last_handled - self.first_call)

    @property
    def lost(self) -> int:
        """Records logged but never handled."""
        return self.expected - self.handled

    @property
    def emit_rate(self) -> float:
        """Records per second the children's loops took them in (all children)."""
        return self.expected / (self.last_call_done - self.first_call)


async def _ours_burst(children: int, count: int) -> _Burst:
    """*children* supervised children log *count* records each: the supervisor's pipeline."""
    specs = [
        ChildSpec(f"burst{i}", f"{T}:log_burst", args=(count,), restart="temporary")
        for i in range(children)
    ]
    counter = _Counter()
    with _only_handler(counter):
        cpu = process_time()
        with anyio.fail_after(RUN_TIMEOUT):
            # run() returns once every child has exited, and the supervisor
            # reports an exit only after the child's last record was handled;
            # it stops its log server on the way out.
            results = await Supervisor(specs, start_order="parallel").run()
        cpu = process_time() - cpu
    loops = list(results.values())
    return _Burst(
        expected=children * count,
        handled=counter.total,
        cpu=cpu,
        first_call=min(loop["started"] for loop in loops),
        last_handled=counter.last,
        last_call_done=max(loop["ended"] for loop in loops),
        queued=[loop["queued"] for loop in loops],
        others=counter.others,
    )


async def _read_pickles(stream: SocketStream) -> None:
    """The issue's baseline reader: SocketHandler frames, read exactly, handled one by one."""
    received = BufferedByteReceiveStream(stream)
    async with stream:
        while True:
            try:
                header = await received.receive_exactly(4)
            except (anyio.IncompleteRead, anyio.EndOfStream):
                return  # the child closed its handler
            (length,) = struct.unpack(">L", header)
            data = pickle.loads(await received.receive_exactly(length))
            record = logging.makeLogRecord(data)
            logging.getLogger(record.name).handle(record)


async def _read_pickles_chunked(stream: SocketStream) -> None:
    """A stronger baseline reader: whole chunks into one buffer, every frame in it handled.

    Just as correct (a frame split across chunks waits for the rest), but
    one receive per chunk of many records instead of two per record.
    """
    buffer = bytearray()
    async with stream:
        while True:
            try:
                buffer += await stream.receive()
            except anyio.EndOfStream:
                return  # a partial frame left in the buffer counts as lost
            start = 0
            while len(buffer) - start >= 4:
                (length,) = struct.unpack_from(">L", buffer, start)
                end = start + 4 + length
                if end > len(buffer):
                    break
                record = logging.makeLogRecord(pickle.loads(buffer[start + 4 : end]))
                logging.getLogger(record.name).handle(record)
                start = end
            del buffer[:start]


Reader = Callable[[SocketStream], Awaitable[None]]
ISSUE_READER = "exact"  # the baseline the issue's targets are set against
READERS: dict[str, tuple[Reader, str]] = {
    "exact": (_read_pickles, "stdlib SocketHandler (pickle/TCP) + exact-read anyio reader"),
    "chunked": (_read_pickles_chunked, "stdlib SocketHandler (pickle/TCP) + chunked anyio reader"),
}


async def _baseline_burst(children: int, count: int, reader: str) -> _Burst:
    """The same burst through stdlib SocketHandlers in bare children, into a *reader*."""
    read = READERS[reader][0]
    counter = _Counter()
    closed = 0
    all_closed = anyio.Event()

    async def serve(stream: SocketStream) -> None:
        nonlocal closed
        try:
            await read(stream)
        finally:
            closed += 1
            if closed == children:
                all_closed.set()

    started: list[tuple[Any, Connection]] = []
    with _only_handler(counter):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(SocketAttribute.local_port)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(listener.serve, serve)
                cpu = process_time()
                for _ in range(children):
                    # Starting a fork-server child blocks for a few ms; against
                    # a window of seconds that is well under 1 %.
                    reader_end, writer = FORKSERVER.Pipe(duplex=False)
                    process = FORKSERVER.Process(
                        target=_targets.log_burst_to_socket, args=(port, count, writer)
                    )
                    process.start()
                    writer.close()
                    started.append((process, reader_end))
                with anyio.fail_after(RUN_TIMEOUT):
                    for process, _ in started:
                        await anyio.wait_readable(process.sentinel)
                # Each child closed its handler (and its connection) before it
                # exited: EOF on every connection means every record sent is in.
                with anyio.move_on_after(DRAIN_TIMEOUT):
                    await all_closed.wait()
                cpu = process_time() - cpu
                group.cancel_scope.cancel()
            failed = [process.exitcode for process, _ in started if process.exitcode]
            if failed:
                raise RuntimeError(f"baseline children failed with exit codes {failed}")
            loops = [reader_end.recv() for _, reader_end in started]
        finally:
            await listener.aclose()
            for process, reader_end in started:
                reader_end.close()
                if process.exitcode is None:
                    process.kill()
                process.join()
                process.close()
    return _Burst(
        expected=children * count,
        handled=counter.total,
        cpu=cpu,
        first_call=min(loop[0] for loop in loops),
        last_handled=counter.last,
        last_call_done=max(loop[1] for loop in loops),
        others=counter.others,
    )


async def _empty_run_cpu() -> float:
    """The parent's CPU seconds for a supervisor run of one child that logs nothing."""
    with _only_handler(_Counter()):
        cpu = process_time()
        with anyio.fail_after(RUN_TIMEOUT):
            await Supervisor(
                [ChildSpec("burst0", f"{T}:log_burst", args=(0,), restart="temporary")]
            ).run()
        return process_time() - cpu


def _typical_record() -> logging.LogRecord:
    """A record as the burst's log call makes it (in this process)."""
    logger = logging.getLogger(BURST)
    return logger.makeRecord(BURST, logging.INFO, __file__, 1, _targets.BURST_MESSAGE, (7,), None)


def _in_process_cost(count: int, *, beside_busy_child: bool = False) -> float:
    """CPU seconds per record of ``makeLogRecord(d)`` + ``handle``, with the counting handler.

    ``d`` is a record's ``__dict__`` with its message merged, what the
    stdlib ``SocketHandler`` sends: the least any receiver must do. With
    *beside_busy_child*, a child keeps the other core busy meanwhile, as a
    burst's child does beside the pipeline's parent: on this shared VM a
    core's CPU time runs up to 1.8x slower then (measured), and a target
    set against an idle machine would measure the host, not the pipeline.
    """
    record = _typical_record()
    data = dict(record.__dict__, msg=record.getMessage(), args=None)
    logger = logging.getLogger(BURST)
    counter = _Counter()
    with contextlib.ExitStack() as stack:
        if beside_busy_child:
            stack.enter_context(_busy_child())
        stack.enter_context(_only_handler(counter))
        began = process_time()
        for _ in range(count):
            logger.handle(logging.makeLogRecord(data))
        cost = (process_time() - began) / count
    assert counter.total == count
    return cost


@contextlib.contextmanager
def _busy_child() -> Iterator[None]:
    """A bare child logging into a NullHandler on the other core, for as long as this lasts."""
    reader, writer = FORKSERVER.Pipe()
    process = FORKSERVER.Process(target=_targets.log_to_nowhere, args=(writer,))
    process.start()
    try:
        writer.close()
        reader.recv()  # it is busy
        yield
    finally:
        with contextlib.suppress(OSError):
            reader.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        process.close()
        reader.close()


async def _bursts(
    children: int, count: int, samples: int, leftovers: list[int]
) -> dict[str, list[_Burst]]:
    """Interleaved samples of ours and each baseline reader, keyed ``ours`` and by reader."""
    sides = ["ours", *READERS]
    results: dict[str, list[_Burst]] = {side: [] for side in sides}
    for i in range(samples):
        # Rotate the order: no side always runs first, or right after another.
        for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
            if side == "ours":
                burst = await _ours_burst(children, count)
            else:
                burst = await _baseline_burst(children, count, side)
            results[side].append(burst)
            _check_no_leftovers(f"a burst ({side})", leftovers)
    return results


def _burst_rows(
    order: str, children: int, count: int, bursts: dict[str, list[_Burst]]
) -> list[dict[str, Any]]:
    """One row per baseline reader; the samples of ours are the same in each."""
    ours = bursts["ours"]
    lost = max(b.lost for b in ours)
    ours_extra = {
        "ours_lost": [b.lost for b in ours],
        "ours_other_records": [b.others for b in ours],
        "ours_children_loop_rate": [b.emit_rate for b in ours],
        "ours_queued_at_loop_end": [b.queued for b in ours],
        "ours_parent_cpu_s": [b.cpu for b in ours],
    }
    rows = []
    for suffix, (reader, (_, description)) in zip("ab", READERS.items(), strict=True):
        base = bursts[reader]
        base_rate = median([b.rate for b in base])
        # The issue's target is set against the exact-read reader; the
        # chunked one is there to show how much of the gap is that reader's.
        issue_baseline = reader == ISSUE_READER
        line = row(
            f"{order}{suffix}",
            f"{order} records/s, {children} {'child' if children == 1 else 'children'}"
            f" x {count:,} (lost: ours {lost}, baseline {max(b.lost for b in base)})",
            [b.rate for b in ours],
            baseline=description,
            base=[b.rate for b in base],
            unit="rec/s",
            better="higher",
            target=">= 2x baseline, 0 lost" if issue_baseline else "report only",
            # The bound is relative to this run's baseline.
            target_value=2 * base_rate if base_rate and issue_baseline else None,
            extra={
                **ours_extra,
                "baseline_lost": [b.lost for b in base],
                "baseline_children_loop_rate": [b.emit_rate for b in base],
                "baseline_parent_cpu_s": [b.cpu for b in base],
            },
        )
        if lost and issue_baseline:  # a lost record misses the target, whatever the rate
            line["meets_target"] = False
        rows.append(line)
    return rows


# -- figure L3: latency -------------------------------------------------------------


async def _latencies(count: int) -> list[float]:
    handler = _Latency()
    with _only_handler(handler), anyio.fail_after(RUN_TIMEOUT):
        await Supervisor(
            [ChildSpec("paced", f"{T}:log_paced", args=(count, PACE), restart="temporary")]
        ).run()
    return handler.samples


# -- figure L4: the cost of a log call in the child ------------------------------------


async def _emit_rates(count: int, rounds: int) -> dict[str, list[float]]:
    with _only_handler(_Counter()), anyio.fail_after(RUN_TIMEOUT):
        results = await Supervisor(
            [ChildSpec("emit", f"{T}:emit_rates", args=(count, rounds), restart="temporary")]
        ).run()
    rates: dict[str, list[float]] = results["emit"]
    return rates


# -- figures L7 and L8: levels the parent sets ----------------------------------------


def tick_until_debug(limit: int, after: int, announce: bool) -> int:
    """(In a child.) Log a DEBUG tick every TICK s, *after* of them once DEBUG is on.

    If *announce*, it says "running" at WARNING first, which the parent
    handles: the child is connected then, as any child is once it has run
    for 50 ms. Returns how many ticks the parent's levels dropped.
    """
    log = logging.getLogger(LIVE)
    if announce:
        log.warning("running")
    dropped = 0
    for tick in range(limit):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("tick %d", tick)
            after -= 1
            if after <= 0:
                break
        else:
            dropped += 1
        time.sleep(TICK)
    return dropped


class _FirstDebug(logging.Handler):
    """Notes the first DEBUG record of the LIVE logger, and when it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.running = anyio.Event()  # the child said it runs (at WARNING)
        self.arrived = anyio.Event()
        self.created = self.handled = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        # The log server re-injects in the event loop's thread: events may be set.
        if record.name != LIVE:
            return
        if record.levelno == logging.WARNING:
            self.running.set()
        elif record.levelno == logging.DEBUG and not self.arrived.is_set():
            self.created, self.handled = record.created, time.time()
            self.arrived.set()


async def _push_latency(fresh: bool = False) -> tuple[float, float]:
    """Seconds from set_level() to the child's first DEBUG record, and to its arrival.

    To a child connected already, or (*fresh*) to one whose code has just
    begun to run, which has not connected yet.
    """
    handler = _FirstDebug()
    live = logging.getLogger(LIVE)
    limit = int(RUN_TIMEOUT / TICK)
    spec = ChildSpec(
        "live", f"{HERE}:tick_until_debug", args=(limit, 3, not fresh), restart="temporary"
    )
    sup = Supervisor([spec])
    with _only_handler(handler), sup.events() as events, anyio.fail_after(RUN_TIMEOUT):
        live.setLevel(logging.INFO)
        try:
            async with sup:
                if fresh:
                    async for event in events:
                        if event.kind == "started":
                            break
                else:
                    await handler.running.wait()
                pushed = time.time()
                gymnasiarch.logging.set_level(live, logging.DEBUG)
                await handler.arrived.wait()
        finally:
            live.setLevel(logging.NOTSET)
    return handler.created - pushed, handler.handled - pushed


def dropped_rates(count: int, rounds: int) -> dict[str, list[float]]:
    """(In a child.) DEBUG calls/s on DROPPED (the parent's INFO) and on a logger set here."""
    loggers = {"parent": logging.getLogger(DROPPED), "own": logging.getLogger("bench.own")}
    loggers["own"].setLevel(logging.INFO)

    def rate(log: logging.Logger) -> float:
        began = time.perf_counter()
        for i in range(count):
            log.debug(_targets.BURST_MESSAGE, i)
        return count / (time.perf_counter() - began)

    results: dict[str, list[float]] = {name: [] for name in loggers}
    for round_ in range(rounds):
        for name in ("parent", "own") if round_ % 2 else ("own", "parent"):
            results[name].append(rate(loggers[name]))
    return results


async def _dropped_rates(count: int, rounds: int) -> tuple[dict[str, list[float]], int]:
    """The rates of dropped_rates(), and how many DROPPED records reached the parent."""
    arrived: list[logging.LogRecord] = []
    counter = logging.Handler()
    counter.emit = arrived.append  # type: ignore[method-assign]
    dropped = logging.getLogger(DROPPED)
    spec = ChildSpec("drop", f"{HERE}:dropped_rates", args=(count, rounds), restart="temporary")
    with _only_handler(counter), anyio.fail_after(RUN_TIMEOUT):
        dropped.setLevel(logging.INFO)
        try:
            results = await Supervisor([spec]).run()
        finally:
            dropped.setLevel(logging.NOTSET)
    rates: dict[str, list[float]] = results["drop"]
    return rates, sum(record.name == DROPPED for record in arrived)


# -- figure L6: the wire format ------------------------------------------------------


def _per_item(work: Callable[[], object], items: int, repeat: int) -> float:
    """Seconds per item of *work*, which handles *items* items per call."""
    began = perf_counter()
    for _ in range(repeat):
        work()
    return (perf_counter() - began) / (repeat * items)


def _wire_costs(samples: int, repeat: int) -> dict[str, list[float]]:
    """Seconds per record, encode + decode, per codec and form (``json_one``, ...)."""
    # As our client and server do it: one encoder made once, compact, no ASCII escapes.
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=repr)
    record = _typical_record()
    data = record_to_dict(record)
    rows = [record_to_row(record) for _ in range(WIRE_BATCH)]
    assert len(rows[0]) == len(ROW)

    def json_one() -> object:
        return json.loads(encoder.encode(data).encode())

    def json_batch() -> object:
        # The child encodes each row as it is logged; the parent decodes a
        # whole frame of them at once (see _wire.records_frame).
        items = [encoder.encode(r).encode() for r in rows]
        return json.loads(b'{"t":"records","r":[' + b",".join(items) + b"]}")

    codecs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "json": (json_one, json_batch)
    }
    try:
        import msgpack  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        pass
    else:
        packer = msgpack.Packer()
        # {"t": "records", "r": [...]}: a map of 2, then an array32 of WIRE_BATCH.
        batch_header = b"\x82\xa1t\xa7records\xa1r\xdd" + struct.pack(">I", WIRE_BATCH)

        def msgpack_one() -> object:
            return msgpack.unpackb(packer.pack(data))

        def msgpack_batch() -> object:
            # The same shape: rows packed one by one, joined under one header,
            # the frame decoded at once.
            items = [packer.pack(r) for r in rows]
            return msgpack.unpackb(batch_header + b"".join(items))

        assert msgpack_batch() == json_batch()
        codecs["msgpack"] = (msgpack_one, msgpack_batch)
    costs: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(samples):
        for name, (one, batch) in codecs.items():
            costs[f"{name}_one"].append(_per_item(one, 1, repeat))
            costs[f"{name}_batch"].append(_per_item(batch, WIRE_BATCH, max(1, repeat // 100)))
    return dict(costs)


async def _level_rows(
    quick: bool, count: int, rounds: int, sent_rate: list[float]
) -> list[dict[str, Any]]:
    """Figures L8 and L7: what the parent's levels cost a child, and how fast a change arrives."""
    rows: list[dict[str, Any]] = []
    _progress(f"L8: dropped log calls in the child ({rounds} rounds of {count})")
    dropped, arrived = await _dropped_rates(count, rounds)
    rows.append(
        row(
            "L8",
            "L8 DEBUG calls/s in the child, the parent's logger at INFO",
            dropped["parent"],
            baseline="the same loop, the level set in the child",
            base=dropped["own"],
            unit="rec/s",
            better="higher",
            target=f"report only (arrived in the parent: {arrived})",
            extra={"arrived_in_parent": arrived, "sent_records_rate": sent_rate},
        )
    )

    pushes = 5 if quick else 15
    _progress(f"L7: a level pushed to a running child ({pushes} samples)")
    latencies_push = [await _push_latency() for _ in range(pushes)]
    latencies_fresh = [await _push_latency(fresh=True) for _ in range(pushes)]
    rows.append(
        row(
            "L7",
            "L7 set_level() in the parent -> the child's first record at the new level",
            [in_child for in_child, _ in latencies_push],
            baseline="-",
            target="<= 100 ms",
            target_value=0.1,
            extra={
                "until_handled_in_parent": [in_parent for _, in_parent in latencies_push],
                "tick_s": TICK,
            },
        )
    )
    rows.append(
        row(
            "L7b",
            "L7 the same, to a child that has just started (not connected yet)",
            [in_child for in_child, _ in latencies_fresh],
            baseline="-",
            target="<= 100 ms",
            target_value=0.1,
            extra={"until_handled_in_parent": [in_parent for _, in_parent in latencies_fresh]},
        )
    )
    return rows


# -- entry point ----------------------------------------------------------------------


async def _warm_up() -> None:
    """Start the shared fork server as gymnasiarch does, so it preloads what all sides use."""
    global _BEGAN  # noqa: PLW0603 - the progress clock starts with the run
    _BEGAN = perf_counter()
    _progress("warming up (starts the shared fork server)")
    with _only_handler(_Counter()):
        await Supervisor(
            [ChildSpec("warm", f"{T}:log_burst", args=(10,), restart="temporary")]
        ).run()


async def _collect(quick: bool) -> list[dict[str, Any]]:
    count = 5_000 if quick else 20_000
    samples = 3 if quick else 5
    # L1 moves 80,000 records a sample through three pipelines, the slowest
    # at ~15,000 records/s: four samples keep a full run within ~90 s.
    samples_l1 = 3 if quick else 4
    leftovers: list[int] = []
    await _warm_up()
    rows: list[dict[str, Any]] = []

    _progress(f"L1: {CHILDREN} children x {count} records ({samples_l1} samples a side)")
    bursts4 = await _bursts(CHILDREN, count, samples_l1, leftovers)
    rows += _burst_rows("L1", CHILDREN, count, bursts4)

    _progress(f"L2: 1 child x {count} records ({samples} samples a side)")
    bursts1 = await _bursts(1, count, samples, leftovers)
    rows += _burst_rows("L2", 1, count, bursts1)

    _progress(f"L5: parent CPU per record ({samples} samples)")
    empty = [await _empty_run_cpu() for _ in range(samples)]
    fixed = median(empty) or 0.0

    def per_record(bursts: list[_Burst]) -> list[float]:
        return [b.cpu / b.handled for b in bursts]

    # Interleaved, so that ours and both in-process figures share the noise.
    ours_l5: list[_Burst] = []
    beside_busy: list[float] = []
    alone: list[float] = []
    for _ in range(samples):
        ours_l5.append(await _ours_burst(1, count))
        beside_busy.append(_in_process_cost(count, beside_busy_child=True))
        alone.append(_in_process_cost(count))
    _check_no_leftovers("L5", leftovers)
    beside_busy_median = median(beside_busy) or 0.0
    ours_cpu = per_record(ours_l5)
    rows.append(
        row(
            "L5a",
            "L5 parent CPU per forwarded record (1 child)",
            ours_cpu,
            baseline="makeLogRecord + handle, in process, a busy child beside",
            base=beside_busy,
            unit="CPU-s",
            target="<= 1.2x in-process",
            target_value=1.2 * beside_busy_median if beside_busy_median else None,
            extra={
                # A run's fixed cost (start, stop, handshakes), spread over its records.
                "empty_run_cpu_s": empty,
                "ours_net_of_empty_run": [(b.cpu - fixed) / b.handled for b in ours_l5],
                "ours_4_children": per_record(bursts4["ours"]),
            },
        )
    )
    rows.append(
        row(
            "L5d",
            "L5 parent CPU per forwarded record (1 child)",
            ours_cpu,
            baseline="makeLogRecord + handle, in process, the other core idle",
            base=alone,
            unit="CPU-s",
            target="report only",
        )
    )
    for suffix, (reader, (_, description)) in zip("bc", READERS.items(), strict=True):
        rows.append(
            row(
                f"L5{suffix}",
                "L5 parent CPU per forwarded record (1 child)",
                ours_cpu,
                baseline=f"the L2 pipeline: {description}",
                base=per_record(bursts1[reader]),
                unit="CPU-s",
                target="report only",
                extra={
                    "ours_4_children": per_record(bursts4["ours"]),
                    "baseline_4_children": per_record(bursts4[reader]),
                },
            )
        )

    paced = 25 if quick else 50
    _progress(f"L3: latency of one record, {paced} records {PACE * 1e3:g} ms apart")
    latencies = await _latencies(paced)
    ordered = sorted(latencies)
    rows.append(
        row(
            "L3",
            "L3 latency, child's log call -> parent's handler (idle)",
            latencies,
            baseline="-",
            target="<= 5 ms",
            target_value=0.005,
            extra={
                "lost": paced - len(latencies),
                # The first record also waits for the connection and its handshake.
                "first_record": latencies[0] if latencies else None,
                "p90": ordered[int(0.9 * (len(ordered) - 1))] if ordered else None,
                "max": ordered[-1] if ordered else None,
            },
        )
    )

    rounds = 3 if quick else 5
    _progress(f"L4: log calls in the child ({rounds} rounds of {count})")
    rates = await _emit_rates(count, rounds)
    rows.append(
        row(
            "L4",
            "L4 log calls/s in the child, our handler installed",
            rates["ours"],
            baseline="the same loop into a NullHandler",
            base=rates["null"],
            unit="rec/s",
            better="higher",
            target="report only",
            extra={
                # Where the time goes: our encoding alone (record_to_row +
                # JSON), without the queue, its lock and the sender thread.
                "encode_only_rate": rates["encode"],
                "microseconds_per_call": {
                    name: 1e6 / (median(values) or float("nan")) for name, values in rates.items()
                },
            },
        )
    )
    rows += await _level_rows(quick, count, rounds, rates["ours"])
    _check_no_leftovers("the other figures", leftovers)

    _progress("L6: wire format, encode + decode")
    # Many short samples, codecs interleaved: this figure is pure CPU, and a
    # shared machine's speed can change from one second to the next.
    wire = _wire_costs(samples=9 if quick else 21, repeat=1_000)
    have_msgpack = "msgpack_one" in wire
    for order, form, what in (
        ("L6a", "one", "one record_to_dict() dict"),
        ("L6b", "batch", f"rows, {WIRE_BATCH} a frame"),
    ):
        rows.append(
            row(
                order,
                f"L6 stdlib JSON encode + decode per record, {what}",
                wire[f"json_{form}"],
                baseline="msgpack",
                base=wire.get(f"msgpack_{form}"),
                # Without a measured baseline the table shows no baseline name: say why here.
                target="report only" if have_msgpack else "msgpack not installed: not measured",
            )
        )
    for line in rows:
        line["extra"]["leftover_processes"] = leftovers
    _progress("done")
    return rows


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """Run every figure; return one report row per (figure, baseline)."""
    return anyio.run(_collect, quick)
