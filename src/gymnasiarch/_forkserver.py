"""Our fork server: multiprocessing's design, with a child forked ahead of demand.

multiprocessing's fork server forks when a request arrives, so every start
waits for a ``fork()`` of the preloaded server: 2-4 ms on the machines we
measure, most of a child's start. This server keeps one *spare*: a child
forked while nothing was asked, its signal handlers and file descriptors
already put in order, blocked on a socket. A request hands the spare its
pipes (``SCM_RIGHTS``) and the requester gets the spare's pid at once.
Android's zygote pre-forks for the same reason.

When is the next spare forked? Not at once: a fork of the server is ~1-3 ms
of CPU, and on a small machine it would slow down the very child that was
just handed over (measured: +0.9 ms on 2 cores). The child keeps its end of
the spare's socket until it has started (:func:`release_start_slot`, called
just before the target runs, or its exit); the server forks the next spare
when it sees that end closed and no request is waiting. Requests that find
no spare (a burst of them, say) are served by forking on demand, as the
stdlib does.

Everything else is multiprocessing's protocol, so a child runs the stdlib's
``spawn._main`` exactly as under its fork server: the requester sends (data
pipe's read end, status pipe's write end, the "alive" pipe, the resource
tracker, the fds the pickled process passes on), the server writes the pid
and later the exit code to the status pipe, and it stops serving when the
last process holding the "alive" pipe's write end is gone, and exits once
its last child has. Unlike the stdlib's children, ours let go of the alive
pipe (they never ask this server for children): a daemon one of them leaves
behind must not keep the server, and the requester's stdout it holds, alive
(issue 14). SIGINT is ignored from the server's first line on, in the
spare too: Ctrl-C is the supervisor's to handle. It also refuses a
connection from any other user (``SO_PEERCRED``), should the private
socket directory ever be opened up.

The server loop is synchronous on purpose: it is a separate process whose
only job is to wait in ``select`` for requests, exits and its end.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing import connection, forkserver, reduction, resource_tracker, spawn, util
from typing import Any

from gymnasiarch import _platform

_MAX_FDS = forkserver.MAXFDS_TO_SEND
_TITLE = "gymnasiarch-forkserver"
# First words of the server's command: a terminal's Ctrl-C reaches the whole
# foreground group, the server and its spare too, and is the supervisor's to
# handle (issue 14): the server must not die of it, nor print a
# KeyboardInterrupt traceback into the live view, not even while it imports.
_IGNORE_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "


class ForkServer:
    """The requesting side: starts the server once per process and asks it for children."""

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
            resource_tracker.ensure_running()
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
            address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen()
            # Every requesting process holds the "alive" pipe's write end;
            # the server stops when the read end sees EOF.
            alive_r, alive_w = os.pipe()
            try:
                command = (
                    f"{_IGNORE_SIGINT}from gymnasiarch._forkserver import main; "
                    f"main({listener.fileno()}, {alive_r}, {preload!r}, {sys.path!r})"
                )
                executable = spawn.get_executable()
                flags = util._args_from_interpreter_flags()  # type: ignore[attr-defined]
                args = [executable, *flags, "-c", command]
                pid = util.spawnv_passfds(
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

        Everything is opened before the connection: out of file
        descriptors, the request fails here and the server never hears of it.
        """
        self._before_request(preload)
        assert self._alive_w is not None
        opened: list[int] = []
        try:
            status_r, status_w = os.pipe()
            opened += (status_r, status_w)
            data_r, data_w = os.pipe()
            opened += (data_r, data_w)
            self._send(preload, [data_r, status_w, self._alive_w, self._tracker_fd(), *fds])
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        os.close(data_r)
        os.close(status_w)
        return status_r, data_w

    def _before_request(self, preload: list[str]) -> None:
        self.ensure_running(preload)

    def _tracker_fd(self) -> int:
        """The resource tracker the child registers its semaphores and shared memory with."""
        tracker: int = resource_tracker.getfd()  # type: ignore[assignment]
        return tracker

    def _send(self, preload: list[str], fds: list[int]) -> None:
        """Hand the request's descriptors to the server."""
        assert self._address is not None
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(self._address)
            reduction.sendfds(client, fds)


SERVER = ForkServer()

#: Seconds a shared server without children waits for a request before it ends.
SHARED_IDLE_EXIT = 60.0


class SharedForkServer(ForkServer):
    """A fork server shared by the processes of one user that name the same directory.

    The Ray hosts use one per node (and job): every actor there asks the
    same server for its child, so a child's start costs a fork, not an
    interpreter's boot. Unlike :data:`SERVER`, the server is nobody's
    helper: it runs in a session of its own, outlives the process that
    started it, and ends when the process *anchor_pid* does (the node's
    Ray daemon) or after :data:`SHARED_IDLE_EXIT` seconds without a child.

    A lock file in *directory* keeps the start of a server, the requests and
    the server's idle end apart: a request is sent while no server is about
    to end, and a server ends only with no request waiting.
    """

    def __init__(self, directory: str, anchor_pid: int) -> None:
        super().__init__()
        self.directory = directory
        self.anchor_pid = anchor_pid
        self._path = self._address = os.path.join(directory, "forkserver.sock")
        self._lock_path = os.path.join(directory, "lock")
        # Sent where a child expects the requester's "alive" pipe; unused.
        self._alive_w = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.started_server = False  # whether this requester started the server
        self._made = False  # whether the directory was made and checked

    def running(self) -> bool:
        return os.path.exists(self._path)

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
        if not self._made:
            self._make_directory()
            self._made = True
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)  # and with it the lock

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
                    "from gymnasiarch._forkserver import main; "
                    f"main({listener.fileno()}, {anchor}, {preload!r}, {sys.path!r}, "
                    f"lock_path={self._lock_path!r}, idle_exit={SHARED_IDLE_EXIT!r})"
                )
                flags = util._args_from_interpreter_flags()  # type: ignore[attr-defined]
                server = subprocess.Popen(  # noqa: S603 - our interpreter, our command
                    [spawn.get_executable(), *flags, "-c", command],
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

    def _before_request(self, preload: list[str]) -> None:
        pass  # _send starts the server if it finds none

    def _tracker_fd(self) -> int:
        # The server's own tracker serves its children (see _run_child): a
        # tracker per requester would be one more interpreter per Ray actor,
        # and a process Ray finds in the actor's group when the actor ends.
        assert self._alive_w is not None
        return self._alive_w  # a placeholder: /dev/null

    def _send(self, preload: list[str], fds: list[int]) -> None:
        # Sent under the shared lock, so no server ends with our request in
        # its backlog; a server that ended before is started again, once.
        for attempt in (1, 2):
            with self._locked(fcntl.LOCK_SH):
                try:
                    super()._send(preload, fds)
                except (FileNotFoundError, ConnectionRefusedError):
                    if attempt == 2:
                        raise
                else:
                    return
            self.ensure_running(preload)


# -- the child's side -------------------------------------------------------------

_start_slot: socket.socket | None = None  # a spare's socket, kept until the child has started
from_spare = False  # True in a child that was forked ahead of its request


def release_start_slot() -> None:
    """Tell the server this child has started, so it may fork the next spare.

    Called by the child just before its target runs; a no-op in a child
    that was not a spare (or when called twice).
    """
    global _start_slot
    slot, _start_slot = _start_slot, None
    if slot is not None:
        slot.close()


def _run_child(child_r: int, fds: list[int], own_tracker: bool) -> int:
    """In a forked child with its fds: become the process the requester pickled.

    *own_tracker*: the server runs a resource tracker of its own (a shared
    server), which the child keeps; else it uses its requester's.
    """
    _set_title(f"{_TITLE} child")  # until the child names itself: not a spare any more
    alive, tracker, *inherited = fds
    # Unlike the stdlib's, our children never ask this server for children
    # (a nested supervisor in a child starts a server of its own), and the
    # server waits for its last child anyway: the child lets the requester's
    # "alive" pipe go. Kept, it would pass to whatever the child forks or
    # execs, and a daemon among them would keep the server (holding the
    # supervisor's stdout) alive for as long as it runs (issue 14).
    os.close(alive)
    if own_tracker:
        os.close(tracker)  # the requester's placeholder
    else:
        resource_tracker._resource_tracker._fd = tracker  # type: ignore[attr-defined]
    forkserver._forkserver._inherited_fds = inherited  # type: ignore[attr-defined]
    parent_sentinel = os.dup(child_r)  # EOF when the requester is gone
    code: int = spawn._main(child_r, parent_sentinel)
    return code


def _set_title(title: str) -> None:
    with contextlib.suppress(ImportError):  # setproctitle is a dependency; be lenient
        import setproctitle  # noqa: PLC0415

        setproctitle.setproctitle(title)


# -- the server process ---------------------------------------------------------


class _Spare:
    """A forked child waiting on *sock* for the fds of its request."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock


class _Server:
    def __init__(
        self,
        listener_fd: int,
        alive_r: int,
        lock_path: str | None = None,
        idle_exit: float | None = None,
    ) -> None:
        self.listener = socket.socket(socket.AF_UNIX, fileno=listener_fd)
        self.alive_r = alive_r  # readable at the end: EOF on a pipe, or a pidfd's exit
        self.lock_path = lock_path  # a shared server's (see SharedForkServer)
        self.own_tracker = lock_path is not None  # see main()
        self.idle_exit = idle_exit
        self.sig_r, self.sig_w = os.pipe()
        os.set_blocking(self.sig_r, False)
        os.set_blocking(self.sig_w, False)
        self.selector = selectors.DefaultSelector()
        self.status_of: dict[int, int] = {}  # child pid -> its status pipe's write end
        self.spare: _Spare | None = None
        self.starting: set[socket.socket] = set()  # sockets of spares handed over
        self.fork_failed = False  # no new spare until the next request
        self.ending = False  # see _stop_serving
        self.old_handlers: dict[int, Any] = {}

    def _wants_spare(self) -> bool:
        return self.spare is None and not self.starting and not self.fork_failed and not self.ending

    def _stop_serving(self) -> None:
        """The end (no requester is left, or a shared server's anchor is gone).

        No request is taken from now on; the server goes when its last child
        has been reaped, so that none dies of the parent-death signal before
        its requester has seen it go (a Ray actor whose node is lost reports
        the loss, not a child killed under it).
        """
        self.ending = True
        self.selector.unregister(self.alive_r)
        self.selector.unregister(self.listener)
        if self.lock_path is not None:
            self._unlink_address()

    def _unlink_address(self) -> None:
        """A shared server's: the next requester finds no server and starts one."""
        with contextlib.suppress(OSError):
            os.unlink(self.listener.getsockname())

    def _close_in_child(self) -> None:
        """In a freshly forked child: drop everything of the server's.

        SIGINT stays ignored: a spare waits (and a child starts) under the
        supervisor's Ctrl-C, and the child's bootstrap ignores it too.
        """
        signal.set_wakeup_fd(-1)
        for signum, handler in self.old_handlers.items():
            if signum != signal.SIGINT:
                signal.signal(signum, handler)
        self.selector.close()
        self.listener.close()
        for sock in self.starting:
            sock.close()
        if self.spare is not None:
            self.spare.sock.close()
        for fd in (self.alive_r, self.sig_r, self.sig_w, *self.status_of.values()):
            os.close(fd)

    def _fork(self, child_r: int, fds: list[int]) -> int:
        """Fork a child for a request that found no spare; return its pid."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._close_in_child()
                code = _run_child(child_r, fds, self.own_tracker)
            except BaseException:
                sys.excepthook(*sys.exc_info())
                sys.stderr.flush()
            finally:
                os._exit(code)
        return pid

    def _fork_spare(self) -> None:
        global _start_slot, from_spare
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError:  # out of processes or memory: fork on demand instead
            ours.close()
            theirs.close()
            self.fork_failed = True
            return
        if pid == 0:
            code = 1
            try:
                ours.close()
                self._close_in_child()
                _set_title(f"{_TITLE} spare")
                # While it waits, the spare runs each event loop once: what
                # an async child's first loop would otherwise set up after
                # its start (~1 ms) is done before it is asked for.
                warm = sys.modules.get("gymnasiarch._warm")
                if warm is not None:
                    warm.run_each_event_loop_once()
                try:
                    child_r, *fds = reduction.recvfds(theirs, _MAX_FDS + 1)
                except EOFError:  # the server is gone and never needed us
                    code = 0
                else:
                    _start_slot, from_spare = theirs, True
                    code = _run_child(child_r, fds, self.own_tracker)
            except BaseException:
                sys.excepthook(*sys.exc_info())
                sys.stderr.flush()
            finally:
                os._exit(code)
        theirs.close()
        self.spare = _Spare(pid, ours)

    def _hand_to_spare(self, child_r: int, fds: list[int]) -> int | None:
        """Give a request's fds to the spare; its pid, or None without a live spare."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        try:
            reduction.sendfds(spare.sock, [child_r, *fds])
        except OSError:  # it died (its exit is reaped as an unknown pid)
            spare.sock.close()
            return None
        # EOF on its socket will say it has started (or died).
        self.starting.add(spare.sock)
        self.selector.register(spare.sock, selectors.EVENT_READ)
        return spare.pid

    def _serve_request(self) -> None:
        self.fork_failed = False
        with self.listener.accept()[0] as client:
            if _platform.peer_is_other_user(client) is not None:
                return
            fds = reduction.recvfds(client, _MAX_FDS + 1)
        if len(fds) < 4 or len(fds) > _MAX_FDS:
            for fd in fds:
                os.close(fd)
            return
        child_r, status_w, *rest = fds
        try:
            pid = self._hand_to_spare(child_r, rest)
            if pid is None:
                pid = self._fork(child_r, rest)
        except BaseException:
            os.close(status_w)  # the requester reads EOF: no child
            raise
        finally:
            for fd in (child_r, *rest):
                os.close(fd)
        with contextlib.suppress(BrokenPipeError):  # the requester went away
            forkserver.write_signed(status_w, pid)
        self.status_of[pid] = status_w

    def _started(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        self.starting.discard(sock)
        sock.close()

    def _reap(self) -> None:
        os.read(self.sig_r, 65536)  # drain the wakeup bytes
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare.pid:
                self.spare.sock.close()
                self.spare = None
            status_w = self.status_of.pop(pid, None)
            if status_w is not None:
                with contextlib.suppress(BrokenPipeError):
                    forkserver.write_signed(status_w, os.waitstatus_to_exitcode(status))
                os.close(status_w)

    def _timeout(self) -> float | None:
        """How long the next select may wait."""
        if self._wants_spare():
            return 0  # only look whether something waits before the fork
        if self.idle_exit is not None and not self.status_of and not self.starting:
            return self.idle_exit
        return None

    def _may_end_idle(self) -> bool:
        """A shared server with no child: end unless a request waits (under the lock)."""
        assert self.lock_path is not None
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # its directory is gone (a temp-dir cleaner): nobody can find us
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.selector.select(0):
                return False
            # Requests are sent under the shared lock: none can come now.
            self._unlink_address()
            return True
        finally:
            os.close(fd)

    def serve(self) -> None:
        # SIGCHLD wakes the select through the wakeup fd; Ctrl-C is for the requesters.
        self.old_handlers = {
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, lambda *_: None),
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        }
        signal.set_wakeup_fd(self.sig_w)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.alive_r, selectors.EVENT_READ)
        self.selector.register(self.sig_r, selectors.EVENT_READ)
        while True:
            # With a spare to fork, only look whether something waits first.
            ready = [key.fileobj for key, _ in self.selector.select(self._timeout())]
            if not ready:
                if self._wants_spare():
                    self._fork_spare()
                elif self._may_end_idle():
                    return
                continue
            if self.alive_r in ready:
                self._stop_serving()
            if self.sig_r in ready:
                self._reap()
            if self.ending and not self.status_of:
                return
            for sock in ready:
                if sock in self.starting:
                    self._started(sock)
            if self.listener in ready and not self.ending:
                # A request that fails (a requester that hung up, no fork
                # possible) is that requester's loss: it reads EOF for a pid.
                with contextlib.suppress(OSError, EOFError, RuntimeError):
                    self._serve_request()


def main(
    listener_fd: int,
    alive_r: int,
    preload: list[str],
    sys_path: list[str],
    *,
    lock_path: str | None = None,
    idle_exit: float | None = None,
) -> None:
    """Run the fork server (the ``-c`` command of :meth:`ForkServer.ensure_running`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already, by the command (see _IGNORE_SIGINT)
    # Passed to us, so inheritable: no child may keep them (see _close_in_child).
    for fd in (listener_fd, alive_r):
        os.set_inheritable(fd, False)
    sys.path[:] = sys_path
    for module in preload:
        # Whatever a preload raises (a module that imports only after its
        # application's own setup, say), the server goes on without it: the
        # child imports it itself, and its traceback reaches the caller as
        # the child's error (an InitializationFailedError), not the server's
        # raw stderr with an "unexpected EOF" for the caller (issue 14).
        with contextlib.suppress(Exception, SystemExit):
            __import__(module)
    util._close_stdin()  # type: ignore[attr-defined]
    _set_title(_TITLE)
    if lock_path is not None:
        # A shared server's children use its resource tracker, not their
        # requesters' (see SharedForkServer._tracker_fd); it ends when the
        # server and its last child have gone.
        resource_tracker.ensure_running()
    # Children share the preloaded objects' pages: keep the collector from
    # writing to them (its bookkeeping would copy every page it touches).
    gc.freeze()
    _Server(listener_fd, alive_r, lock_path, idle_exit).serve()
