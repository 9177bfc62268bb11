"""Our fork server's process: multiprocessing's design, with a child forked ahead of demand.

The requester's side (starting the server, sending it requests) is
:mod:`~gymnasiarch._process.forkserver`; this module is what the server
runs (:func:`main`, its ``-c`` command) and what a child does first in it;
the CPython internals both rely on are listed in
:mod:`~gymnasiarch._process.cpython`.

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
import sys
from typing import Any

from gymnasiarch import _platform
from gymnasiarch._process import cpython

_MAX_FDS = cpython.MAXFDS_TO_SEND
#: The server's process title (and its spare's, with " spare"): the pytest
#: plugin's leftover check and the subreaper know it by this.
TITLE = "gymnasiarch-forkserver"


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
    _set_title(f"{TITLE} child")  # until the child names itself: not a spare any more
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
        cpython.set_tracker_fd(tracker)
    cpython.set_inherited_fds(inherited)
    parent_sentinel = os.dup(child_r)  # EOF when the requester is gone
    code: int = cpython.spawn_main(child_r, parent_sentinel)
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
        self.lock_path = lock_path  # a shared server's (see forkserver.SharedForkServer)
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
                _set_title(f"{TITLE} spare")
                # While it waits, the spare runs each event loop once: what
                # an async child's first loop would otherwise set up after
                # its start (~1 ms) is done before it is asked for.
                warm = sys.modules.get("gymnasiarch._process.warm")
                if warm is not None:
                    warm.run_each_event_loop_once()
                try:
                    child_r, *fds = cpython.recvfds(theirs, _MAX_FDS + 1)
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
            cpython.sendfds(spare.sock, [child_r, *fds])
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
            fds = cpython.recvfds(client, _MAX_FDS + 1)
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
            cpython.write_signed(status_w, pid)
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
                    cpython.write_signed(status_w, os.waitstatus_to_exitcode(status))
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
        with _platform.file_locked(self.lock_path, fcntl.LOCK_EX, create=False) as held:
            if not held:  # its directory is gone (a temp-dir cleaner): nobody can find us
                return True
            if self.selector.select(0):
                return False
            # Requests are sent under the shared lock: none can come now.
            self._unlink_address()
            self._remove_directory()
            return True

    def _remove_directory(self) -> None:
        """A shared server's last act, under the lock: its directory goes, unless in use.

        In use: a newer server's socket is there (one started after our
        anchor went and we stopped taking requests). Whoever waits for the
        lock meanwhile finds its file gone and makes the directory again.
        """
        assert self.lock_path is not None
        directory = os.path.dirname(self.lock_path)
        if os.path.exists(self.listener.getsockname()):
            return
        with contextlib.suppress(OSError):  # a file of somebody else's there: left
            os.unlink(self.lock_path)
            os.rmdir(directory)

    def _end_after_anchor(self) -> None:
        """The anchor gone and the last child reaped: the directory goes too (see above)."""
        assert self.lock_path is not None
        with _platform.file_locked(self.lock_path, fcntl.LOCK_EX, create=False) as held:
            if held:
                self._remove_directory()

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
                if self.lock_path is not None:
                    self._end_after_anchor()
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
    """Run the fork server (the ``-c`` command of :mod:`~gymnasiarch._process.forkserver`)."""
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
    cpython.close_stdin()
    _set_title(TITLE)
    if lock_path is not None:
        # A shared server's children use its resource tracker, not their
        # requesters' (see forkserver.SharedForkServer); it ends when the
        # server and its last child have gone.
        cpython.ensure_tracker_running()
        # The subreaper of its children's orphans (a program's setsid
        # daemon on a Ray node): they stay within reach of the actor that
        # stops them (subreaper.escapees' adopter), and are reaped by _reap.
        if _platform.LINUX:
            with contextlib.suppress(OSError):
                _platform.set_child_subreaper(True)
    # Children share the preloaded objects' pages: keep the collector from
    # writing to them (its bookkeeping would copy every page it touches).
    gc.freeze()
    _Server(listener_fd, alive_r, lock_path, idle_exit).serve()
