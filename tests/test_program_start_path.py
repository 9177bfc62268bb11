"""The short paths of a program's start and exit (issue 16's performance figures).

Each test pins down one thing the fast path skips, with real processes, and
that what it skips was not needed: a program found on PATH is exec'd without
a failed ``execve`` for each entry before it (and with ``os.execvpe``'s
results otherwise); the child's environment is replaced by touching only
the variables that differ; ``start_child`` of a program takes no round trip
through a worker thread; and a program's exit reads ``/proc`` once rather
than scanning it for escapees when nothing can have escaped (while a daemon
that did escape is still ended with it).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._process import child as child_module
from gymnasiarch._process import subreaper
from gymnasiarch.ready import Path as PathReady

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def _program(folder: Path, body: str, *, executable: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prog"
    path.write_text(f"#!/bin/sh\n{body}\n")
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _exec_in_a_fork(entries: list[Path]) -> tuple[list[str], int]:
    """Run ``_exec_searching("prog")`` with PATH *entries* in a forked process.

    Returns the paths it handed to ``execve``, in order, and the exit code
    of the process (the program's, or 127 if nothing could be exec'd).
    """
    reader, writer = os.pipe()  # not inheritable: EOF once the exec succeeded
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked process
        try:
            os.close(reader)
            real = os.execve

            def recording(path: str, argv: list[str], env: dict[str, str]) -> None:
                os.write(writer, os.fsencode(path) + b"\n")
                real(path, argv, env)

            os.execve = recording  # type: ignore[assignment]
            path = os.pathsep.join(str(entry) for entry in entries)
            child_module._exec_searching("prog", ["prog"], {"PATH": path})
        finally:
            os._exit(127)
    os.close(writer)
    with os.fdopen(reader, "rb") as stream:
        tried = stream.read().decode().split()
    _, status = os.waitpid(pid, 0)
    return tried, os.waitstatus_to_exitcode(status)


def test_a_program_on_path_is_exec_d_without_failed_execs_before_it(tmp_path: Path) -> None:
    found = _program(tmp_path / "bin", "exit 7")
    tried, code = _exec_in_a_fork([tmp_path / "none", tmp_path / "neither", tmp_path / "bin"])
    assert code == 7  # it ran
    assert tried == [str(found)]  # os.execvpe would have tried both missing entries first


def test_an_entry_that_holds_no_executable_leaves_the_search_to_execvpe(tmp_path: Path) -> None:
    plain = _program(tmp_path / "plain", "exit 3", executable=False)
    found = _program(tmp_path / "bin", "exit 7")
    tried, code = _exec_in_a_fork([tmp_path / "none", tmp_path / "plain", tmp_path / "bin"])
    # As os.execvpe does: the file that cannot be exec'd is tried, and passed over.
    assert code == 7
    assert tried[-2:] == [str(plain), str(found)]


def test_a_program_found_nowhere_still_fails_as_execvpe_does(tmp_path: Path) -> None:
    tried, code = _exec_in_a_fork([tmp_path / "none", tmp_path / "neither"])
    assert code == 127
    assert tried == [str(tmp_path / "none" / "prog"), str(tmp_path / "neither" / "prog")]


def test_replacing_the_environment_touches_only_what_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GYMNASIARCH_TEST_CHANGED", "old")
    monkeypatch.setenv("GYMNASIARCH_TEST_GONE", "x")
    monkeypatch.delenv("GYMNASIARCH_TEST_NEW", raising=False)
    wanted = {**os.environ, "GYMNASIARCH_TEST_CHANGED": "new", "GYMNASIARCH_TEST_NEW": "n"}
    del wanted["GYMNASIARCH_TEST_GONE"]
    calls: list[tuple[str, str]] = []
    real_put, real_unset = os.putenv, os.unsetenv

    def put(key: str | bytes, value: str | bytes) -> None:
        calls.append(("put", os.fsdecode(key)))
        real_put(key, value)

    def unset(key: str | bytes) -> None:
        calls.append(("unset", os.fsdecode(key)))
        real_unset(key)

    monkeypatch.setattr(os, "putenv", put)
    monkeypatch.setattr(os, "unsetenv", unset)
    child_module._replace_environ(wanted)
    assert dict(os.environ) == wanted
    assert calls == [
        ("unset", "GYMNASIARCH_TEST_GONE"),
        ("put", "GYMNASIARCH_TEST_CHANGED"),
        ("put", "GYMNASIARCH_TEST_NEW"),
    ]


async def test_start_child_of_a_program_takes_no_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        checked.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    first = ChildSpec("first", command=["sleep", "1000"])
    async with Supervisor([first], handle_signals=False) as sup:
        monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
        await sup.start_child(ChildSpec("second", command=["sleep", "1000"]))
        assert checked == []
        # A Python target is still imported and checked off the caller's loop.
        await sup.start_child(ChildSpec("third", "os:getpid", restart="temporary"))
        assert checked == ["_check_and_preload"]


# Run in an interpreter of its own: an unrelated child of the test process
# (another test's helper) would rightly send the exit down the full scan.
_EXIT_PROBE = r"""
import json, os, signal, anyio
from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._process import run

scans = []
for name in ("escapees", "reap_strays"):
    real = getattr(run, name)
    def counting(*args, _real=real, _name=name, **kwargs):
        scans.append(_name)
        return _real(*args, **kwargs)
    setattr(run, name, counting)

async def main():
    spec = ChildSpec("p", command=["sleep", "1000"], restart="temporary")
    async with Supervisor([spec], handle_signals=False) as sup:
        with sup.events() as events:
            (row,) = [r for r in sup.walk() if r.name == "p"]
            scans.clear()  # the supervisor's start sweeps once, on purpose
            os.kill(row.pid, signal.SIGKILL)
            async for event in events:
                if event.kind == "exited":
                    break
        print(json.dumps(scans))

anyio.run(main)
"""


@linux_only
def test_a_programs_exit_scans_no_proc_when_nothing_escaped() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@linux_only
async def test_a_daemon_left_by_a_killed_program_still_ends_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon"
    script = (
        "setsid sleep 1000 </dev/null >/dev/null 2>&1 & "
        f"echo $! > {pidfile}.new && mv {pidfile}.new {pidfile}; exec sleep 1000"
    )
    spec = ChildSpec("p", command=["sh", "-c", script], ready=PathReady(str(pidfile)))
    async with Supervisor([spec], handle_signals=False) as sup:
        daemon = int(pidfile.read_text())
        with sup.events() as events:
            (row,) = [r for r in sup.walk() if r.name == "p"]
            assert row.pid is not None
            os.kill(row.pid, signal.SIGKILL)  # the program alone: its daemon comes to us
            async for event in events:
                if event.kind == "exited" and event.child == "p":
                    break
        # Found among our children at the program's exit, ended and reaped.
        assert subreaper.stat(daemon) is None
