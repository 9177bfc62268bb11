"""Asking our fork server for children: the requester's side.

The server process itself (its spare forked ahead of demand, its loop, the
child's first steps) is :mod:`~gymnasiarch._process.forkserver_main`; this
module starts it and sends it requests in multiprocessing's protocol: the
data pipe's read end, the status pipe's write end, the "alive" pipe, the
resource tracker and the fds the pickled process passes on, over a private
Unix socket (``SCM_RIGHTS``); the server writes the child's pid, and later
its exit code, to the status pipe.

Two requesters share the request itself (:func:`request_child`), each with
its own way to find the server: :class:`ForkServer` (:data:`SERVER`), a
helper of this process that ends with it, and :class:`SharedForkServer`, one
per Ray node that outlives whoever started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from gymnasiarch import _platform
from gymnasiarch._process import cpython

#: What the server's ``-c`` command imports (the pytest plugin knows the server by it
#: until the server has set its title).
SERVER_MODULE = "gymnasiarch._process.forkserver_main"
# First words of the server's command: a terminal's Ctrl-C reaches the whole
# foreground group, the server and its spare too, and is the supervisor's to
# handle (issue 14): the server must not die of it, nor print a
# KeyboardInterrupt traceback into the live view, not even while it imports.
_IGNORE_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
# And first of all, a session of its own, so its children share an autogroup
# apart from the supervisor's: where the kernel groups CPU time by session
# (CONFIG_SCHED_AUTOGROUP, the default of most distributions), twenty children
# booting at once then weigh on the caller's event loop as one process, not
# twenty (issue 13's E1: p99 lag 5-10 ms before, 3.7-5.3 ms after). Children
# lose nothing by it: each leads a process group of its own, never the
# terminal's foreground one, and a supervisor is what stops them.
_OWN_SESSION = "import os; os.setsid(); "


class Requester(Protocol):
    """What a fork-server start needs of a requester (either kind)."""

    #: The server's pid where it is this process's child, else None.
    pid: int | None

    def request(self, fds: list[int], preload: list[str]) -> tuple[int, int]:
        """Ask for a child; return the (status pipe read end, data pipe write end)."""
        ...

    def death(self) -> str | None:
        """How the server ended, if it has and this process can tell."""
        ...


def request_child(
    send: Callable[[list[int]], None], alive_w: int, tracker_fd: int, fds: list[int]
) -> tuple[int, int]:
    """One request: open the child's pipes, *send* them with the rest; the requester's ends.

    Returns the (status pipe read end, data pipe write end). Everything is
    opened before the connection: out of file descriptors, the request
    fails here and the server never hears of it.
    """
    opened: list[int] = []
    try:
        status_r, status_w = os.pipe()
        opened += (status_r, status_w)
        data_r, data_w = os.pipe()
        opened += (data_r, data_w)
        send([data_r, status_w, alive_w, tracker_fd, *fds])
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    os.close(data_r)
    os.close(status_w)
    return status_r, data_w


def send_fds(address: str, fds: list[int]) -> None:
    """Hand a request's descriptors to the server listening at *address*."""
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(address)
        cpython.sendfds(client, fds)


class ForkServer:
    """This process's fork server: started once, a helper that ends with its requester."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pid: int | None = None
        self._address: str | None = None
        self._alive_w: int | None = None

    def running(self) -> bool:
        """True if this process has started the server (it may have died since)."""
        return self.pid is not None

    def ensure_running(self, preload: list[str]) -> None:
        """Start the server with *preload* imported, unless it runs already (blocks).

        A server that died is replaced. *preload* counts only when the
        server starts: modules it lacks are imported by each child instead.
        """
        with self._lock:
            cpython.ensure_tracker_running()
            if self.pid is not None:
                try:
                    pid, _ = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # we are a fork of its requester: not ours
                    pid = self.pid
                if not pid:
                    return
                self._forget()
            self._start(preload)

    def death(self) -> str | None:
        """How the server ended, if it has (it is forgotten then: the next start replaces it).

        None while it runs, or where it is not this process's child.
        """
        with self._lock:
            if self.pid is None:
                return None
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if not pid:
                return None
            self._forget()
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        return f"the fork server (pid {pid}) {how}; its stderr may say why"

    def _forget(self) -> None:
        if self._alive_w is not None:
            os.close(self._alive_w)
        self.pid = self._address = self._alive_w = None

    def _start(self, preload: list[str]) -> None:
        with socket.socket(socket.AF_UNIX) as listener:
            # In multiprocessing's private (0700) directory for this process.
            address = cpython.arbitrary_address("AF_UNIX")
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen()
            # Every requesting process holds the "alive" pipe's write end;
            # the server stops when the read end sees EOF.
            alive_r, alive_w = os.pipe()
            try:
                command = (
                    f"{_OWN_SESSION}{_IGNORE_SIGINT}from {SERVER_MODULE} import main; "
                    f"main({listener.fileno()}, {alive_r}, {preload!r}, {sys.path!r})"
                )
                executable = cpython.get_executable()
                flags = cpython.interpreter_flags()
                args = [executable, *flags, "-c", command]
                pid = cpython.spawnv_passfds(
                    os.fsencode(executable), args, [listener.fileno(), alive_r]
                )
            except BaseException:
                os.close(alive_w)
                raise
            finally:
                os.close(alive_r)
        self.pid, self._address, self._alive_w = pid, address, alive_w

    def request(self, fds: list[int], preload: list[str]) -> tuple[int, int]:
        """Ask for a child; return the (status pipe read end, data pipe write end).

        Starts the server first if it is not running (see :func:`request_child`).
        """
        self.ensure_running(preload)
        address, alive_w = self._address, self._alive_w
        assert address is not None
        assert alive_w is not None
        # The child registers its semaphores and shared memory with our tracker.
        tracker: int = cpython.tracker_fd()  # type: ignore[assignment]
        return request_child(lambda sent: send_fds(address, sent), alive_w, tracker, fds)


SERVER = ForkServer()

#: Seconds a shared server without children waits for a request before it ends.
SHARED_IDLE_EXIT = 60.0


class SharedForkServer:
    """A fork server shared by the processes of one user that name the same directory.

    The Ray hosts use one per node (and job): every actor there asks the
    same server for its child, so a child's start costs a fork, not an
    interpreter's boot. Unlike :data:`SERVER`, the server is nobody's
    helper: it runs in a session of its own, outlives the process that
    started it, and ends when the process *anchor_pid* does (the node's
    Ray daemon) or after :data:`SHARED_IDLE_EXIT` seconds without a child.

    A lock file in *directory* keeps the start of a server, the requests and
    the server's idle end apart: a request is sent while no server is about
    to end, and a server ends only with no request waiting. A server that
    ends removes the directory (under that lock, unless a newer server has
    moved in), so a node keeps no trace of a job's servers; a requester that
    waited for the lock of a removed file makes the directory again.
    """

    #: Never this process's child (it runs in a session of its own).
    pid: int | None = None

    def __init__(self, directory: str, anchor_pid: int) -> None:
        self.directory = directory
        self.anchor_pid = anchor_pid
        self._path = os.path.join(directory, "forkserver.sock")
        self._lock_path = os.path.join(directory, "lock")
        # Sent where a child expects the requester's "alive" pipe; unused.
        self._alive_w: int | None = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.started_server = False  # whether this requester started the server
        self._made = False  # whether the directory was made and checked

    def running(self) -> bool:
        """True if a server's socket is there (it may be about to end)."""
        return os.path.exists(self._path)

    def death(self) -> str | None:
        """Always None: the server is nobody's child, and a lost one is started again."""
        return None

    def close(self) -> None:
        """Release what this requester holds (the server goes on for the others)."""
        if self._alive_w is not None:
            os.close(self._alive_w)
            self._alive_w = None

    def ensure_running(self, preload: list[str]) -> None:
        """Start the shared server unless one answers already (blocks for a moment)."""
        with self._locked(fcntl.LOCK_EX):
            if not self._answers():
                self._start(preload)

    def _make_directory(self) -> None:
        """Make the directory, private: another user's socket there would get our fds."""
        parent = os.path.dirname(self.directory)
        for path in (parent, self.directory):
            _platform.ensure_private_directory(path)

    @contextlib.contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        while True:
            if not self._made:
                self._make_directory()
                self._made = True
            with _platform.file_locked(self._lock_path, operation, create=True) as held:
                if held:
                    yield
                    return
            # A server that ended idle removed the directory meanwhile: made again.
            self._made = False

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self._path)
            except OSError:
                return False
        return True  # the server reads EOF for a request and goes on

    def _start(self, preload: list[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)  # a dead server's
        anchor = _platform.pidfd_open(self.anchor_pid)
        try:
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(self._path)
                os.chmod(self._path, 0o600)
                listener.listen()
                # The server forks once more, first thing, and its parent
                # exits: a Ray worker kills its child processes when it
                # ends, and its process group (hence the new session).
                command = (
                    f"{_IGNORE_SIGINT}import os; os.fork() and os._exit(0); "
                    f"from {SERVER_MODULE} import main; "
                    f"main({listener.fileno()}, {anchor}, {preload!r}, {sys.path!r}, "
                    f"lock_path={self._lock_path!r}, idle_exit={SHARED_IDLE_EXIT!r})"
                )
                flags = cpython.interpreter_flags()
                server = subprocess.Popen(  # noqa: S603 - our interpreter, our command
                    [cpython.get_executable(), *flags, "-c", command],
                    pass_fds=(listener.fileno(), anchor),
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                # The interpreter's start, ~15 ms, once per node: then it is
                # reaped, and the server is nobody's child.
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
                    raise OSError("the shared fork server did not start") from None
        finally:
            os.close(anchor)
        self.started_server = True

    def request(self, fds: list[int], preload: list[str]) -> tuple[int, int]:
        """Ask for a child; return the (status pipe read end, data pipe write end).

        The server is started (with *preload*) if none answers.
        """
        alive_w = self._alive_w
        assert alive_w is not None, "this requester is closed"
        # The server's own tracker serves its children (see forkserver_main's
        # _run_child): a tracker per requester would be one more interpreter
        # per Ray actor, and a process Ray finds in the actor's group when the
        # actor ends. /dev/null stands in for it, and for the "alive" pipe.
        return request_child(lambda sent: self._send(preload, sent), alive_w, alive_w, fds)

    def _send(self, preload: list[str], fds: list[int]) -> None:
        # Sent under the shared lock, so no server ends with our request in
        # its backlog; a server that ended before is started again, once.
        for attempt in (1, 2):
            with self._locked(fcntl.LOCK_SH):
                try:
                    send_fds(self._path, fds)
                except (FileNotFoundError, ConnectionRefusedError):
                    if attempt == 2:
                        raise
                else:
                    return
            self.ensure_running(preload)
