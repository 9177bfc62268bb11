"""Issue 17's watchdog figures: a hung child's end, heartbeat()'s cost, the parent's CPU.

W1: a child that stops beating, from its deadline (its ready, which arms
the watchdog and is its last beat, plus 1.25 periods: a beat moves the
deadline a period and a beat spacing on, see ``_context.BEAT_FRACTION``)
until the supervisor's ``exited`` event, its
stack dump taken; beside a child killed by SIGKILL from outside, until its
``exited`` event (the same report path, without the watchdog). W2: one
``child_context().heartbeat()`` when no beat is due, beside a plain function
call. W3: the supervisor's CPU time over 5 s with 50 idle ``async def``
children that beat (``watchdog=1.0``), beside the same children without a
watchdog. Both sides run in the same process, taking turns.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import signal
import time
import timeit
from typing import Any

import anyio

from benchmarks._report import progress, row
from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._context import BEAT_FRACTION, ChildContext
from gymnasiarch._runtime_config import RuntimeConfig

WATCHDOG = 0.2
IDLE_CHILDREN = 50
IDLE_WATCHDOG = 1.0
WINDOW = 5.0


def ready_then_block() -> None:
    """A child's target: ready (which arms its watchdog), then hung without a beat."""
    from gymnasiarch import child_context  # noqa: PLC0415 - imported in the child

    child_context().ready()
    time.sleep(3600)


async def _hung_once() -> float:
    """Seconds from a hung child's deadline to its ``exited`` event."""
    # Its dump is captured (the error carries it), not printed here.
    quiet = logging.getLogger("gymnasiarch.child.hung")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    spec = ChildSpec(
        "hung",
        "benchmarks.bench_watchdog:ready_then_block",
        restart="temporary",
        ready_timeout=10,
        watchdog=WATCHDOG,
    )
    async with Supervisor([]) as sup:
        with sup.events() as events:
            await sup.start_child(spec)
            armed = None
            async for event in events:
                if event.kind == "ready" and event.child == "hung":
                    armed = event.time
                if event.kind == "exited" and event.child == "hung":
                    assert armed is not None
                    assert (event.detail or "").startswith("hung")
                    assert "stuck at" in (event.detail or "")  # its stack dump came
                    return event.time - (armed + WATCHDOG * (1 + BEAT_FRACTION))
    raise AssertionError("no exited event")


async def _killed_once() -> float:
    """Seconds from a SIGKILL sent to a ready child to its ``exited`` event."""
    spec = ChildSpec(
        "killed", "benchmarks._targets:ready_then_sleep", restart="temporary", ready_timeout=10
    )
    async with Supervisor([]) as sup:
        with sup.events() as events:
            await sup.start_child(spec)
            (info,) = [i for i in sup.walk() if i.name == "killed"]
            assert info.pid is not None
            sent = time.time()
            os.kill(info.pid, signal.SIGKILL)
            async for event in events:
                if event.kind == "exited" and event.child == "killed":
                    return event.time - sent
    raise AssertionError("no exited event")


def _per_call(statement: str, names: dict[str, Any], number: int, repeat: int) -> list[float]:
    timer = timeit.Timer(statement, globals=names)
    return [total / number for total in timer.repeat(repeat=repeat, number=number)]


def _plain() -> None:
    pass


def _heartbeat_costs(number: int, repeat: int) -> tuple[list[float], list[float]]:
    context = ChildContext(
        "bench",
        None,
        0,
        RuntimeConfig(),
        _send=lambda message: None,
        _beat_every=IDLE_WATCHDOG / 4,
        _next_beat=math.inf,  # never due: the cost of a call that finds the last beat recent
    )
    ours = _per_call("beat()", {"beat": context.heartbeat}, number, repeat)
    base = _per_call("plain()", {"plain": _plain}, number, repeat)
    return ours, base


async def _parent_cpu(watchdog: float | None) -> float:
    """The supervisor's CPU seconds over WINDOW with IDLE_CHILDREN idle children."""
    specs = [
        ChildSpec(f"idle-{i}", "benchmarks._targets:async_ready_then_sleep", watchdog=watchdog)
        for i in range(IDLE_CHILDREN)
    ]
    async with Supervisor(specs, start_order="parallel") as sup:
        await anyio.sleep(1.0)  # the starts' own work is over
        before = resource.getrusage(resource.RUSAGE_SELF)
        await anyio.sleep(WINDOW)
        after = resource.getrusage(resource.RUSAGE_SELF)
        sup.stop()
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """W1-W3: the watchdog beside the same supervisor without it."""
    samples = 3 if quick else 10
    progress("watchdog", f"W1 hung child -> exited, {samples} samples")
    hung, killed = [], []
    for _ in range(samples):
        hung.append(anyio.run(_hung_once))
        killed.append(anyio.run(_killed_once))
    progress("watchdog", "W2 heartbeat() vs a plain call")
    beat, plain = _heartbeat_costs(number=200_000 if quick else 1_000_000, repeat=7)
    rounds = 1 if quick else 3
    progress("watchdog", f"W3 parent CPU, {IDLE_CHILDREN} idle children, {rounds} x {WINDOW} s")
    with_watchdog, without = [], []
    for _ in range(rounds):
        with_watchdog.append(anyio.run(_parent_cpu, IDLE_WATCHDOG))
        without.append(anyio.run(_parent_cpu, None))
    plain_median = sorted(plain)[len(plain) // 2]
    return [
        row(
            "W1",
            f"W1 hung child (watchdog {WATCHDOG} s) -> exited event, after its deadline",
            hung,
            baseline="SIGKILL from outside -> exited event (no watchdog, no dump)",
            base=killed,
            target="<= 50 ms, stack dump included",
            target_value=0.05,
        ),
        row(
            "W2",
            "W2 heartbeat() when no beat is due, per call",
            beat,
            baseline="a plain Python function call",
            base=plain,
            target="<= plain call + 0.2 us",
            target_value=plain_median + 0.2e-6,
        ),
        row(
            "W3",
            f"W3 parent CPU, {IDLE_CHILDREN} idle children, "
            f"watchdog={IDLE_WATCHDOG}, per {WINDOW:g} s",
            with_watchdog,
            baseline="the same children without a watchdog",
            base=without,
            unit="CPU-s",
            target="<= 0.02 CPU-s",
            target_value=0.02,
        ),
    ]
