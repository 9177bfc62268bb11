"""Nothing escapes the tree: setsid daemons, a dead fork server, the leftover check (issue 14).

Items 7, 8 and 9 of issue 14: a child's daemon that left its process group
is stopped and reaped with its child; the fork server's death kills no
running child and the next start brings up a new server; the pytest
plugin's leftover check sees a process that left the test's tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from gymnasiarch import ChildSpec, Supervisor, _platform
from gymnasiarch._process import subreaper
from gymnasiarch.testing import _no_leftovers
from gymnasiarch.testing import _wait_gone as _gone_within

TESTS = Path(__file__).parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


_SHELL_DAEMON = "setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!"


def _parent(pid: int) -> int | None:
    info = subreaper.stat(pid)
    return info.ppid if info is not None else None


def _alive(pid: int) -> bool:
    info = subreaper.stat(pid)
    return info is not None and info.state != "Z"


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- item 9: the fork server is no single point of failure ---------------------------


class _Tree:
    """tests/targets/escapes.py as a supervisor process of its own, driven over stdin."""

    def __init__(self, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "targets.escapes", str(count)],
            cwd=TESTS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.seen: set[int] = set()

    def answer(self) -> dict[str, dict[str, list[int]] | int]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, "the supervisor did not answer in time"
        status: dict[str, dict[str, list[int]] | int] = json.loads(self.proc.stdout.readline())
        children = status["children"]
        assert isinstance(children, dict)
        self.seen.update(pid for pid, _ in children.values() if pid)
        self.seen.update(subreaper.descendants(self.proc.pid))
        return status

    def ask(self, command: str) -> dict[str, dict[str, list[int]] | int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        _kill(_gone_within(sorted(self.seen), 5))
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def _tree(count: int) -> Iterator[_Tree]:
    tree = _Tree(count)
    try:
        yield tree
    finally:
        tree.close()


def test_fork_server_death_kills_no_child_and_the_next_start_gets_a_new_server() -> None:
    """SIGKILL of the fork server under 5 children: they run on, nothing counts as a crash.

    A child started later, and a restart, go through a new fork server; the
    children of the dead one are reaped by the supervisor (no zombie); and
    SIGKILL of the supervisor still takes every child down within 2 s.
    """
    with _tree(5) as tree:
        first = tree.answer()
        server = first["server"]
        assert isinstance(server, int)
        os.kill(server, signal.SIGKILL)
        assert _gone_within([server], 5) == []
        children = first["children"]
        assert isinstance(children, dict)
        pids = [pid for pid, _ in children.values()]
        # Had they died with their fork server, they would within this second.
        assert _gone_within(pids, 1.0) == pids
        assert tree.ask("status")["children"] == children  # same pids, no restart counted

        started = tree.ask("start c5")
        assert started["server"] not in (server, None)  # a new fork server
        restarted = tree.ask("restart c0")
        after = restarted["children"]
        assert isinstance(after, dict)
        assert after["c0"][0] != children["c0"][0]
        # The old c0's exit was read right, though its fork server was gone.
        assert restarted["exits"] == {"c0": [None, signal.SIGTERM]}
        assert {name: after[name] for name in children if name != "c0"} == {
            name: children[name] for name in children if name != "c0"
        }
        # The old c0, a child of the dead server, and that server's spare
        # were reparented to the supervisor: it reaped them.
        zombies = [
            pid
            for pid in subreaper.children(tree.proc.pid)
            if (info := subreaper.stat(pid)) is not None and info.state == "Z"
        ]
        assert zombies == []

        everyone = [pid for pid, _ in after.values()] + subreaper.descendants(tree.proc.pid)
        tree.proc.kill()
        tree.proc.wait(10)
        assert _gone_within(everyone, 2.0) == []


# -- item 7: a setsid daemon does not escape the tree --------------------------------


async def test_a_childs_setsid_daemons_stop_with_it(tmp_path: Path) -> None:
    """A double-fork daemon and ``setsid cmd &`` are stopped and reaped with their child."""
    pidfile = str(tmp_path / "daemons")
    spec = ChildSpec("d", "targets.escapes:daemons_then_sleep", args=(pidfile,), ready_timeout=10)
    async with Supervisor([spec], handle_signals=False) as sup:
        assert subreaper.is_subreaper()
        daemons = json.loads(await anyio.Path(pidfile).read_text())
        # Their middle processes are gone: the daemons are ours now, not init's.
        assert [_parent(pid) for pid in daemons] == [os.getpid()] * 2
        assert all(_alive(pid) for pid in daemons)
        with sup.events() as events:
            await sup.terminate_child("d")
            async for event in events:
                if event.kind == "exited":
                    break
        # Stopped and reaped with their child: not even a zombie is left.
        assert [pid for pid in daemons if subreaper.stat(pid) is not None] == []
    assert not subreaper.is_subreaper()  # the process's own setting is back


async def test_a_stop_gives_escaped_daemons_sigterm_and_the_grace_then_sigkill(
    tmp_path: Path,
) -> None:
    """SIGTERM reaches a child's daemons with its group; one that stays gets SIGKILL with it."""
    journal = tmp_path / "journal"
    spec = ChildSpec(
        "d",
        "targets.escapes:stubborn_with_daemons",
        args=(str(journal),),
        ready_timeout=10,
        shutdown=0.5,
    )
    async with Supervisor([spec], handle_signals=False) as sup:
        polite, stubborn = json.loads(await anyio.Path(f"{journal}.pids").read_text())
        await sup.terminate_child("d")
    assert sorted((await anyio.Path(journal).read_text()).splitlines()) == [
        "polite got SIGTERM",
        "stubborn got SIGTERM",
    ]
    assert [pid for pid in (polite, stubborn) if subreaper.stat(pid) is not None] == []


async def test_the_daemon_of_a_child_that_returned_is_asked_to_stop_first(
    tmp_path: Path,
) -> None:
    """A daemon that ends on SIGTERM gets SIGTERM, not a SIGKILL out of the blue."""
    journal = tmp_path / "journal"
    spec = ChildSpec(
        "d", "targets.escapes:polite_daemon_then_return", args=(str(journal),), restart="temporary"
    )
    async with Supervisor([spec], handle_signals=False) as sup:
        daemon = (await sup.wait())["d"]
    assert (await anyio.Path(journal).read_text()).splitlines() == ["polite got SIGTERM"]
    assert subreaper.stat(daemon) is None


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_daemons_of_a_child_that_returned_go_with_it(tmp_path: Path, backend: str) -> None:
    """A transient child that started daemons and returned: its daemons end with its run."""
    pidfile = str(tmp_path / "daemons")
    spec = ChildSpec(
        "d", "targets.escapes:daemons_then_return", args=(pidfile,), restart="temporary"
    )

    async def scenario() -> dict[str, list[int]]:
        async with Supervisor([spec], handle_signals=False) as sup:
            return await sup.wait()

    result = anyio.run(scenario, backend=backend)
    assert result["d"] == json.loads(Path(pidfile).read_text())
    assert [pid for pid in result["d"] if subreaper.stat(pid) is not None] == []


async def test_the_applications_own_daemons_are_left_alone() -> None:
    """A daemon the embedding application started is no child's: the supervisor does not end it."""
    spec = ChildSpec("c", "targets.escapes:ready_then_sleep", ready_timeout=10)
    async with Supervisor([spec], handle_signals=False):
        shell = await anyio.run_process(["sh", "-c", _SHELL_DAEMON])
        daemon = int(shell.stdout)
    try:
        assert _alive(daemon)
        assert _parent(daemon) == os.getpid()
    finally:
        os.kill(daemon, signal.SIGKILL)
        # It was reparented to us while we were a subreaper: ours to reap.
        await anyio.to_thread.run_sync(os.waitpid, daemon, 0)


async def test_the_subreaper_flag_is_restored_also_when_it_was_set_before() -> None:
    """An application that is a subreaper itself stays one after the supervisor."""
    spec = ChildSpec("c", "targets.escapes:ready_then_sleep", ready_timeout=10)
    _platform.set_child_subreaper(True)
    try:
        other = Supervisor([ChildSpec("n", spec.target, ready_timeout=10)], handle_signals=False)
        async with Supervisor([spec], handle_signals=False), other:
            assert subreaper.is_subreaper()
        assert subreaper.is_subreaper()
    finally:
        _platform.set_child_subreaper(False)


# -- item 8: the leftover check sees what left the tree ------------------------------

_RETITLED_DAEMON = """
import os, time, setproctitle
if os.fork() == 0:
    os.setsid()
    setproctitle.setproctitle("gymnasiarch-forkserver")  # looks like our helper
    print(os.getpid(), flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # let the starter read its output to the end
        os.dup2(devnull, fd)
    time.sleep(3600)
"""


@pytest.mark.parametrize("how", ["setsid sleep", "retitled python daemon"])
def test_the_leftover_check_sees_a_process_that_left_the_tree(how: str) -> None:
    """A daemon leaked on purpose (reparented to init, not our descendant) fails the check.

    The check also ends what it reports, so one leak does not fail the next test.
    """
    command = (
        ["sh", "-c", _SHELL_DAEMON]
        if how == "setsid sleep"
        else [sys.executable, "-c", _RETITLED_DAEMON]
    )
    daemons: list[int] = []
    with (
        pytest.raises(pytest.fail.Exception, match="processes outlived the test") as failed,
        _no_leftovers(),
    ):
        daemons.append(
            int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        )
    try:
        assert _parent(daemons[0]) != os.getpid()  # not our descendant
        assert str(daemons[0]) in str(failed.value)
        assert _gone_within(daemons, 5) == []
    finally:
        _kill(daemons)


def test_the_leftover_check_passes_a_test_that_cleaned_up() -> None:
    with _no_leftovers():
        subprocess.run(["sh", "-c", "sleep 0"], check=True)
