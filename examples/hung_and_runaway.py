"""A simulator that hangs and an agent that leaks: found, stopped, restarted, and explained.

The simulator beats with ``child_context().heartbeat()`` while it steps; on
its first run it hangs (a deadlock, say), its watchdog finds it, and the
report names the line where it was stuck. The agent leaks memory on its
first run until its process group passes ``max_memory``; it is stopped and
restarted. Both finish on their second run.
"""

import time

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from gymnasiarch import ChildSpec, Event, Supervisor, child_context


def simulator(steps: int) -> str:
    context = child_context()
    for step in range(steps):
        if step == 10 and context.restarts == 0:
            time.sleep(3600)  # hangs here: no more beats
        time.sleep(0.01)  # one step of the simulation
        context.heartbeat()  # cheap: most calls only read the clock
    return f"simulated {steps} steps"


def agent(episodes: int) -> str:
    leak = []
    for _ in range(episodes):
        if child_context().restarts == 0:
            leak.append(bytearray(20 * 2**20))  # 20 MiB an episode, never freed
        time.sleep(0.05)
    return f"played {episodes} episodes"


async def report(events: MemoryObjectReceiveStream[Event]) -> None:
    async for event in events:  # ends with the tree
        if event.kind == "exited" and not event.requested and event.exitcode != 0:
            print(f"{event.path}: {event.detail}")


async def main() -> None:
    children = [
        ChildSpec("simulator", simulator, args=(50,), restart="transient", watchdog=0.5),
        ChildSpec("agent", agent, args=(40,), restart="transient", max_memory="150MiB"),
    ]
    async with anyio.create_task_group() as group, Supervisor(children) as supervisor:
        group.start_soon(report, supervisor.events())
        results = await supervisor.wait()
    print("results:", dict(sorted(results.items())))


if __name__ == "__main__":
    anyio.run(main)
