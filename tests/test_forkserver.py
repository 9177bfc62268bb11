"""Our fork server: children forked ahead of demand, on demand when none is ready."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from gymnasiarch import ChildSpec, Supervisor, _platform
from gymnasiarch._process import forkserver
from gymnasiarch._process.child import Launch
from gymnasiarch._process.forkserver import SERVER, SharedForkServer
from gymnasiarch._process.run import PRELOAD, ChildProcess, ExitStatus, _zombie_exit_code
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


# -- a server shared by several requesters (the Ray hosts' one per node) ------------


class _Shared:
    """Shared fork servers in one private directory, anchored to a process we own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.anchor = subprocess.Popen(["sleep", "600"])  # stands in for a node's raylet
        self.requesters: list[SharedForkServer] = []

    def requester(self) -> SharedForkServer:
        server = SharedForkServer(str(self.directory), self.anchor.pid)
        self.requesters.append(server)
        return server

    def end(self) -> None:
        self.anchor.kill()
        self.anchor.wait()
        for requester in self.requesters:
            requester.close()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[_Shared]:
    servers = _Shared(tmp_path / "private" / "node")
    try:
        yield servers
    finally:
        servers.end()


async def _run(
    server: SharedForkServer, target: str, *args: object, **launch: object
) -> ExitStatus:
    """Start a child through *server* and follow it to its end."""
    server.ensure_running([*PRELOAD, "targets.basic"])
    child = await ChildProcess.start(
        Launch("probe", target, args, {}, {}, None, 0, **launch),  # type: ignore[arg-type]
        "forkserver",
        capture_output=False,
        fork_server=server,
    )
    await child.watch()
    assert child.status is not None
    return child.status


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


async def _exited(pid: int) -> None:
    pidfd = os.pidfd_open(pid)
    try:
        with anyio.fail_after(10):
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def test_requesters_naming_one_directory_share_one_server(shared: _Shared) -> None:
    """The first requester starts the server; the next one uses it; each child gets its env."""
    first, second = shared.requester(), shared.requester()
    status = await _run(first, "targets.basic:parent_and_env", "MARK", environ={"MARK": "one"})
    assert first.started_server
    server_pid, mark = status.result
    assert mark == "one"
    assert _title(server_pid) == "gymnasiarch-forkserver"
    assert server_pid not in _descendants(os.getpid())  # nobody's child: it outlives its starter
    status = await _run(second, "targets.basic:parent_and_env", "MARK", environ={"MARK": "two"})
    assert not second.started_server  # it found the first one's
    assert status.result == (server_pid, "two")


async def test_a_shared_server_outlives_its_anchor_until_its_last_child_ends(
    shared: _Shared,
) -> None:
    """The anchor gone, the server takes no request but does not take its children along."""
    requester = shared.requester()
    requester.ensure_running([*PRELOAD, "targets.basic"])
    child = await ChildProcess.start(
        Launch("sleeper", "targets.basic:sleep_forever", (), {}, {}, None, 0),
        "forkserver",
        capture_output=False,
        fork_server=requester,
    )
    server_pid = _parent(child.pid)
    shared.anchor.kill()
    # Had the server gone with its anchor, the child would die of the
    # parent-death signal within this half second, not of our SIGTERM.
    with anyio.move_on_after(0.5):
        await anyio.wait_readable(child._pidfd)  # type: ignore[arg-type]
    child.terminate()
    await child.watch()
    assert child.status is not None
    assert child.status.signum == signal.SIGTERM
    await _exited(server_pid)  # and then it goes
    assert not shared.directory.exists()  # with its directory


async def test_an_idle_shared_server_ends_and_the_next_request_starts_another(
    shared: _Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forkserver, "SHARED_IDLE_EXIT", 0.2)
    first, second = shared.requester(), shared.requester()
    server_pid, _ = (await _run(first, "targets.basic:parent_and_env", "X")).result
    await _exited(server_pid)
    assert not second.running()  # it took its socket along
    assert not shared.directory.exists()  # and its directory: a node keeps no trace
    assert (await _run(second, "targets.basic:add", 3, 4)).result == 7
    assert second.started_server


async def test_a_request_that_waited_for_a_removed_lock_makes_the_directory_again(
    shared: _Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle server removes its directory while a requester waits for the lock in it.

    The requester then holds the lock of a file nobody else finds: it sees
    that, makes the directory again and starts a server there.
    """
    requester = shared.requester()
    real_flock = fcntl.flock
    removals = []

    def removed_while_waiting(fd: int, operation: int) -> None:
        if not removals:  # what the ending server does, under its lock, while we wait
            removals.append(True)
            os.unlink(shared.directory / "lock")
            os.rmdir(shared.directory)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", removed_while_waiting)
    assert (await _run(requester, "targets.basic:add", 3, 4)).result == 7
    assert removals
    assert requester.started_server
    assert (shared.directory / "lock").exists()


def test_a_lock_is_held_only_of_the_file_still_at_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lock"
    with _platform.file_locked(str(path), fcntl.LOCK_EX, create=False) as held:
        assert not held  # no file, none made
    with _platform.file_locked(str(path), fcntl.LOCK_EX, create=True) as held:
        assert held
    real_flock = fcntl.flock

    def replaced_while_waiting(fd: int, operation: int) -> None:
        path.unlink()
        path.touch()  # a newcomer's new lock file
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", replaced_while_waiting)
    with _platform.file_locked(str(path), fcntl.LOCK_SH, create=True) as held:
        assert not held


def test_a_directory_other_users_may_enter_is_refused(tmp_path: Path) -> None:
    """Another user's socket there would be handed our descriptors."""
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    server = SharedForkServer(str(tmp_path / "open" / "node"), os.getpid())
    try:
        with pytest.raises(PermissionError, match="not a private directory"):
            server.ensure_running([])
    finally:
        server.close()


def _autogroup(pid: int) -> str | None:
    """The scheduler's autogroup of *pid* ("/autogroup-N nice 0"), None where there is none.

    The file exists but is empty for a task in a cgroup with its own CPU
    controller (CI containers): the kernel schedules it by cgroup, not by autogroup.
    """
    try:
        words = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    return words[0] if words else None


async def test_children_share_a_session_apart_from_the_supervisors() -> None:
    """Children booting at once weigh on the caller's loop as one session (issue 13, E1).

    Where the kernel shares CPU time among sessions (autogroups), twenty
    busy children then take half the CPU from the application's event loop,
    not twenty twenty-oneths of it.
    """
    specs = [
        ChildSpec("python", "targets.basic:ready_then_sleep"),
        ChildSpec("program", command=["sleep", "1000"]),
    ]
    with anyio.fail_after(30):
        async with Supervisor(specs, start_order="parallel") as sup:
            pids = [row.pid for row in sup.walk()]
            assert None not in pids
            sessions = {os.getsid(pid) for pid in pids if pid is not None}
            assert len(sessions) == 1
            assert os.getsid(0) not in sessions
            for pid in pids:
                assert pid is not None
                assert os.getpgid(pid) == pid  # each still leads a group of its own
            if (mine := _autogroup(os.getpid())) is not None:
                assert {_autogroup(pid) for pid in pids if pid is not None} != {mine}
            sup.stop()
