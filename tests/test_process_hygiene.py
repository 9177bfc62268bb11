"""The fork server and the child keep their house in order (issue 14, items 6, 10, 11, 12).

A child's daemon holds nothing that keeps the fork server, the resource
tracker or the caller's pipes alive; a native crash names its Python line;
a module that fails to import in the fork server reports the child's own
traceback; Ctrl-C leaves no traceback of the fork server or its spare.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal

import anyio
import pytest

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch.exceptions import PrematureTaskDeathError
from gymnasiarch.testing import _wait_gone as _gone_within
from targets import hygiene

TESTS = Path(__file__).parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- item 6: nothing a child holds passes to what it executes ----------------------


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
async def test_a_program_a_child_executes_inherits_only_stdin_stdout_stderr(
    method: Literal["forkserver", "spawn"],
) -> None:
    """No channel, tracker, "alive" pipe or data pipe reaches an exec'd program."""
    spec = ChildSpec("x", hygiene.fds_of_an_execd_program, restart="temporary")
    with anyio.fail_after(30):
        results = await Supervisor([spec], start_method=method).run()
    assert results["x"] == []


def test_a_childs_daemon_keeps_neither_the_fork_server_nor_the_callers_pipes(
    tmp_path: Path,
) -> None:
    """The issue's reproduction: a script whose child left a daemon returns, and its helpers end.

    ``subprocess.run(capture_output=True)`` reads the script's stdout and
    stderr to their end: the fork server and the resource tracker hold
    them, so before the fix it hung as long as the daemon lived.
    """
    pidfile = tmp_path / "daemon.pid"
    helpers: list[int] = []
    try:
        done = subprocess.run(
            [sys.executable, "-m", "targets.hygiene", "daemon", str(pidfile)],
            cwd=TESTS,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,  # a bound on a hang, not a measurement
            start_new_session=True,
        )
        assert done.returncode == 0, done.stderr
        helpers = json.loads(done.stdout)
        daemon = int(pidfile.read_text())
        # It still runs (the subreaper cannot tell it is ours, see
        # targets.hygiene.start_daemon): it is not what ended the helpers.
        os.kill(daemon, 0)
        assert _gone_within(helpers, 10) == []
    finally:
        _kill(helpers)
        if pidfile.exists():
            _kill([int(pidfile.read_text())])


# -- item 10: a native crash says where ------------------------------------------


async def test_a_segfault_deep_in_the_stack_names_the_line_that_crashed() -> None:
    """faulthandler is on in the child; the error's output keeps the dump's head and tail."""
    spec = ChildSpec("crasher", hygiene.segfault_deep, args=(200,), restart="transient")
    with anyio.fail_after(30), pytest.raises(PrematureTaskDeathError) as caught:
        await Supervisor([spec], max_restarts=0).run()
    output = caught.value.output or ""
    lines, first = inspect.getsourcelines(hygiene._crash_here)
    crash_line = first + next(i for i, text in enumerate(lines) if "string_at" in text)
    assert output.startswith("Fatal Python error: Segmentation fault"), output
    assert f'hygiene.py", line {crash_line} in _crash_here' in output
    assert "in segfault_deep" in output
    assert len(output.splitlines()) <= 100  # bounded, however deep the stack


# -- item 11: an import error in the fork server ----------------------------------


def _first_supervisor_preloading(module: str) -> tuple[dict[str, str], str]:
    """Run targets.hygiene's ``preload`` script: the error it reported, and its raw stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "targets.hygiene", "preload", module],
        cwd=TESTS,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, str] = json.loads(done.stdout)
    return report, done.stderr


def test_a_module_that_fails_in_the_fork_server_reports_the_childs_own_traceback() -> None:
    """The first supervisor preloads a module that imports only after the app's setup."""
    report, stderr = _first_supervisor_preloading("targets.needs_setup")
    assert "configure the application before importing" in report["error"]
    assert "RuntimeError: configure the application" in report["traceback"]
    assert "unexpected EOF" not in report["error"]
    assert "Traceback" not in stderr  # nothing raw from the fork server


def test_a_fork_server_that_dies_importing_a_preload_says_how_it_ended() -> None:
    """A preload that ends the server itself (os._exit, a crash): not just "unexpected EOF"."""
    report, _ = _first_supervisor_preloading("targets.exits_on_import")
    assert "could not be started" in report["error"]
    assert re.search(r"the fork server \(pid \d+\) exited \(3\)", report["error"]), report


# -- item 12: Ctrl-C --------------------------------------------------------------


def test_ctrl_c_prints_no_traceback_of_the_fork_server_or_its_spare() -> None:
    """SIGINT to the whole group, as a terminal sends it: only the supervisor answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "targets.tree_script", "2"],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        # The children, the fork server and its spare (forked as soon as
        # the last child had started; the script prints once they are ready).
        pids = json.loads(proc.stdout.readline())
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert "SignalInterruptError SIGINT" in out
        assert "KeyboardInterrupt" not in err, err
        assert "Traceback" not in err, err
        assert _gone_within(pids, 10) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        _kill(pids)
