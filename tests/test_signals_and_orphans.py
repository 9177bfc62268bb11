"""A supervisor in its own process: signals, Ctrl-C, and SIGKILL of the supervisor."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gymnasiarch._supervisor.supervisor import _SAME_PRESS
from gymnasiarch.testing import _wait_gone as wait_all_gone

TESTS = Path(__file__).parent


@contextmanager
def tree_process(
    *args: str, under: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Start tests/targets/tree_script.py in its own session; yield it and its children's pids.

    *under* is a command that runs it (``("nohup",)``), which must exec it.
    """
    proc = subprocess.Popen(
        [*under, sys.executable, "-m", "targets.tree_script", *args],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the supervisor did not report its children in time"
        pids = json.loads(proc.stdout.readline())
        yield proc, pids
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def _kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def assert_stopped_by(
    signum: signal.Signals, proc: subprocess.Popen[str], out: str, pids: list[int]
) -> None:
    """The supervisor reported SignalInterruptError(signum), exited 128+N, left no child."""
    survivors = wait_all_gone(pids, 2)
    _kill_leftovers(survivors)
    assert f"SignalInterruptError {signum.name}" in out
    assert proc.returncode == 128 + signum
    assert survivors == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_to_supervisor_stops_tree_and_raises(backend: str) -> None:
    """SIGTERM makes an orderly shutdown and SignalInterruptError(SIGTERM); children are gone."""
    with tree_process("3", "--backend", backend) as (proc, pids):
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert_stopped_by(signal.SIGTERM, proc, out, pids)


def test_ctrl_c_to_the_foreground_group_is_one_orderly_shutdown() -> None:
    """SIGINT to the whole process group (a terminal's Ctrl-C) ends in SignalInterruptError."""
    with tree_process("3") as (proc, pids):
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert_stopped_by(signal.SIGINT, proc, out, pids)


@pytest.mark.skipif(shutil.which("nohup") is None, reason="needs nohup (coreutils)")
def test_a_tree_under_nohup_outlives_its_terminals_hangup() -> None:
    """Under ``nohup`` a closed terminal's SIGHUP changes nothing; a SIGTERM stops the tree."""
    with tree_process("3", under=("nohup",)) as (proc, pids):
        os.killpg(proc.pid, signal.SIGHUP)
        proc.send_signal(signal.SIGTERM)  # caught after the SIGHUP, had that been caught
        out, _ = proc.communicate(timeout=20)
    assert_stopped_by(signal.SIGTERM, proc, out, pids)


def test_second_ctrl_c_during_shutdown_kills_at_once() -> None:
    """Children ignoring SIGTERM with a 60 s grace: a second SIGINT ends the wait now."""
    with tree_process("2", "--stubborn") as (proc, pids):
        assert proc.stdout is not None
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout.readline() == "shutting down\n"
        # A person's second press: later than a wrapper's forwarded copy of the first.
        time.sleep(_SAME_PRESS + 0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=20)  # well inside the 60 s grace period
    assert_stopped_by(signal.SIGINT, proc, out, pids)


@pytest.mark.parametrize("print_on", ["ready", "started"])
def test_sigkill_of_supervisor_leaves_no_orphans(print_on: str) -> None:
    """If the supervisor is SIGKILLed, every child exits within 2 s (also right after start)."""
    with tree_process("4", "--print-on", print_on) as (proc, pids):
        proc.kill()
        proc.wait(10)
    survivors = wait_all_gone(pids, 2)
    _kill_leftovers(survivors)
    assert survivors == []


_ARMED_CHILD = """
import subprocess, sys, time
from gymnasiarch._process.child import _kill_on_eof
grandchild = subprocess.Popen(["sleep", "30"])
assert _kill_on_eof(0)  # stdin: a pipe nobody ever writes to
print(grandchild.pid, flush=True)
time.sleep(30)
"""


def test_eof_on_the_parents_pipe_kills_the_childs_whole_group() -> None:
    """The thread-free EOF guard: the kernel SIGKILLs the group when the pipe closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ARMED_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a supervised child has
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        grandchild = int(proc.stdout.readline())
        proc.stdin.close()  # what the supervisor's death does to the real pipe
        assert proc.wait(10) == -signal.SIGKILL
        survivors = wait_all_gone([grandchild], 2)
        _kill_leftovers(survivors)
        assert survivors == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
