"""``max_memory``: one sampler per event loop, for every child that has a ceiling.

The resident memory of a process group has no event to wait for (a cgroup's
``memory.events`` would, but a child is not a cgroup here): it is sampled,
every :data:`INTERVAL` seconds, by ONE timer for all the children of the
event loop that have a ceiling, however many supervisors started them. The
sampler is no task of its own (every task lives in its supervisor's task
group, ARCHITECTURE.md invariant 6): each run with a ceiling takes part
through :func:`enforce`, from its watcher's task group, and one of them at
a time, the leader, runs the timer and reads ``/proc`` for all. When the
leader's run ends, a waiting one takes over. Without a ceiling, nothing runs.

The process layer holds it, so a Ray actor that hosts a child samples it
there, on its node, as a local supervisor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from anyio.lowlevel import RunVar

from gymnasiarch import _platform

#: Seconds between two samples. A child may grow past its ceiling for up to
#: this long before it is seen (the kernel's ``limits.memory`` is the hard
#: bound); each sample costs about 25 µs per child of one process (see
#: docs/benchmarks.md and benchmarks/bench_limits.py).
INTERVAL = 1.0
#: Seconds a child found over its ``max_memory`` has between its stop signal
#: and SIGKILL when its ``shutdown`` is None (it may take as long as it needs
#: for an ordinary stop, but a child that grows while it ignores its stop
#: signal must not grow for ever); otherwise its ``shutdown`` is its grace.
OVER_LIMIT_GRACE = 5.0


@dataclass(eq=False)
class Ceiling:
    """The ceiling of one run: its process group, its limit in bytes, whether it was passed."""

    leader: int
    limit: int
    over: anyio.Event = field(default_factory=anyio.Event)
    #: The resident bytes measured when the ceiling was found passed.
    measured: int | None = None


class _Sampler:
    """The ceilings of one event loop, and who among their runs keeps the timer."""

    def __init__(self) -> None:
        self.ceilings: dict[Ceiling, None] = {}  # a set in the order of the starts
        self.leader: Ceiling | None = None
        self.vacated = anyio.Event()

    async def take_turns(self, ceiling: Ceiling) -> None:
        """Sample for all while *ceiling*'s run leads; otherwise wait for the leader to leave."""
        while True:
            if self.leader is None:
                self.leader = ceiling
                try:
                    await self._sample_forever()
                finally:
                    self.leader = None
                    self.vacated.set()
                    self.vacated = anyio.Event()
            else:
                await self.vacated.wait()

    async def _sample_forever(self) -> None:
        while True:
            await anyio.sleep(INTERVAL)
            self.sample()

    def sample(self) -> None:
        """Read each ceiling's group once; mark those found over their limit."""
        for ceiling in list(self.ceilings):
            if ceiling.over.is_set():
                continue
            usage = _platform.group_usage(ceiling.leader)
            if usage is not None and usage[0] > ceiling.limit:
                ceiling.measured = usage[0]
                ceiling.over.set()


_SAMPLER: RunVar[_Sampler] = RunVar("gymnasiarch_memory_sampler")


def sampler() -> _Sampler:
    """The sampler of the running event loop (made at its first use)."""
    try:
        return _SAMPLER.get()
    except LookupError:
        found = _Sampler()
        _SAMPLER.set(found)
        return found


async def enforce(ceiling: Ceiling) -> None:
    """Take part in sampling until *ceiling*'s group is found over its limit; then return.

    Run it in the task group that watches the run: cancelling it (the run
    has ended) takes the ceiling out, and hands the timer on if it held it.
    """
    shared = sampler()
    shared.ceilings[ceiling] = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(shared.take_turns, ceiling)
            await ceiling.over.wait()
            group.cancel_scope.cancel()
    finally:
        shared.ceilings.pop(ceiling, None)
