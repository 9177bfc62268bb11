"""The CPython internals our fork server and fork-server starts rely on, in one place.

Our fork server (:mod:`~gymnasiarch._process.forkserver_main`) and the
fork-server start (:mod:`~gymnasiarch._process.launcher`) speak
multiprocessing's own protocol, so a child runs the stdlib's bootstrap
unchanged. That ties them to the names below, several of them private
(a leading underscore) or undocumented. The process layer reaches them only
through this module, and ``tests/test_cpython_internals.py`` checks that each
exists on the running Python: a new CPython version is checked here first.

Names are aliases (bound at import, so a missing one fails the import of
the process layer, loudly, not a child's start); the private attributes we
*write* are behind small functions.
"""

from __future__ import annotations

from multiprocessing import (
    connection,
    context,
    forkserver,
    popen_fork,
    popen_forkserver,
    process,
    reduction,
    resource_tracker,
    spawn,
    util,
)
from typing import Any

MAXFDS_TO_SEND: int = forkserver.MAXFDS_TO_SEND
"""``multiprocessing.forkserver.MAXFDS_TO_SEND``: most fds one request may carry."""

write_signed = forkserver.write_signed
"""``multiprocessing.forkserver.write_signed``: the pid, then the exit code, on a status pipe."""

read_signed = forkserver.read_signed
"""``multiprocessing.forkserver.read_signed``: the requester's side of :data:`write_signed`."""

ForkServerPopen = popen_forkserver.Popen
"""``multiprocessing.popen_forkserver.Popen``: subclassed by the launcher's fork-server start
(its ``_fds``, ``sentinel``, ``finalizer`` and ``_launch`` are relied on)."""

fork_popen_init = popen_fork.Popen.__init__
"""``multiprocessing.popen_fork.Popen.__init__``: called directly, to keep ``_fds``."""

set_spawning_popen = context.set_spawning_popen
"""``multiprocessing.context.set_spawning_popen``: pickle a process and its authkey outside
``Process.start()``."""

dump = reduction.dump
"""``multiprocessing.reduction.dump``: the pickled process and preparation data."""

sendfds = reduction.sendfds
"""``multiprocessing.reduction.sendfds``: fds over a Unix socket (``SCM_RIGHTS``)."""

recvfds = reduction.recvfds
"""``multiprocessing.reduction.recvfds``: the server's and a spare's side of :data:`sendfds`."""

DupFd = reduction.DupFd
"""``multiprocessing.reduction.DupFd``: a child's inherited output pipes."""

get_preparation_data = spawn.get_preparation_data
"""``multiprocessing.spawn.get_preparation_data``: its ``init_main_from_name`` /
``init_main_from_path`` keys are left out to keep ``__main__`` from a child."""

get_executable = spawn.get_executable
"""``multiprocessing.spawn.get_executable``: the interpreter the fork server runs on."""

spawn_main = spawn._main
"""``multiprocessing.spawn._main`` (private): the child's bootstrap, run in a forked child."""

Finalize = util.Finalize
"""``multiprocessing.util.Finalize``: closes a start's fds with its ``Popen``."""

spawnv_passfds = util.spawnv_passfds
"""``multiprocessing.util.spawnv_passfds``: starts the fork server with the fds it needs."""

interpreter_flags = util._args_from_interpreter_flags  # type: ignore[attr-defined]
"""``multiprocessing.util._args_from_interpreter_flags`` (private): the server runs with our
interpreter's flags."""

close_stdin = util._close_stdin  # type: ignore[attr-defined]
"""``multiprocessing.util._close_stdin`` (private): the server's stdin, as a child's."""

arbitrary_address = connection.arbitrary_address  # type: ignore[attr-defined]
"""``multiprocessing.connection.arbitrary_address`` (private): the server's socket name, in
multiprocessing's private directory."""

ensure_tracker_running = resource_tracker.ensure_running
"""``multiprocessing.resource_tracker.ensure_running``: one tracker for the server and every
child."""

tracker_fd = resource_tracker.getfd
"""``multiprocessing.resource_tracker.getfd``: the tracker's pipe a child registers with."""


def set_tracker_fd(fd: int) -> None:
    """In a forked child: use the requester's tracker (``_resource_tracker._fd``, private)."""
    resource_tracker._resource_tracker._fd = fd  # type: ignore[attr-defined]


def tracker_pid() -> int | None:
    """The pid of this process's resource tracker (``_resource_tracker._pid``, private)."""
    pid: int | None = getattr(resource_tracker._resource_tracker, "_pid", None)
    return pid


def set_inherited_fds(fds: list[int]) -> None:
    """In a forked child: the fds its pickled process passes on (``_forkserver._inherited_fds``)."""
    forkserver._forkserver._inherited_fds = fds  # type: ignore[attr-defined]


def stdlib_forkserver_pid() -> int | None:
    """The pid of multiprocessing's own fork server, if this process started one (private)."""
    pid: int | None = getattr(forkserver._forkserver, "_forkserver_pid", None)
    return pid


def process_name(proc: process.BaseProcess) -> str:
    """A process's ``_name`` (private; what ``get_preparation_data`` is given by ``start()``)."""
    name: str = proc._name  # type: ignore[attr-defined]
    return name


#: Every name above that the running Python must have: (owner, dotted attribute). A
#: private attribute set on an instance is looked up on the instance that carries it.
RELIED_ON: tuple[tuple[Any, str], ...] = (
    (forkserver, "MAXFDS_TO_SEND"),
    (forkserver, "write_signed"),
    (forkserver, "read_signed"),
    (forkserver, "_forkserver._inherited_fds"),
    (forkserver, "_forkserver._forkserver_pid"),
    (popen_forkserver, "Popen"),
    (popen_forkserver, "Popen._launch"),
    (popen_fork, "Popen.__init__"),
    (context, "set_spawning_popen"),
    (reduction, "dump"),
    (reduction, "sendfds"),
    (reduction, "recvfds"),
    (reduction, "DupFd"),
    (spawn, "get_preparation_data"),
    (spawn, "get_executable"),
    (spawn, "_main"),
    (util, "Finalize"),
    (util, "spawnv_passfds"),
    (util, "_args_from_interpreter_flags"),
    (util, "_close_stdin"),
    (connection, "arbitrary_address"),
    (resource_tracker, "ensure_running"),
    (resource_tracker, "getfd"),
    (resource_tracker, "_resource_tracker._fd"),
    (resource_tracker, "_resource_tracker._pid"),
    (process.current_process(), "_name"),
)
