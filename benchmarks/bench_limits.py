"""Issue 17's resource-limit figure: the parent's CPU for ``max_memory``, 50 children.

M1. The supervisor's CPU time (``time.process_time()``: all its threads)
while 50 idle children with ``max_memory`` are sampled, as a percentage of
one core, beside the same 50 children without a ceiling in the same run
(target: <= 1 %). Both trees run under one supervisor each, one after the
other, idle for the same window, repeated; medians.

M2. What one sample costs per child: :meth:`_Sampler.sample` over the 50
children's ceilings (each reads the child's ``/proc/PID/stat`` and its
threads' ``children`` files), beside a scan of every process's
``/proc/*/stat`` for the group, the other way to find a group's members (it
grows with the machine's processes, not with ours). Reported, no target.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from benchmarks._report import progress, row
from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._platform import proc_group
from gymnasiarch._process.sampler import INTERVAL, Ceiling, _Sampler

MANY = 50
T = "benchmarks._targets"
CEILING = "4GiB"  # never reached: the figure is the check's cost, not a stop's


async def _idle_percent(seconds: float) -> float:
    """This process's CPU time while it sleeps *seconds*, as % of one core."""
    before = time.process_time()
    await anyio.sleep(seconds)
    return (time.process_time() - before) / seconds * 100


def _specs(ceiling: str | None) -> list[ChildSpec]:
    return [
        ChildSpec(f"c{i:02d}", f"{T}:ready_then_sleep", ready_timeout=30.0, max_memory=ceiling)
        for i in range(MANY)
    ]


async def _per_child_sample_cost(pids: list[int], rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per child of one sample (ours), and of a whole-/proc scan for its group (base)."""
    sampler = _Sampler()
    for pid in pids:
        sampler.ceilings[Ceiling(pid, 2**42)] = None
    ours: list[float] = []
    base: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sampler.sample()
        ours.append((time.perf_counter() - t0) / len(pids))
        t0 = time.perf_counter()
        for pid in pids[:5]:  # a whole scan per group: five are plenty to time
            proc_group(pid)
        base.append((time.perf_counter() - t0) / 5)
        await anyio.lowlevel.checkpoint()
    return ours, base


async def _measure(samples: int, idle: float) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"ours": [], "base": [], "sample": [], "scan": []}
    for i in range(samples):
        for kind, ceiling in (("base", None), ("ours", CEILING)):
            async with Supervisor(_specs(ceiling), start_order="parallel") as sup:
                await anyio.sleep(INTERVAL)  # the starts' own work is done
                found[kind].append(await _idle_percent(idle))
                if kind == "ours" and i == 0:
                    pids = [c.pid for c in sup.which_children() if c.pid is not None]
                    found["sample"], found["scan"] = await _per_child_sample_cost(pids, 50)
    return found


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """M1-M2: the max_memory check's cost with 50 children."""
    samples, idle = (2, 3.0) if quick else (5, 10.0)
    progress("limits", f"M1-M2: {MANY} children, {samples} samples, idle {idle:g} s each")
    found = anyio.run(_measure, samples, idle)
    note = {"children": MANY, "interval_s": INTERVAL, "idle_seconds": idle}
    return [
        row(
            "M1",
            f"M1 parent CPU, {MANY} idle children with max_memory (% of one core)",
            found["ours"],
            baseline=f"the same {MANY} children without max_memory",
            base=found["base"],
            unit="%",
            target="<= 1 %",
            target_value=1.0,
            extra=note,
        ),
        row(
            "M2",
            "M2 one max_memory sample, per child",
            found["sample"],
            baseline="a scan of every /proc/*/stat for the group",
            base=found["scan"],
            extra={"children": MANY},
        ),
    ]
