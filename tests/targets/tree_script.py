"""A supervisor in its own process, for tests that signal or kill the supervisor.

Usage: python -m targets.tree_script N [--print-on started|ready] [--backend asyncio|trio]
                                       [--stubborn]
Prints one JSON line with the pids of the children, of the fork server and of
its spare child (none of them may outlive this process), then runs until stopped; prints
"shutting down" when the shutdown begins. With --stubborn, the children ignore
SIGTERM and have a 60 s grace period.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
from anyio.abc import ObjectReceiveStream

from gymnasiarch import ChildSpec, Event, Supervisor
from gymnasiarch._process.forkserver import SERVER
from gymnasiarch.exceptions import SignalInterruptError
from gymnasiarch.testing import _descendants


async def report(events: ObjectReceiveStream[Event], count: int, print_on: str) -> None:
    """Print the pids once all children reached *print_on*, and the shutdown's start."""
    pids: list[int] = []
    async for event in events:
        if event.kind == print_on and event.pid:
            pids.append(event.pid)
            if len(pids) == count:
                helpers = [SERVER.pid, *_descendants(SERVER.pid or 0)]
                print(json.dumps(sorted(set(pids + helpers))), flush=True)
        if event.kind == "shutting_down":
            print("shutting down", flush=True)


async def main(count: int, print_on: str, stubborn: bool) -> int:
    target = "ignore_sigterm_and_sleep" if stubborn else "ready_then_sleep"
    specs = [
        ChildSpec(f"c{i}", f"targets.basic:{target}", ready_timeout=10, shutdown=60)
        for i in range(count)
    ]
    sup = Supervisor(specs, start_order="parallel")
    # The reporter runs outside the supervisor's body, which a signal cancels.
    with sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(report, events, count, print_on)
            try:
                async with sup:
                    await anyio.sleep_forever()
            except SignalInterruptError as error:
                print(f"SignalInterruptError {error.signal_name}", flush=True)
                return 128 + (error.signum or 0)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--print-on", default="ready")
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--stubborn", action="store_true")
    options = parser.parse_args()
    sys.exit(
        anyio.run(main, options.count, options.print_on, options.stubborn, backend=options.backend)
    )
