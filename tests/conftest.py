"""Fixtures every test gets: nothing leaks out of a test, nothing leaks in."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from multiprocessing import forkserver
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# multiprocessing's resource tracker and our fork server live as long as the
# test process (the fork server's children, our supervised processes, are
# checked): the same leftover check our users get from gymnasiarch.testing.
from gymnasiarch._process.forkserver import SERVER
from gymnasiarch._process.run import PRELOAD
from gymnasiarch.testing import _no_leftovers

# A supervisor leaves a signal alone that is ignored when it starts (nohup's
# SIGHUP, a background job's SIGINT), and processes inherit ignored signals:
# a test run started that way gets them back, so that the tests that send
# them do not depend on how the run was started.
for _signum, _handler in (
    (signal.SIGINT, signal.default_int_handler),
    (signal.SIGHUP, signal.SIG_DFL),
):
    if signal.getsignal(_signum) == signal.SIG_IGN:
        signal.signal(_signum, _handler)

if TYPE_CHECKING:
    from gymnasiarch._backends.ray_host import ChildHost


@pytest.fixture(autouse=True, scope="session")
def long_lived_helpers() -> None:
    """Start the fork server (and resource tracker) before the first test.

    They hold file descriptors for the rest of the session; started inside
    a test, they would look like that test's leak.
    """
    SERVER.ensure_running([*PRELOAD, "targets.basic"])
    # Some tests start helper processes with multiprocessing's own fork server.
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
    with _no_leftovers():
        yield


@pytest.fixture(autouse=True)
def own_control_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give the ``gymnasiarch run`` of each test a default control socket of its own.

    The default is one per user and machine: any other run there (a developer's, another
    test session's) holds it, and the test's run is refused ("another gymnasiarch run is
    serving at ..."). A short directory: a socket's path has at most 107 bytes.
    """
    with tempfile.TemporaryDirectory(prefix="gymnasiarch-test-") as runtime:
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
        yield


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """Give each test the root logger's handlers and level as it found them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChildHost]:
    """The Ray backend's host actor class (no Ray), its node's fork server a shared one of ours.

    ``ChildHost`` never imports Ray itself: what it asks Ray (its node's
    fork server, its node's id and address) is stood in for here.
    """
    from gymnasiarch._backends import ray_host  # only for the tests that host a child
    from test_forkserver import _Shared  # a test module: loaded on use

    servers = _Shared(tmp_path / "private" / "node")
    requester = servers.requester()
    monkeypatch.setattr(ray_host, "node_fork_server", lambda: requester)
    monkeypatch.setattr(ray_host, "_node", lambda: ("node-1", "127.0.0.1"))
    try:
        yield ray_host.ChildHost()
    finally:
        servers.end()
