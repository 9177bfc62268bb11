"""Start a multiprocessing process from the event loop, quickly and without blocking it.

Two things of the stdlib's process start are wrong for a supervisor:

* Every forkserver or spawn child re-imports the parent's ``__main__``. That
  costs an interpreter's worth of imports per start and runs any unguarded
  top-level code of the script (a script that starts a supervisor would start
  one in every child). Our children need it only when their target lives
  there, so we leave it out otherwise.
* ``Process.start()`` with the fork server blocks until the server has
  forked and sent back the pid (about 2 ms), so fifty starts queue up behind
  each other in the event loop's thread; it also polls every living child on
  every start. Our fork-server start writes its request, awaits the pid on the
  status pipe through anyio, and never registers the process with
  multiprocessing's bookkeeping (we reap it ourselves). The fork server is
  our own (:mod:`gymnasiarch._process.forkserver`), which forks ahead of demand.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import types
from collections.abc import Iterator
from typing import Any, Protocol

import anyio

from gymnasiarch import _platform
from gymnasiarch._process import cpython
from gymnasiarch._process.forkserver import SERVER, Requester

_PID_TIMEOUT = 30.0  # seconds for the fork server to answer a request with a pid
_DEATH_WAIT = 0.5  # seconds, after EOF for a pid, for the fork server's exit (see _server_death)
_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")


class Started(Protocol):
    """What the process layer needs of a started process."""

    pid: int
    sentinel: int

    def poll(self) -> int | None:
        """The exit code once the process has exited and been reaped, else None."""

    def close(self) -> None:
        """Release the process's resources (after it was reaped)."""


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class _ForkServerStart(cpython.ForkServerPopen):
    """The stdlib's fork-server start, with the wait for the pid left to the caller."""

    pid: int
    sentinel: int

    def __init__(self, process: Any, preload: list[str], server: Requester) -> None:
        self._fds: list[int] = []
        self._preload = preload
        self._server = server
        # Pickle the process first (collecting the fds it passes on in
        # self._fds): its pickled form tells whether it needs __main__.
        buffer = io.BytesIO()
        cpython.set_spawning_popen(self)
        try:
            cpython.dump(process, buffer)
        finally:
            cpython.set_spawning_popen(None)
        self._payload = buffer.getvalue()
        # popen_fork.Popen.__init__ flushes stdio and calls _launch; the
        # fork-server Popen's own __init__ would reset self._fds.
        cpython.fork_popen_init(self, process)

    def _launch(self, process: Any) -> None:
        prep = cpython.get_preparation_data(cpython.process_name(process))
        if b"__main__" not in self._payload:
            for key in _MAIN_KEYS:
                prep.pop(key, None)
        buffer = io.BytesIO()
        cpython.set_spawning_popen(self)  # the authkey pickles only then
        try:
            cpython.dump(prep, buffer)
        finally:
            cpython.set_spawning_popen(None)
        buffer.write(self._payload)
        self.sentinel, data = self._server.request(self._fds, self._preload)
        try:
            # The child watches a duplicate of the data pipe's write end to
            # learn that its parent died (multiprocessing.parent_process().sentinel).
            parent_alive = os.dup(data)
        except BaseException:
            # Closing both ends tells the child already forked to go away.
            _close_fds(self.sentinel, data)
            raise
        self.finalizer = cpython.Finalize(self, _close_fds, (parent_alive, self.sentinel))
        with open(data, "wb", closefd=True) as stream:
            stream.write(buffer.getbuffer())


async def start_forkserver(process: Any, preload: list[str], server: Requester = SERVER) -> Started:
    """Start *process* (a not yet started ``ForkServerProcess``) through a fork server.

    The fork server (ours by default) should be running already (the
    supervisor starts it in a worker thread); else it starts here, with
    *preload*. Must run in the event loop's thread.
    """
    popen = _ForkServerStart(process, preload, server)
    try:
        # Shielded: the child is on its way and must not be lost. The wait
        # is short, ends with EOF should the fork server be gone, and is
        # bounded should it hang (closing our ends then sends the child off).
        with anyio.CancelScope(shield=True), anyio.fail_after(_PID_TIMEOUT):
            await anyio.wait_readable(popen.sentinel)
        popen.pid = cpython.read_signed(popen.sentinel)
    except (EOFError, TimeoutError) as error:
        popen.close()
        why = await _server_death(server) if isinstance(error, EOFError) else None
        raise OSError(
            f"the fork server did not start the child: {why or error or 'no answer'}"
        ) from None
    except BaseException:
        popen.close()
        raise
    return popen


async def _server_death(server: Requester) -> str | None:
    """After EOF for a pid: how the fork server ended, if that is why (issue 14).

    A server that died (importing a preload that crashed, say) closed our
    pipe a moment before it became a zombie: its exit is awaited on a pidfd,
    briefly (a server that is alive, and only failed this request, keeps the
    wait from being long).
    """
    if server.pid is None:
        return None
    try:
        pidfd = _platform.pidfd_open(server.pid)
    except OSError:  # reaped already, or no pidfds here
        return server.death()
    try:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_DEATH_WAIT):
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return server.death()


@contextlib.contextmanager
def _main_module_hidden(*, unless: bool) -> Iterator[None]:
    """Hide ``__main__`` from multiprocessing while a spawn child starts.

    Runs synchronously in the event loop's thread, between two checkpoints,
    so nothing else sees the stand-in module.
    """
    if unless:
        yield
        return
    real_main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real_main


class _SpawnStarted:
    """A started spawn process, with the face of :class:`Started`."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.pid: int = process.pid
        self.sentinel: int = process.sentinel

    def poll(self) -> int | None:
        code: int | None = self._process.exitcode
        return code

    def close(self) -> None:
        # A process that would not die (abandoned as a zombie) keeps its
        # sentinel: multiprocessing refuses to close a running process.
        with contextlib.suppress(ValueError):
            self._process.close()


def start_spawn(process: Any, needs_main: bool) -> Started:
    """Start *process* (a not yet started ``SpawnProcess``): fork and exec, no wait."""
    with _main_module_hidden(unless=needs_main):
        process.start()
    return _SpawnStarted(process)
