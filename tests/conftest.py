"""Fixtures every test gets: nothing leaks out of a test, nothing leaks in."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator
from multiprocessing import forkserver
from pathlib import Path

import pytest

# multiprocessing's resource tracker and fork server are started once per
# test process and live as long as it: they are not something a test left
# behind. (The fork server's children, our supervised processes, are checked.)
_LONG_LIVED_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _process_table() -> dict[int, tuple[int, str]]:
    """Map pid -> (ppid, "state cmdline") for every process, zombies included."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited while we looked
        # The command name may contain spaces and parentheses: split after the last ")".
        state, ppid = stat.rpartition(")")[2].split()[:2]
        table[int(entry.name)] = (int(ppid), f"{state} {cmdline.strip()}")
    return table


def _descendants_of(pid: int) -> dict[int, str]:
    """Map pid -> "state cmdline" for every descendant of *pid*."""
    table = _process_table()
    found: dict[int, str] = {}
    parents = {pid}
    while parents:
        parents = {p for p, (ppid, _) in table.items() if ppid in parents and p not in found}
        found.update({p: table[p][1] for p in parents})
    return found


def is_helper(what: str) -> bool:
    return any(helper in what for helper in _LONG_LIVED_HELPERS)


@pytest.fixture(autouse=True, scope="session")
def long_lived_helpers() -> None:
    """Start the fork server (and resource tracker) before the first test.

    They hold file descriptors for the rest of the session; started inside
    a test, they would look like that test's leak.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["gymnasiarch._child", "tests.targets.basic"])
    forkserver.ensure_running()


def _open_fds() -> dict[int, str]:
    """Map fd -> what it points to, for this process's open file descriptors."""
    found: dict[int, str] = {}
    for entry in Path("/proc/self/fd").iterdir():
        try:
            found[int(entry.name)] = os.readlink(entry)
        except OSError:
            continue  # the directory's own fd, closed by now
    return found


@pytest.fixture(autouse=True)
def no_fd_left_open() -> Iterator[None]:
    """Fail the test if it leaves a file descriptor open (CPython's --fail-env-changed)."""
    before = _open_fds()
    yield
    leftover = {fd: what for fd, what in _open_fds().items() if before.get(fd) != what}
    if leftover:
        pytest.fail(f"test left file descriptors open: {leftover}")


@pytest.fixture(autouse=True)
def no_thread_left_running() -> Iterator[None]:
    """Fail the test if a thread it started is still running a moment after it ended."""
    before = set(threading.enumerate())
    yield
    # Worker threads of an event loop that just closed are on their way out.
    # trio keeps its idle workers in a process-wide cache for 10 s, to reuse.
    started = [
        t for t in threading.enumerate() if t not in before and not t.name.startswith("Trio thread")
    ]
    for thread in started:
        thread.join(timeout=2.0)
    leftover = [t.name for t in started if t.is_alive()]
    if leftover:
        pytest.fail(f"test left threads running: {leftover}")


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the test if it leaves a child process (or a zombie) of ours behind."""
    before = set(_descendants_of(os.getpid()))
    yield
    leftover = {
        pid: what
        for pid, what in _descendants_of(os.getpid()).items()
        if pid not in before and not is_helper(what)
    }
    if leftover:
        pytest.fail(f"test left processes behind: {leftover}")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """Give each test the root logger's handlers and level as it found them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
