"""The Ray backend's figures from its issue, each side by side with bare Ray.

One local cluster serves the whole module (loopback only, two CPUs, no
dashboard, no usage statistics); it is started in :func:`collect` and shut
down at its end. Every figure is measured in the same run as its baseline,
samples of the two interleaved (the order alternating), and reported as
medians. Without Ray installed the module reports nothing.

The workers find ``benchmarks`` through ``PYTHONPATH``, set in this
process's environment while the cluster starts (its daemons, and so its
workers, inherit it). A ``runtime_env`` with the same variable would do
too, but then no worker Ray started in advance fits an actor, and every
actor waits for a worker of its own (about 1.2-1.6 s here, against 0.5 s):
that would slow both sides alike and hide what the backend adds.

Ray starts a few idle workers with the cluster; an actor created while one
is idle gets it at once (~30 ms), later ones wait for a fresh worker
(~0.5 s). The warm-up uses those up, so every sample, ours or bare, pays
for a fresh worker; the extras say how many did not (``prestarted``).

Figures (targets from the issue: no more than 1.2x bare Ray):

R1. Start one child until its code runs and it said ready: from entering
    ``Supervisor([child], backend=RayBackend())`` until ``__aenter__``
    returns. Baseline: create a bare actor until a trivial method call
    returns. The extras time the phases of ours, from ``/proc`` (10 ms
    resolution): the actor's worker process created, the child's process
    created (inside the actor), the child's code runs (a record's
    ``created``), the supervisor hears it is ready; and a third side, a
    bare actor whose first call imports our host actor's module, tells
    what that import adds to the actor's start.
R2. A kill noticed. The baseline is the issue's, Ray's own
    ``ActorDiedError``: SIGKILL of a bare actor's worker (the process that
    runs the user's code on bare Ray) -> a pending call raises it. Ours:
    SIGKILL of the child (the process that runs the user's code with us)
    -> the supervisor's ``exited`` event (R2a); and SIGKILL of the child's
    host actor's worker (a lost host) -> ``exited`` (R2b). Reported too
    (R2c): the child's SIGKILL beside ``ray.kill(actor)`` -> a pending
    call raises ``RayActorError``, an orderly kill through Ray's control
    plane that never loses a process. One permanent child serves R2 and
    R3: the ``exited`` event comes before the decision to restart.
R3. SIGKILL of the child -> the restarted child's ``ready`` event.
    Baseline: ``ray.kill`` -> ``RayActorError`` on a pending call -> a new
    actor's first call returns (like ours, it notices before it restarts;
    the noticing is a few ms of the 0.5 s). Ours restarts the child in the
    actor that hosted it (kept across its restarts): no new worker to wait
    for. Reported too: the lost host -> restarted ``ready``, in a new actor.
R4. Records/s from 4 children logging 20,000 records each, from the first
    child's first log call until the last record reached the driver, and
    how many were lost (0). Baseline: bare Ray's own log path, 4 bare
    actors logging the same records to stderr, which Ray's log monitor
    tails and forwards to the driver (counted there, not printed; lines
    not forwarded within 10 s are lost). Reported too: the same children
    on the default ``LocalBackend``, and our rate over the time from
    entering the supervisor, start-up and all. Each Ray child (and bare
    actor) asks for half a CPU, so that all four run at once on the
    2-CPU cluster, as they do locally on the 2 cores. On Ray the children
    still start apart (each waits for a worker of its own): the extras say
    by how much, as it counts in a short burst's rate.

Timings are reported, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream

from benchmarks import _targets, ray_targets
from benchmarks._report import median, progress, row
from gymnasiarch import ChildSpec, Event, RayBackend, Supervisor
from gymnasiarch.ray_backend import RayChildRun

T = "benchmarks._targets"
RT = "benchmarks.ray_targets"
BURST = _targets.BURST_LOGGER
REPO = str(Path(__file__).resolve().parent.parent)  # the workers import benchmarks from here
NUM_CPUS = 2
CHILDREN = 4  # figure R4
SETTLE = 0.3  # pause before a timed step, so the previous step's work (a dying worker) is done
TIMEOUT = 60.0  # no step takes a tenth of this; a hang fails loudly instead
PENDING = 3600.0  # seconds of the call pending on a bare actor when it is killed
TARGET = 1.2  # the issue: no more than 1.2x bare Ray
HOST_MODULE = "gymnasiarch._backends.ray_host"  # the module of our host actor's class
PRESTARTED = -0.02  # a worker created this long before the start was waiting idle
LINES_PATIENCE = 10.0  # seconds Ray may take to forward a bare burst's last line
# Seconds before each burst of R4: four actors ended by the burst before
# leave Ray starting workers for a while, which would slow the next burst.
BURST_SETTLE = 1.5

_BEGAN = perf_counter()


def _progress(text: str) -> None:
    progress("bench_ray", f"{perf_counter() - _BEGAN:5.1f} s  {text}")


# -- processes, from /proc ---------------------------------------------------------


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command (field 3 on)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _parent(pid: int) -> int:
    return int(_stat(pid)[1])


def _host_pid(sup: Supervisor, name: str) -> int:
    """The pid of the Ray worker hosting *name*'s current run."""
    run = sup._children[name].run
    assert isinstance(run, RayChildRun)
    assert run.host_pid is not None
    return run.host_pid


def _created(pid: int) -> float:
    """When *pid* was created, as a ``time.time()`` (to a clock tick, 10 ms)."""
    ticks = int(_stat(pid)[19])  # starttime: clock ticks since boot
    since = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - since


def _ray_descendants() -> dict[int, str]:
    """Processes under this one that belong to Ray or to a child of ours."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                parents[int(entry.name)] = _parent(int(entry.name))
                commands[int(entry.name)] = command
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier and p not in found}
        found |= frontier
    marks = ("ray", "gcs_server", "gymnasiarch[", "ChildHost")
    # multiprocessing's helpers stay by design (Ray's import put its path in their sys.path).
    helpers = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
    return {
        p: commands[p]
        for p in found
        if any(mark in commands[p] for mark in marks)
        and not any(helper in commands[p] for helper in helpers)
    }


def _leftovers(timeout: float) -> list[str]:
    """What of Ray and of our children is still running *timeout* seconds after shutdown."""
    deadline = time.monotonic() + timeout
    while True:
        left = _ray_descendants()
        if not left or time.monotonic() > deadline:
            return [command[:80] for command in left.values()]
        time.sleep(0.1)


# -- the parent's log handlers ----------------------------------------------------------


class _Stamps(logging.Handler):
    """The ``created`` time of each child's stamp record, by the child's pid."""

    def __init__(self) -> None:
        super().__init__()
        self.created: dict[int, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.process is not None:
            self.created[record.process] = record.created

    async def wait(self, pid: int) -> float:
        with anyio.fail_after(10):
            while pid not in self.created:  # noqa: ASYNC110 - records arrive on the loop
                await anyio.sleep(0.005)
        return self.created[pid]


class _Counter(logging.Handler):
    """Counts the burst's records per child and notes when the last one arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[object] = Counter()
        self.last = 0.0  # time.time() of the last record handled

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.__dict__.get("child")] += 1
        self.last = time.time()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextlib.contextmanager
def _handler_on(name: str, handler: logging.Handler) -> Iterator[None]:
    """*handler* as the only handler of logger *name* (not propagating) for a while.

    The log server hands each record to ``logging.getLogger(record.name)``:
    this handler takes them there, and nothing else in the parent does.
    """
    log = logging.getLogger(name)
    saved = log.handlers[:], log.propagate, log.level
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.handlers[:], log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])


# -- helpers ----------------------------------------------------------------------------


async def _next_event(
    events: ObjectReceiveStream[Event], kind: str, child: str, pid: int | None = None
) -> Event:
    with anyio.fail_after(TIMEOUT):
        async for event in events:
            if event.kind == kind and event.child == child and pid in (None, event.pid):
                return event
    raise RuntimeError(f"the event stream ended before a {kind!r} event of {child!r}")


@dataclass
class _Cluster:
    """Ray, and the bare actor classes of the baselines."""

    ray: Any
    actor: Any  # ray_targets.BareActor as a Ray actor class
    logger: Any  # ray_targets.LogBurstActor as a Ray actor class

    async def get(self, ref: Any) -> Any:
        """The value of *ref*, awaited as ours awaits it (a callback on its future)."""
        with anyio.fail_after(TIMEOUT):
            return await asyncio.wrap_future(ref.future())

    async def died(self, ref: Any) -> None:
        """Wait until the call *ref* fails because its actor died."""
        try:
            await self.get(ref)
        except self.ray.exceptions.RayActorError:
            return
        raise RuntimeError("the pending call returned: its actor did not die")

    def kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # dead already
            self.ray.kill(actor, no_restart=True)


def _supervisor(children: list[ChildSpec], **options: Any) -> Supervisor:
    return Supervisor(children, backend=RayBackend(), handle_signals=False, **options)


# -- figure R1: one child, start until ready ----------------------------------------------


async def _bare_start(cluster: _Cluster, probe: bool = False) -> tuple[float, dict[str, float]]:
    """Seconds from creating a bare actor until a call on it returns, and its phases.

    With *probe*, the call first imports what our host actor imports.
    """
    t0 = time.time()
    actor = cluster.actor.remote()
    call = actor.import_then_ping.remote(HOST_MODULE) if probe else actor.ping.remote()
    pid = await cluster.get(call)
    t1 = time.time()
    worker = _created(pid) - t0
    cluster.kill(actor)
    return t1 - t0, {"worker_created": worker}


async def _ours_start(stamps: _Stamps) -> tuple[float, dict[str, float]]:
    """Seconds from entering a one-child Ray supervisor until it returns, and its phases."""
    spec = ChildSpec("c", f"{RT}:stamp_ready_then_sleep", ready_timeout=TIMEOUT)
    sup = _supervisor([spec])
    t0 = time.time()
    async with sup:
        t1 = time.time()
        pid = sup.which_children()[0].pid
        assert pid is not None
        phases = {
            "worker_created": _created(_host_pid(sup, "c")) - t0,
            "child_created": _created(pid) - t0,
            "child_code_runs": await stamps.wait(pid) - t0,
        }
    return t1 - t0, phases


def _phase_medians(samples: list[dict[str, float]]) -> dict[str, float | None]:
    return {key: median([s[key] for s in samples]) for key in samples[0]} if samples else {}


async def _bench_start(cluster: _Cluster, samples: int) -> list[dict[str, Any]]:
    _progress(f"R1: start one child until ready ({samples} samples a side)")
    ours: list[float] = []
    base: list[float] = []
    probe: list[float] = []  # a bare actor that imports our host's module first
    ours_phases: list[dict[str, float]] = []
    base_phases: list[dict[str, float]] = []
    sides = ["bare", "ours", "probe"]
    stamps = _Stamps()
    with _handler_on(ray_targets.STAMP_LOGGER, stamps):
        for i in range(samples):
            for side in sides[i % 3 :] + sides[: i % 3]:  # rotating: none always first
                await anyio.sleep(SETTLE)
                if side == "probe":
                    probe.append((await _bare_start(cluster, probe=True))[0])
                elif side == "bare":
                    took, phases = await _bare_start(cluster)
                    base.append(took)
                    base_phases.append(phases)
                else:
                    took, phases = await _ours_start(stamps)
                    ours.append(took)
                    ours_phases.append(phases)
    ours_median = _phase_medians(ours_phases)
    base_median = _phase_medians(base_phases)
    _progress(
        "R1 phases (median ms after the start; /proc to 10 ms): "
        + ", ".join(f"ours {k} {1e3 * (v or 0):.0f}" for k, v in ours_median.items())
        + f", ours ready {1e3 * (median(ours) or 0):.0f}"
        + f"; bare worker_created {1e3 * (base_median['worker_created'] or 0):.0f}"
        + f", bare call returned {1e3 * (median(base) or 0):.0f}"
        + f"; bare importing {HOST_MODULE} first {1e3 * (median(probe) or 0):.0f}"
    )
    base_value = median(base)
    return [
        row(
            "R1",
            "R1 Ray: start one child -> its code runs, ready",
            ours,
            baseline="bare actor created -> first call returns",
            base=base,
            target=f"<= {TARGET:g}x bare Ray",
            target_value=TARGET * base_value if base_value else None,
            extra={
                # Seconds after the start, medians: when each step was done.
                "ours_phases": ours_median,
                "baseline_phases": base_median,
                "ours_phase_samples": ours_phases,
                "baseline_phase_samples": base_phases,
                # A worker created before the start was one Ray had started idle.
                "ours_prestarted": sum(p["worker_created"] < PRESTARTED for p in ours_phases),
                "baseline_prestarted": sum(p["worker_created"] < PRESTARTED for p in base_phases),
                # What importing our host actor's module adds to a bare actor's start.
                "probe_bare_actor_importing_host_module": probe,
                "probe_median": median(probe),
            },
        )
    ]


# -- figures R2 and R3: kills noticed, restarts -------------------------------------------


@dataclass
class _Kills:
    """One side's samples of figures R2 and R3."""

    noticed: list[float]  # kill -> noticed
    lost_host: list[float]  # the worker killed -> noticed
    restarted: list[float]  # kill -> running again
    lost_host_restarted: list[float]  # the worker killed -> running again (ours only)


async def _bare_kills(cluster: _Cluster, kills: _Kills) -> None:
    """``ray.kill`` -> error -> a new actor's call returns; then that one's worker SIGKILLed."""
    first = cluster.actor.remote()
    await cluster.get(first.ping.remote())
    pending = first.sleep.remote(PENDING)
    await anyio.sleep(SETTLE)
    t0 = perf_counter()
    cluster.ray.kill(first, no_restart=True)
    await cluster.died(pending)
    t1 = perf_counter()
    second = cluster.actor.remote()
    pid = await cluster.get(second.ping.remote())
    t2 = perf_counter()
    pending = second.sleep.remote(PENDING)
    await anyio.sleep(SETTLE)
    t3 = perf_counter()
    os.kill(pid, signal.SIGKILL)
    await cluster.died(pending)
    t4 = perf_counter()
    cluster.kill(second)
    kills.noticed.append(t1 - t0)
    kills.restarted.append(t2 - t0)
    kills.lost_host.append(t4 - t3)


async def _ours_kills(
    sup: Supervisor, events: ObjectReceiveStream[Event], pid: int, kills: _Kills
) -> int:
    """SIGKILL the child, then its restarted run's host; return the pid of the third run."""
    await anyio.sleep(SETTLE)
    t0 = perf_counter()
    os.kill(pid, signal.SIGKILL)
    await _next_event(events, "exited", "victim", pid)
    t1 = perf_counter()
    pid = _pid((await _next_event(events, "ready", "victim")).pid)
    t2 = perf_counter()
    host = _host_pid(sup, "victim")
    await anyio.sleep(SETTLE)
    t3 = perf_counter()
    os.kill(host, signal.SIGKILL)
    await _next_event(events, "exited", "victim", pid)
    t4 = perf_counter()
    pid = _pid((await _next_event(events, "ready", "victim")).pid)
    t5 = perf_counter()
    kills.noticed.append(t1 - t0)
    kills.restarted.append(t2 - t0)
    kills.lost_host.append(t4 - t3)
    kills.lost_host_restarted.append(t5 - t3)
    return pid


def _pid(pid: int | None) -> int:
    if pid is None:
        raise RuntimeError("a ready child without a pid")
    return pid


async def _bench_kills(cluster: _Cluster, samples: int) -> list[dict[str, Any]]:
    _progress(f"R2-R3: kills noticed, restarts ({samples} samples a side)")
    ours = _Kills([], [], [], [])
    base = _Kills([], [], [], [])
    spec = ChildSpec("victim", f"{T}:ready_then_sleep", ready_timeout=TIMEOUT)
    sup = _supervisor([spec], max_restarts=1_000_000, max_seconds=1.0)
    with sup.events() as events:
        async with sup:
            pid = _pid((await _next_event(events, "ready", "victim")).pid)
            for i in range(samples):
                if i % 2 == 0:
                    await _bare_kills(cluster, base)
                    pid = await _ours_kills(sup, events, pid, ours)
                else:
                    pid = await _ours_kills(sup, events, pid, ours)
                    await _bare_kills(cluster, base)
    target = f"<= {TARGET:g}x bare Ray"

    def bound(samples: list[float]) -> float | None:
        value = median(samples)
        return TARGET * value if value else None

    # The baseline for "kill -> noticed" is Ray's own ActorDiedError
    # (10-14 ms where it was filed): the death of the process that runs the
    # user's code. On bare Ray that is the actor's worker; with us, the child.
    return [
        row(
            "R2a",
            "R2 Ray: SIGKILL child -> 'exited' event",
            ours.noticed,
            baseline="SIGKILL actor's worker -> ActorDiedError",
            base=base.lost_host,
            target=target,
            target_value=bound(base.lost_host),
        ),
        row(
            "R2b",
            "R2 Ray: SIGKILL child's host worker -> 'exited'",
            ours.lost_host,
            baseline="SIGKILL actor's worker -> ActorDiedError",
            base=base.lost_host,
            target=target,
            target_value=bound(base.lost_host),
        ),
        row(
            "R2c",
            "R2 Ray: SIGKILL child -> 'exited' event",
            ours.noticed,
            baseline="ray.kill(actor) -> RayActorError",
            base=base.noticed,
            target="report only",
        ),
        row(
            "R3a",
            "R3 Ray: SIGKILL child -> restarted child 'ready'",
            ours.restarted,
            baseline="ray.kill -> RayActorError -> new actor's call",
            base=base.restarted,
            target=target,
            target_value=bound(base.restarted),
        ),
        row(
            "R3b",
            "R3 Ray: SIGKILL host worker -> restarted 'ready'",
            ours.lost_host_restarted,
            baseline="ray.kill -> RayActorError -> new actor's call",
            base=base.restarted,
            target="report only",
        ),
    ]


# -- figure R4: records/s from 4 children ---------------------------------------------------


@dataclass
class _Burst:
    expected: int
    handled: int
    entered: float  # time.time() the supervisor was entered
    first_call: float  # time.time() of the first child's first log call
    last_first_call: float  # time.time() of the last child's first log call
    last_handled: float  # time.time() the parent's handler took the last record

    @property
    def rate(self) -> float:
        """Records handled per second, first log call to last record handled."""
        return self.handled / (self.last_handled - self.first_call)

    @property
    def rate_from_start(self) -> float:
        """Records handled per second, entering the supervisor to last record handled."""
        return self.handled / (self.last_handled - self.entered)

    @property
    def lost(self) -> int:
        return self.expected - self.handled


async def _burst(on_ray: bool, count: int) -> _Burst:
    # Half a CPU each on Ray, so that all four run at once on the 2-CPU
    # cluster as they do locally on the 2 cores: with Ray's default of one
    # CPU per actor, two would wait for the first two to end, and the
    # figure would time Ray's queue rather than the log path.
    placement = {"num_cpus": 0.5} if on_ray else None
    specs = [
        ChildSpec(
            f"burst{i}",
            f"{T}:log_burst",
            args=(count,),
            restart="transient",
            placement=placement,
        )
        for i in range(CHILDREN)
    ]
    sup = Supervisor(
        specs,
        start_order="parallel",
        backend=RayBackend() if on_ray else None,  # None: the default LocalBackend
        handle_signals=False,
    )
    counter = _Counter()
    with _handler_on(BURST, counter), anyio.fail_after(TIMEOUT):
        entered = time.time()
        # run() returns once every child has exited, and a child's exit is
        # reported only after its last record was handled.
        results = await sup.run()
    return _Burst(
        expected=CHILDREN * count,
        handled=counter.total,
        entered=entered,
        first_call=min(result["started"] for result in results.values()),
        last_first_call=max(result["started"] for result in results.values()),
        last_handled=counter.last,
    )


class _ForwardedLogs:
    """What ``ray.init(log_to_driver=True)`` does, for a while: workers' output to this driver.

    Ray's log monitor publishes new lines of every worker's output; a log
    subscription of this driver's (as Ray makes one) takes them, in a
    thread, and hands each batch to :attr:`handlers` instead of printing it.
    """

    def __init__(self, ray: Any) -> None:
        worker = ray._private.worker.global_worker
        self._subscriber = ray._raylet.GcsLogSubscriber(
            worker_id=worker.worker_id, address=worker.gcs_client.address
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="bench-ray-logs", daemon=True)
        self.handlers: list[Any] = []

    def __enter__(self) -> _ForwardedLogs:
        self._subscriber.subscribe()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._subscriber.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            data = self._subscriber.poll(timeout=0.2)  # wakes to see whether to stop
            if data:
                for handler in list(self.handlers):
                    handler(data)


class _ForwardedLines:
    """Counts the lines of one bare burst that Ray forwards to this driver."""

    def __init__(self, tag: str, expected: int) -> None:
        self.tag = tag
        self.expected = expected
        self.received = 0
        self.last = 0.0  # time.time() the last line arrived
        self.all_in = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, data: dict[str, Any]) -> None:
        lines = sum(self.tag in line for line in data.get("lines", ()))
        if lines:
            with self._lock:
                self.received += lines
                self.last = time.time()
                if self.received >= self.expected:
                    self.all_in.set()


async def _bare_burst(cluster: _Cluster, logs: _ForwardedLogs, count: int, sample: int) -> _Burst:
    """4 bare actors log *count* records each to stderr; Ray forwards them to the driver."""
    tag = f"burst-{sample}-{time.monotonic_ns()}"  # no line of an earlier burst counts
    lines = _ForwardedLines(tag, CHILDREN * count)
    logs.handlers.append(lines)
    actors = [cluster.logger.options(num_cpus=0.5).remote() for _ in range(CHILDREN)]
    try:
        entered = time.time()
        with anyio.fail_after(TIMEOUT):
            firsts = await asyncio.gather(
                *(cluster.get(actor.burst.remote(count, tag)) for actor in actors)
            )
        # Lines Ray has not forwarded within LINES_PATIENCE are counted lost.
        await anyio.to_thread.run_sync(lines.all_in.wait, LINES_PATIENCE)
    finally:
        logs.handlers.remove(lines)
        for actor in actors:
            cluster.kill(actor)
    return _Burst(
        expected=CHILDREN * count,
        handled=lines.received,
        entered=entered,
        first_call=min(firsts),
        last_first_call=max(firsts),
        last_handled=lines.last,
    )


async def _bench_records(cluster: _Cluster, count: int, samples: int) -> list[dict[str, Any]]:
    _progress(f"R4: {CHILDREN} children x {count} records ({samples} samples a side)")
    ours: list[_Burst] = []
    local: list[_Burst] = []
    bare: list[_Burst] = []
    sides = ["ours", "local", "bare"]
    with _ForwardedLogs(cluster.ray) as logs:
        for i in range(samples):
            for side in sides[i % 3 :] + sides[: i % 3]:  # rotating: none always first
                await anyio.sleep(BURST_SETTLE)
                if side == "bare":
                    bare.append(await _bare_burst(cluster, logs, count, i))
                else:
                    on_ray = side == "ours"
                    (ours if on_ray else local).append(await _burst(on_ray, count))
    sides_runs = {"ours": ours, "local": local, "bare": bare}
    lost = {name: max(b.lost for b in runs) for name, runs in sides_runs.items()}
    bare_rate = median([b.rate for b in bare])
    extra = {
        "ours_lost": [b.lost for b in ours],
        "bare_ray_lost": [b.lost for b in bare],
        "local_lost": [b.lost for b in local],
        "ours_handled": [b.handled for b in ours],
        # Seconds from the first child's first log call to the last child's:
        # on Ray each child waits for a fresh worker, so they start apart,
        # and a short burst's rate counts that wait too (bare actors as well).
        "ours_start_stagger_s": [b.last_first_call - b.first_call for b in ours],
        "bare_ray_start_stagger_s": [b.last_first_call - b.first_call for b in bare],
        "local_start_stagger_s": [b.last_first_call - b.first_call for b in local],
    }
    _progress(
        "R4 children's first log calls apart (median ms): "
        f"Ray {1e3 * (median(extra['ours_start_stagger_s']) or 0):.0f}, "
        f"bare Ray {1e3 * (median(extra['bare_ray_start_stagger_s']) or 0):.0f}, "
        f"local {1e3 * (median(extra['local_start_stagger_s']) or 0):.0f}"
    )
    what = f"{CHILDREN} children x {count:,}"
    rows = [
        row(
            "R4a",
            f"R4 Ray: records/s, {what}, 1st log call -> last handled"
            f" (lost: ours {lost['ours']}, bare Ray {lost['bare']})",
            [b.rate for b in ours],
            baseline="bare actors' stderr, forwarded by Ray to the driver",
            base=[b.rate for b in bare],
            unit="rec/s",
            better="higher",
            target=f">= 1/{TARGET:g} of bare Ray, 0 lost",
            target_value=bare_rate / TARGET if bare_rate else None,
            extra=extra,
        ),
        row(
            "R4b",
            f"R4 Ray: records/s, {what}, 1st log call -> last handled"
            f" (lost: ours {lost['ours']}, local {lost['local']})",
            [b.rate for b in ours],
            baseline="the same children, LocalBackend",
            base=[b.rate for b in local],
            unit="rec/s",
            better="higher",
            target="report only",
            extra=extra,
        ),
        row(
            "R4c",
            f"R4 Ray: records/s, {what}, supervisor entered -> last handled",
            [b.rate_from_start for b in ours],
            baseline="the same children, LocalBackend",
            base=[b.rate_from_start for b in local],
            unit="rec/s",
            better="higher",
            target="report only",
            extra=extra,
        ),
    ]
    if lost["ours"]:  # a lost record misses the target, whatever the rate
        rows[0]["meets_target"] = False
    return rows


# -- entry point ------------------------------------------------------------------------------


async def _warm_up(cluster: _Cluster) -> None:
    """Use up the workers Ray started idle, and make every first-time import on both sides."""
    _progress("warming up (uses up Ray's idle workers, starts the local fork server)")
    actors = [cluster.actor.remote() for _ in range(NUM_CPUS)]
    for actor in actors:
        await cluster.get(actor.ping.remote())
    for actor in actors:
        cluster.kill(actor)
    stamps = _Stamps()
    with _handler_on(ray_targets.STAMP_LOGGER, stamps):
        await _ours_start(stamps)
    for on_ray in (True, False):
        await _burst(on_ray, 10)
    with _ForwardedLogs(cluster.ray) as logs:
        await _bare_burst(cluster, logs, 10, -1)


async def _collect(cluster: _Cluster, quick: bool) -> list[dict[str, Any]]:
    await _warm_up(cluster)
    rows = await _bench_start(cluster, 3 if quick else 9)
    rows += await _bench_kills(cluster, 3 if quick else 11)
    rows += await _bench_records(cluster, 5_000 if quick else 20_000, 3 if quick else 5)
    _progress("done")
    return rows


def _start_cluster(ray: Any) -> None:
    """Start a loopback-only local cluster whose workers import ``benchmarks``."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, before) if p)
    try:
        # Workers' output reaches this driver only while R4 listens for it
        # (see _ForwardedLogs): that costs Ray work on every worker's death.
        ray.init(
            num_cpus=NUM_CPUS,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    finally:  # the cluster's daemons have it now; our other children need not
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """Run every figure on one local cluster; return one report row per (figure, baseline)."""
    global _BEGAN  # noqa: PLW0603 - the progress clock starts with the module
    _BEGAN = perf_counter()
    # Before Ray is imported: a cluster bound to loopback only, and no usage report.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray  # noqa: PLC0415 - optional; and only after the variables above
    except ImportError:
        _progress("Ray is not installed (pip install 'gymnasiarch[ray]'): no figures")
        return []
    if ray.is_initialized():
        _progress("Ray is initialised already: no figures (they need a cluster of their own)")
        return []
    _progress("starting a local Ray cluster")
    _start_cluster(ray)
    # Every kill would log a warning; writing it is not what is measured.
    own = logging.getLogger("gymnasiarch")
    level = own.level
    own.setLevel(logging.ERROR)
    try:
        actor = ray.remote(max_restarts=0, max_task_retries=0)(ray_targets.BareActor)
        logger = ray.remote(max_restarts=0, max_task_retries=0)(ray_targets.LogBurstActor)
        rows = anyio.run(_collect, _Cluster(ray, actor, logger), quick)
    finally:
        own.setLevel(level)
        ray.shutdown()
    left = _leftovers(timeout=10)
    if left:
        _progress(f"WARNING: still running 10 s after ray.shutdown(): {left}")
    for line in rows:
        line["extra"]["leftover_processes"] = left
    return rows
