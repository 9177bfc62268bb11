"""The smallest useful supervisor: two workers, one of which crashes once."""

import os
import sys

import anyio

from gymnasiarch import ChildSpec, Supervisor, child_context


def work(steps: int) -> int:
    ctx = child_context()
    if ctx.name == "flaky" and ctx.restarts == 0:
        sys.exit(f"{ctx.name} crashes on its first run (pid {os.getpid()})")
    return sum(range(steps))


async def main() -> None:
    children = [ChildSpec(n, work, args=(10,), restart="transient") for n in ("steady", "flaky")]
    results = await Supervisor(children, seed=42).run()
    print("results:", results)


if __name__ == "__main__":
    anyio.run(main)
