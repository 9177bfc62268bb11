"""The supervisor's figures from its issue, each side by side with bare multiprocessing.

Every figure is measured in the same run as its baseline, samples of the two
interleaved, and reported as medians. Baselines use multiprocessing's own
fork server, given the same preload as gymnasiarch's (its modules and
``benchmarks._targets``) -- the issue's "forkserver with an explicit,
correct preload" -- so both sides fork from servers that hold the same code.

Figures (targets from the issue):

1. SIGKILL a running child -> the supervisor's ``exited`` event (<= 3 ms);
   baselines: a pidfd awaited with ``anyio.wait_readable``, and a 0.1 s
   ``is_alive()`` polling loop.
2. SIGKILL -> the restarted child's ``ready`` event (<= 10 ms).
3. ``start_child()`` on a running supervisor -> the child's code runs
   (<= 5 ms); baselines: a bare forkserver and a bare spawn ``Process`` with
   the same target. Reported too: a whole ``Supervisor([...]).run()`` of one
   child (signal handlers, task group and all) until its code runs.
4. 50 children started in parallel, until all are ready (<= 0.25 s).
5. The supervisor's CPU time while 50 children sit idle for 5 s (<= 0.01 s).
6. Orderly shutdown of 50 cooperative children (<= 100 ms).
7. Orderly shutdown of 50 children, 10 of which ignore SIGTERM, with a 1 s
   grace period (<= 1.5 s); the baseline is palaestrAI's serial arithmetic.
8. Memory (PSS) per idle child; reported, no target.

Figures 2, 3 and 4 are measured for each kind of target (issue 13): a plain
``def``, an ``async def`` run on asyncio and one run on trio (where trio is
installed), each against a baseline that runs the same target the same way
(``anyio.run`` on the same backend, in a bare child of a fork server with
the same preload). Figure 3 also sets each async kind against the sync kind
of the same run (target: <= 1.2x).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import resource
import signal
import statistics
import time
from collections.abc import Callable
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from pathlib import Path
from time import perf_counter
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream

from benchmarks import _targets
from benchmarks._report import median as _median
from benchmarks._report import progress
from benchmarks._report import row as _row
from gymnasiarch import ChildSpec, Event, Supervisor
from gymnasiarch._process.run import PRELOAD
from gymnasiarch._spec import ASYNC_BACKENDS

T = "benchmarks._targets"
FORKSERVER = multiprocessing.get_context("forkserver")
SPAWN = multiprocessing.get_context("spawn")
MANY = 50  # children in figures 4 to 8
STUBBORN_EVERY = 5  # figure 7: every 5th child ignores SIGTERM (10 of 50)
GRACE = 1.0  # figure 7: ChildSpec(shutdown=...)
POLL_INTERVAL = 0.1  # the polling baseline of figure 1
SETTLE = 0.02  # pause before a timed kill, so the previous sample's work is done
IDLE_REFERENCE = 5.0  # figure 5 reports CPU seconds per this many idle seconds
# palaestrAI stops its processes one after another: a join timeout for each
# stubborn one, then SIGKILL; the arithmetic, not a measurement.
PALAESTRAI_STUBBORN_S = 6.0
PALAESTRAI_COOPERATIVE_S = 3.0
#: The kinds of target of figures 2-4: "def", then "async/<backend>" for
#: each of anyio's backends this machine has.
KINDS = (
    "def",
    *(
        f"async/{backend}"
        for backend in ASYNC_BACKENDS
        if backend in anyio.get_available_backends()
    ),
)
ASYNC_START_RATIO = 1.2  # figure 3: an async child's start <= 1.2x a sync child's

Process = Any  # multiprocessing's context-specific Process classes share no public base


# -- reporting ----------------------------------------------------------------


def _progress(text: str) -> None:
    progress("bench_supervisor", text)


# -- helpers ------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _memory(pid: int) -> tuple[int, int]:
    """PSS and USS of *pid* in bytes, from ``/proc/<pid>/smaps_rollup``."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0]) * 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields["Pss"], uss


def _mean_memory(pids: list[int]) -> tuple[float, float]:
    pss, uss = zip(*(_memory(pid) for pid in pids), strict=True)
    return statistics.fmean(pss), statistics.fmean(uss)


def _start_bare(
    context: Any, target: Callable[..., None], *args: object
) -> tuple[Process, Connection]:
    """Start a bare multiprocessing child that talks back over a one-way pipe."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(writer, *args))
    process.start()
    writer.close()
    return process, reader


def _backend(kind: str) -> str | None:
    """The event loop of a kind of target: None for ``def``, else its anyio backend."""
    return None if kind == "def" else kind.removeprefix("async/")


def _start_bare_kind(context: Any, kind: str, sync_target: str) -> tuple[Process, Connection]:
    """A bare child running *sync_target* of benchmarks._targets, or its async kind."""
    backend = _backend(kind)
    if backend is None:
        return _start_bare(context, getattr(_targets, sync_target))
    return _start_bare(context, _targets.run_async, f"async_{sync_target}", backend)


def _spec_kind(kind: str, name: str, sync_target: str, **options: Any) -> ChildSpec:
    """Our child running *sync_target* of benchmarks._targets, or its async kind."""
    backend = _backend(kind)
    if backend is None:
        return ChildSpec(name, f"{T}:{sync_target}", **options)
    return ChildSpec(name, f"{T}:async_{sync_target}", async_backend=backend, **options)  # type: ignore[arg-type]


def _label(figure: str, kind: str) -> str:
    return figure if kind == "def" else f"{figure} [{kind}]"


async def _recv(conn: Connection) -> Any:
    await anyio.wait_readable(conn.fileno())
    return conn.recv()


async def _reap(process: Process, conn: Connection) -> None:
    """Stop (if need be) and reap a bare child without blocking the event loop."""
    conn.close()
    if process.exitcode is None:
        process.kill()
        with anyio.fail_after(10):
            await anyio.wait_readable(process.sentinel)
    process.join()
    process.close()


async def _next_event(
    events: ObjectReceiveStream[Event], kind: str, child: str, pid: int | None = None
) -> Event:
    with anyio.fail_after(10):
        async for event in events:
            if event.kind == kind and event.child == child and pid in (None, event.pid):
                return event
    raise RuntimeError(f"the event stream ended before a {kind!r} event of {child!r}")


# -- figures 1 and 2: death detection and restart ------------------------------


async def _bare_kill_pidfd() -> float:
    process, conn = _start_bare(FORKSERVER, _targets.signal_then_sleep)
    try:
        await _recv(conn)
        pidfd = os.pidfd_open(process.pid)
        try:
            await anyio.sleep(SETTLE)
            t0 = perf_counter()
            os.kill(process.pid, signal.SIGKILL)
            await anyio.wait_readable(pidfd)
            t1 = perf_counter()
        finally:
            os.close(pidfd)
    finally:
        await _reap(process, conn)
    return t1 - t0


async def _bare_kill_polling() -> float:
    process, conn = _start_bare(FORKSERVER, _targets.signal_then_sleep)
    detected = 0.0

    async def poll() -> None:
        nonlocal detected
        while process.is_alive():  # noqa: ASYNC110 - polling is the baseline
            await anyio.sleep(POLL_INTERVAL)
        detected = perf_counter()

    try:
        await _recv(conn)
        async with anyio.create_task_group() as group:
            group.start_soon(poll)
            # Kill at a random phase of the polling loop, as a real crash would.
            await anyio.sleep(POLL_INTERVAL + random.uniform(0, POLL_INTERVAL))
            t0 = perf_counter()
            os.kill(process.pid, signal.SIGKILL)
    finally:
        await _reap(process, conn)
    return detected - t0


async def _bare_restart(kind: str) -> float:
    """SIGKILL a bare child; seconds until a new one, started on the death, says ready."""
    process, conn = _start_bare_kind(FORKSERVER, kind, "signal_then_sleep")
    try:
        await _recv(conn)
        pidfd = os.pidfd_open(process.pid)
        try:
            await anyio.sleep(SETTLE)
            t0 = perf_counter()
            os.kill(process.pid, signal.SIGKILL)
            await anyio.wait_readable(pidfd)
            again, again_conn = _start_bare_kind(FORKSERVER, kind, "signal_then_sleep")
            try:
                await _recv(again_conn)
                t1 = perf_counter()
            finally:
                await _reap(again, again_conn)
        finally:
            os.close(pidfd)
    finally:
        await _reap(process, conn)
    return t1 - t0


async def _bench_kill_kind(kind: str, samples: int, poll_samples: int) -> list[dict[str, Any]]:
    _progress(f"figures 1-2 [{kind}]: kill -> exited / ready again ({samples} samples)")
    spec = _spec_kind(kind, "victim", "ready_then_sleep", ready_timeout=10.0)
    sup = Supervisor([spec], max_restarts=1_000_000, max_seconds=1.0)
    detect: list[float] = []
    rerun: list[float] = []
    pidfd: list[float] = []
    bare_rerun: list[float] = []
    polling: list[float] = []
    with sup.events() as events:
        async with sup:
            pid = (await _next_event(events, "ready", "victim")).pid
            for _ in range(samples):
                if kind == "def":
                    pidfd.append(await _bare_kill_pidfd())
                bare_rerun.append(await _bare_restart(kind))
                assert pid is not None
                await anyio.sleep(SETTLE)
                t0 = perf_counter()
                os.kill(pid, signal.SIGKILL)
                await _next_event(events, "exited", "victim", pid)
                t1 = perf_counter()
                pid = (await _next_event(events, "ready", "victim")).pid
                t2 = perf_counter()
                detect.append(t1 - t0)
                rerun.append(t2 - t0)
            if kind == "def":
                _progress(f"figure 1: polling baseline ({poll_samples} samples)")
                for _ in range(poll_samples):
                    polling.append(await _bare_kill_polling())
    rows = [
        _row(
            "2" if kind == "def" else f"2 {kind}",
            _label("2 SIGKILL -> restarted child 'ready'", kind),
            rerun,
            baseline="stdlib forkserver: pidfd, new Process, pipe",
            base=bare_rerun,
            target="<= 10 ms",
            target_value=0.010,
        )
    ]
    if kind != "def":
        return rows
    figure1 = "1 SIGKILL -> 'exited' event"
    return [
        _row(
            "1a",
            figure1,
            detect,
            baseline="stdlib forkserver + pidfd/wait_readable",
            base=pidfd,
            target="<= 3 ms",
            target_value=0.003,
        ),
        _row(
            "1b",
            figure1,
            detect,
            baseline=f"stdlib is_alive() polled every {POLL_INTERVAL:g} s",
            base=polling,
            target="<= 3 ms",
            target_value=0.003,
        ),
        *rows,
    ]


async def _bench_kill(samples: int, poll_samples: int) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        rows += await _bench_kill_kind(kind, samples, poll_samples)
    return rows


# -- figure 3: one child, start until its code runs ----------------------------


def _started_at(message: Any, kind: str) -> float:
    """The time a child sent; an async one's must have run on its kind's event loop."""
    backend = _backend(kind)
    if backend is None:
        return float(message)
    started, loop = message
    if loop != backend:
        raise RuntimeError(f"a child of kind {kind} ran on {loop}, not {backend}")
    return float(started)


def _bare_start_delay(context: Any, kind: str = "def") -> float:
    """Seconds from creating a bare Process until its target runs (blocking; nothing else runs)."""
    t0 = time.time()
    process, conn = _start_bare_kind(context, kind, "send_time")
    started = _started_at(conn.recv(), kind)
    conn.close()
    process.join()
    process.close()
    return started - t0


async def _whole_run_delay() -> float:
    """Seconds from ``Supervisor(...)`` to its one child's code running, via ``run()``."""
    t0 = time.time()
    sup = Supervisor([ChildSpec("c", f"{T}:report_time", restart="temporary")])
    results = await sup.run()
    started: float = results["c"]
    return started - t0


async def _start_child_delay(sup: Supervisor, name: str, kind: str) -> float:
    """Seconds from ``start_child()`` on a running supervisor until the child's code runs."""
    reader, writer = FORKSERVER.Pipe(duplex=False)
    try:
        t0 = time.time()
        await sup.start_child(
            _spec_kind(kind, name, "send_time", args=(writer,), restart="temporary")
        )
        writer.close()
        return _started_at(await _recv(reader), kind) - t0
    finally:
        writer.close()
        reader.close()


async def _bench_start_one(samples: int, spawn_samples: int) -> list[dict[str, Any]]:
    _progress(
        f"figure 3: start one child ({samples} samples of {', '.join(KINDS)}; "
        f"spawn {spawn_samples})"
    )
    ours: dict[str, list[float]] = {kind: [] for kind in KINDS}
    fork: dict[str, list[float]] = {kind: [] for kind in KINDS}
    whole_run: list[float] = []
    spawn: list[float] = []
    # A running supervisor (its fork server warm, its signal handlers set)
    # starts one more child, the same target as the baselines; the kinds
    # take turns, so that each sees the same load.
    async with Supervisor([ChildSpec("idle", f"{T}:ready_then_sleep")]) as sup:
        for i in range(samples):
            if i < spawn_samples:
                spawn.append(_bare_start_delay(SPAWN))
            for k, kind in enumerate(KINDS):
                fork[kind].append(_bare_start_delay(FORKSERVER, kind))
                ours[kind].append(await _start_child_delay(sup, f"c{i}-{k}", kind))
    for _ in range(samples):
        whole_run.append(await _whole_run_delay())
    figure = "3 start_child() -> its code runs (warm)"
    extra = {"ours_whole_run_median": _median(whole_run), "ours_whole_run": whole_run}
    rows = [
        _row(
            "3a",
            figure,
            ours["def"],
            baseline="stdlib forkserver Process (warm)",
            base=fork["def"],
            target="<= 5 ms",
            target_value=0.005,
            extra=extra,
        ),
        _row(
            "3b",
            figure,
            ours["def"],
            baseline="stdlib spawn Process",
            base=spawn,
            target="<= 5 ms",
            target_value=0.005,
        ),
        _row(
            "3c",
            "3 Supervisor(...).run() of one child -> its code runs",
            whole_run,
            baseline="stdlib forkserver Process (warm)",
            base=fork["def"],
            target="report only",
        ),
    ]
    sync_median = _median(ours["def"]) or 0.0
    for kind in KINDS[1:]:
        rows += [
            _row(
                f"3a {kind}",
                _label(figure, kind),
                ours[kind],
                baseline=f"stdlib forkserver Process, anyio.run on {_backend(kind)}",
                base=fork[kind],
                target="<= 5 ms",
                target_value=0.005,
            ),
            _row(
                f"3d {kind}",
                _label("3 async start vs sync start, same run", kind),
                ours[kind],
                baseline="ours, a def target",
                base=ours["def"],
                target=f"<= {ASYNC_START_RATIO:g}x def",
                target_value=ASYNC_START_RATIO * sync_median,
            ),
        ]
    return rows


# -- figures 4, 5, 6 and 8: fifty children -------------------------------------


async def _idle_cpu(seconds: float) -> float:
    """This process's CPU seconds while it sleeps *seconds*, scaled to IDLE_REFERENCE s."""
    before = _cpu_seconds()
    await anyio.sleep(seconds)
    return (_cpu_seconds() - before) * IDLE_REFERENCE / seconds


async def _bench_many(samples: int, idle: float, kind: str = "def") -> list[dict[str, Any]]:
    figures = "4-6, 8" if kind == "def" else f"4 [{kind}]"
    _progress(f"figures {figures}: {MANY} children ({samples} samples, idle {idle:g} s)")
    specs = [
        _spec_kind(kind, f"c{i:02d}", "ready_then_sleep", ready_timeout=30.0) for i in range(MANY)
    ]
    start_ours: list[float] = []
    stop_ours: list[float] = []
    start_base: list[float] = []
    stop_base: list[float] = []
    cpu_ours: list[float] = []
    cpu_base: list[float] = []
    memory: dict[str, float] = {}
    for i in range(samples):
        first = i == 0 and kind == "def"  # the other kinds: figure 4 only
        # Baseline: bare forkserver Processes, each says "ready" over its pipe.
        t0 = perf_counter()
        bare = [_start_bare_kind(FORKSERVER, kind, "signal_then_sleep") for _ in range(MANY)]
        for _, conn in bare:
            conn.recv()
        start_base.append(perf_counter() - t0)
        await anyio.sleep(0.2)
        if first:
            memory["base_pss"], memory["base_uss"] = _mean_memory([p.pid for p, _ in bare])
            cpu_base.append(await _idle_cpu(idle))
        t0 = perf_counter()
        for process, _ in bare:
            process.terminate()
        for process, conn in bare:
            process.join()
            process.close()
            conn.close()
        stop_base.append(perf_counter() - t0)

        sup = Supervisor(specs, start_order="parallel")
        t0 = perf_counter()
        async with sup:
            start_ours.append(perf_counter() - t0)
            await anyio.sleep(0.2)
            if first:
                pids = [c.pid for c in sup.which_children() if c.pid is not None]
                memory["ours_pss"], memory["ours_uss"] = _mean_memory(pids)
                memory["ours_children_measured"] = len(pids)
                cpu_ours.append(await _idle_cpu(idle))
            t0 = perf_counter()
        stop_ours.append(perf_counter() - t0)
    idle_note = {"idle_seconds": idle, "scaled_to_seconds": IDLE_REFERENCE}
    start_row = _row(
        "4" if kind == "def" else f"4 {kind}",
        _label(f"4 start {MANY} children (parallel) until all ready", kind),
        start_ours,
        baseline=f"{MANY} stdlib forkserver Processes + pipe",
        base=start_base,
        target="<= 0.25 s",
        target_value=0.25,
    )
    if kind != "def":
        return [start_row]
    return [
        start_row,
        _row(
            "5",
            f"5 parent CPU, {MANY} idle children, {IDLE_REFERENCE:g} s",
            cpu_ours,
            baseline=f"{MANY} idle stdlib Processes, parent asleep",
            base=cpu_base,
            unit="CPU-s",
            target="<= 0.01 CPU-s",
            target_value=0.01,
            extra=idle_note,
        ),
        _row(
            "6",
            f"6 orderly shutdown of {MANY} cooperative children",
            stop_ours,
            baseline="stdlib terminate() all, then join() all",
            base=stop_base,
            target="<= 100 ms",
            target_value=0.100,
        ),
        _row(
            "8",
            "8 memory (PSS) per idle child",
            [memory["ours_pss"]],
            baseline="stdlib forkserver Process",
            base=[memory["base_pss"]],
            unit="B",
            target="report only",
            extra={
                "ours_uss": memory["ours_uss"],
                "baseline_uss": memory["base_uss"],
                "children_measured": memory["ours_children_measured"],
            },
        ),
    ]


# -- figure 7: shutdown with stubborn children ----------------------------------


async def _bench_stubborn(samples: int) -> list[dict[str, Any]]:
    _progress(f"figure 7: shutdown with stubborn children ({samples} samples)")
    specs = [
        ChildSpec(
            f"c{i:02d}",
            f"{T}:ignore_sigterm_then_sleep"
            if i % STUBBORN_EVERY == STUBBORN_EVERY - 1
            else f"{T}:ready_then_sleep",
            ready_timeout=30.0,
            shutdown=GRACE,
        )
        for i in range(MANY)
    ]
    stubborn = MANY // STUBBORN_EVERY
    cooperative = MANY - stubborn
    stop: list[float] = []
    for _ in range(samples):
        async with Supervisor(specs, start_order="parallel"):
            await anyio.sleep(0.2)
            t0 = perf_counter()
        stop.append(perf_counter() - t0)
    model = stubborn * PALAESTRAI_STUBBORN_S + cooperative * PALAESTRAI_COOPERATIVE_S
    return [
        _row(
            "7",
            f"7 shutdown of {MANY} children, {stubborn} ignore SIGTERM, grace {GRACE:g} s",
            stop,
            baseline=(
                f"palaestrAI serial model {stubborn}x{PALAESTRAI_STUBBORN_S:g} s"
                f" + {cooperative}x{PALAESTRAI_COOPERATIVE_S:g} s (not measured)"
            ),
            model=model,
            target="<= 1.5 s",
            target_value=1.5,
        )
    ]


# -- entry point ----------------------------------------------------------------


async def _warm_up() -> None:
    """Start both fork servers with the same preload, and warm every start method."""
    _progress("warming up (starts the fork servers)")
    # Another benchmark module may have started multiprocessing's fork
    # server with other modules: the baseline's must preload what ours does.
    forkserver._forkserver._stop()  # type: ignore[attr-defined]  # private; stable 3.8-3.13
    FORKSERVER.set_forkserver_preload([*PRELOAD, T])
    await _whole_run_delay()
    for kind in KINDS:
        _bare_start_delay(FORKSERVER, kind)
    _bare_start_delay(SPAWN)


async def _collect(quick: bool) -> list[dict[str, Any]]:
    fast = 8 if quick else 40
    await _warm_up()
    rows = await _bench_kill(fast, poll_samples=2 if quick else 5)
    rows += await _bench_start_one(fast, spawn_samples=3 if quick else 10)
    for kind in KINDS:
        rows += await _bench_many(
            2 if quick else 5, idle=2.0 if quick else IDLE_REFERENCE, kind=kind
        )
    rows += await _bench_stubborn(1 if quick else 2)
    return sorted(rows, key=lambda row: row["order"])


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """Run every figure; return one report row per (figure, baseline)."""
    # Every kill in figures 1-2 would log a warning; the cost of writing it to
    # stderr is not what is measured here.
    logging.getLogger("gymnasiarch").setLevel(logging.ERROR)
    return anyio.run(_collect, quick)
