"""Our fork server: children forked ahead of demand, on demand when none is ready."""

from __future__ import annotations

import os
import select
import signal

import anyio

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._forkserver import SERVER
from gymnasiarch._process import _zombie_exit_code
from gymnasiarch.testing import _descendants

PROBE = "targets.basic:started_from_spare"


def _spares() -> list[int]:
    assert SERVER.pid is not None
    return [
        pid
        for pid, command in _descendants(SERVER.pid).items()
        if command == "gymnasiarch-forkserver spare"
    ]


async def _start_one(name: str) -> bool:
    """Run one probe child to its end; True if it was a spare."""
    results = await Supervisor([ChildSpec(name, PROBE, restart="temporary")]).run()
    return bool(results[name])


async def test_one_child_at_a_time_starts_in_a_spare() -> None:
    """Between starts the server forks a spare, and the next start takes it."""
    with anyio.fail_after(30):
        spared = [await _start_one(f"probe{i}") for i in range(6)]
    # The first may find the spare still being forked after an earlier test.
    assert any(spared[1:]), spared


async def test_a_burst_is_served_by_forking_on_demand() -> None:
    """Only one spare waits: the rest of a burst is forked as requests come."""
    specs = [ChildSpec(f"burst{i}", PROBE, restart="temporary") for i in range(6)]
    with anyio.fail_after(30):
        results = await Supervisor(specs, start_order="parallel").run()
    assert len(results) == 6
    assert False in results.values(), results


async def test_a_dead_spare_does_not_fail_a_start() -> None:
    """A spare killed while it waits is replaced; the next start still runs."""
    with anyio.fail_after(30):
        killed: list[int] = []
        for i in range(10):  # a start, then the spare the server forks after it
            await _start_one(f"before{i}")
            killed = _spares()
            if killed:
                break
        assert killed, "no spare was forked after ten starts"
        for pid in killed:
            pidfd = os.pidfd_open(pid)
            try:
                os.kill(pid, signal.SIGKILL)
                await anyio.wait_readable(pidfd)  # it is dead before we ask for a child
            finally:
                os.close(pidfd)
        results = await Supervisor([ChildSpec("after", PROBE, restart="temporary")]).run()
    assert list(results) == ["after"]


def test_a_zombies_exit_status_is_read_before_it_is_reaped() -> None:
    """The status of a dead, unreaped process comes from /proc; none once it is reaped."""
    for how, expected in ((signal.SIGKILL, -signal.SIGKILL), (None, 3)):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            if how is None:
                os._exit(3)
            signal.pause()
            os._exit(0)
        pidfd = os.pidfd_open(pid)
        try:
            if how is not None:
                os.kill(pid, how)
            select.select([pidfd], [], [], 10)  # readable once it has exited
            assert _zombie_exit_code(pid) == expected
        finally:
            os.close(pidfd)
            os.waitpid(pid, 0)
        assert _zombie_exit_code(pid) is None
