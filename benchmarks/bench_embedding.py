"""A supervisor embedded in an application: does the application's own loop keep its pace?

E1. The lag of a 1 ms ticker in the caller's event loop while a tree of 20
    children starts (its target modules imported for the first time, as in a
    fresh application), p99 per run, against the same ticker with nothing
    else to do. Target: p99 <= 5 ms (issue 13).

Each sample is a fresh interpreter, so the targets' modules are imported for
the first time in every sample: the case that stalled the caller's loop when
the supervisor imported them on it. gymnasiarch itself is imported before the
ticker starts, as an application imports its libraries before its loop runs:
the window measures the supervisor's work, not the one-time import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks._report import progress, row

_PROBE = r"""
import json, sys, time
import anyio
from gymnasiarch import ChildSpec, Supervisor  # the application's own import, before its loop

CHILDREN = int(sys.argv[1])

async def main():
    lags = []
    async def ticker():
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            lags.append(now - last - 0.001)
            last = now
    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        await anyio.sleep(0.05)
        lags.clear()
        if CHILDREN:
            specs = [
                ChildSpec(f"c{i}", "benchmarks._targets:ready_then_sleep", ready_timeout=30)
                for i in range(CHILDREN)
            ]
            async with Supervisor(specs, start_order="parallel", handle_signals=False) as sup:
                sup.stop()
        else:
            await anyio.sleep(0.3)
        group.cancel_scope.cancel()
    lags.sort()
    print(json.dumps(lags[int(len(lags) * 0.99)] if lags else 0.0))

anyio.run(main)
"""


def _p99(children: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(children)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """E1: the caller's ticker while a tree of 20 starts, beside an idle ticker."""
    samples = 3 if quick else 9
    ours, base = [], []
    for index in range(samples):
        progress("embedding", f"E1 sample {index + 1}/{samples}")
        base.append(_p99(0))
        ours.append(_p99(20))
    return [
        row(
            "E1",
            "E1 caller's 1 ms ticker, p99 lag while 20 children start",
            ours,
            baseline="the same ticker with nothing else to do",
            base=base,
            target="p99 <= 5 ms",
            target_value=0.005,
        )
    ]
