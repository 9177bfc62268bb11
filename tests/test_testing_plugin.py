"""gymnasiarch.testing, the pytest plugin users get: run in a separate pytest session."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import signal
import subprocess

import anyio
import pytest

from gymnasiarch import ChildSpec
from gymnasiarch.testing import freeze_child, kill_child, stubborn, thaw_child, wait_for


def test_restart_policy_survives_a_kill(gymnasiarch_supervise):
    async def scenario():
        async with gymnasiarch_supervise([ChildSpec("env", "targets_for_users:serve")]) as sup:
            with sup.events() as events:
                await kill_child(sup, "env")
                exited = await wait_for(sup, "exited", child="env", events=events)
                assert exited.signum == signal.SIGKILL
                await wait_for(sup, "ready", child="env", events=events)
            freeze_child(sup, "env")
            thaw_child(sup, "env")
            assert [c.restarts for c in sup.which_children()] == [1]

    anyio.run(scenario)


def test_stubborn_child_is_killed_after_its_grace(gymnasiarch_supervise):
    async def scenario():
        spec = stubborn(ChildSpec("env", "targets_for_users:serve", shutdown=0.2, ready_timeout=5))
        async with gymnasiarch_supervise([spec]) as sup:
            events = sup.events()
        with events:
            return [e async for e in events if e.kind == "exited"]

    exits = anyio.run(scenario)
    assert exits[0].signum == signal.SIGKILL


@pytest.fixture
def reaper():
    started = []
    yield started
    for process in started:  # after the leftover check has run
        process.kill()
        process.wait()


def test_leaky(reaper, gymnasiarch_no_leftovers):
    reaper.append(subprocess.Popen(["sleep", "30"]))
"""

TARGETS = """
import time

from gymnasiarch import child_context


def serve():
    child_context().ready()
    while True:
        time.sleep(3600)
"""


def test_plugin_fixtures_and_fault_injection(pytester: pytest.Pytester) -> None:
    """The fixtures run supervisors and catch a process that outlives its test."""
    pytester.makepyfile(test_user=USER_TESTS, targets_for_users=TARGETS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*processes outlived the test*sleep 30*"])
