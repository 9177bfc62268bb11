"""Fixtures every test gets: nothing leaks out of a test, nothing leaks in."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# multiprocessing's resource tracker is started once per test process and
# lives as long as it: it is not something a test left behind.
_LONG_LIVED_HELPERS = ("multiprocessing.resource_tracker",)


def _children_of(pid: int) -> dict[int, str]:
    """Map pid -> "state cmdline" for every direct child of *pid*, zombies included."""
    children: dict[int, str] = {}
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
        if int(ppid) == pid:
            children[int(entry.name)] = f"{state} {cmdline.strip()}"
    return children


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the test if it leaves a child process (or a zombie) of ours behind."""
    before = set(_children_of(os.getpid()))
    yield
    leftover = {
        pid: what
        for pid, what in _children_of(os.getpid()).items()
        if pid not in before and not any(h in what for h in _LONG_LIVED_HELPERS)
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
