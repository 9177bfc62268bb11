"""A supervisor in its own process, for tests that signal or kill the supervisor.

Usage: python -m targets.tree_script N [--print-on started|ready] [--backend asyncio|trio]
Prints one JSON line with the children's pids, then runs until stopped.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch.exceptions import SignalInterruptError


async def main(count: int, print_on: str) -> int:
    specs = [
        ChildSpec(f"c{i}", "targets.basic:ready_then_sleep", ready_timeout=10) for i in range(count)
    ]
    sup = Supervisor(specs, start_order="parallel")
    pids: list[int] = []
    try:
        with sup.events() as events:
            async with sup:
                async for event in events:
                    if event.kind == print_on and event.pid:
                        pids.append(event.pid)
                        if len(pids) == count:
                            print(json.dumps(pids), flush=True)
                    if event.kind == "stopped":
                        break
    except SignalInterruptError as error:
        print(f"SignalInterruptError {error.signal_name}", flush=True)
        return 128 + (error.signum or 0)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--print-on", default="ready")
    parser.add_argument("--backend", default="asyncio")
    options = parser.parse_args()
    sys.exit(anyio.run(main, options.count, options.print_on, backend=options.backend))
