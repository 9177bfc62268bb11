"""The child's side of a supervised process: bootstrap, guards, and the channel home.

:func:`child_main` is what the process layer starts in every child. In this
order it: puts the output pipes on its stdout and stderr, does
:func:`~gymnasiarch.spawn.spawn_wrapper`'s caretaking (process title,
runtime config, logging to the supervisor's log server, SIGINT left to the
parent), leaves the parent's process group, arms two parent-death guards,
connects ``child_context()`` to the channel, runs the target, and, after the
last log records and output are out, sends back the result or the exception
with its traceback text. The channel is a pipe only parent and child hold;
the parent reads it, the output pipes and the log connection to their end
before it reports the exit, so nothing said right before the end is lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import inspect
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import anyio

from gymnasiarch._context import ChildContext, set_child_context
from gymnasiarch._forkserver import release_start_slot
from gymnasiarch._output import InheritedFd, flush_output, redirect_output
from gymnasiarch._runtime_config import RuntimeConfig
from gymnasiarch.dynaloader import resolve
from gymnasiarch.spawn import forward_structlog, prepare_child, set_log_connect_hook

_PR_SET_PDEATHSIG = 1
# Loaded once, in the fork server, rather than in every child.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class Launch:
    """Everything a child needs to know; pickled to it over its trusted start pipe."""

    name: str
    target: Callable[..., Any] | str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    runtime_config: dict[str, Any]
    seed: int | None
    restarts: int
    output: tuple[InheritedFd, InheritedFd] | None = None
    #: The environment to run in, where it is not the starting process's
    #: own (a child of a fork server shared by several Ray actors).
    environ: dict[str, str] | None = None


class _Sender:
    """Send whole messages on the channel from any thread, one at a time."""

    def __init__(self, channel: Connection) -> None:
        self._channel = channel
        self._lock = threading.Lock()

    def __call__(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._channel.send(message)


def _die_with_our_group() -> None:
    """The supervisor is gone: take this child and its own subprocesses down."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(sentinel: int) -> None:
    # The parent never writes to this pipe: readable means EOF, the parent died.
    select.select([sentinel], [], [])
    _die_with_our_group()


def _kill_on_eof(sentinel: int) -> bool:
    """Have the kernel SIGKILL this child's group when *sentinel* reports EOF.

    Signal-driven I/O (``O_ASYNC`` with ``F_SETSIG``) needs no watcher
    thread: a thread costs 0.4 ms per start and its stack in every child.
    Linux only; returns False where it is not available.
    """
    set_signal = getattr(fcntl, "F_SETSIG", None)
    if set_signal is None:
        return False
    fcntl.fcntl(sentinel, set_signal, signal.SIGKILL)
    # A negative owner is a process group: only our own, never the
    # supervisor's (setpgid may have failed, see child_main).
    owner = -os.getpid() if os.getpgrp() == os.getpid() else os.getpid()
    fcntl.fcntl(sentinel, fcntl.F_SETOWN, owner)
    fcntl.fcntl(sentinel, fcntl.F_SETFL, fcntl.fcntl(sentinel, fcntl.F_GETFL) | os.O_ASYNC)
    return True


def _guard_against_orphaning() -> None:
    """Exit when the supervisor dies, even by SIGKILL.

    Two guards, because each has a measured trap: the parent-death signal
    belongs to the thread that forked us (with a fork server, to the fork
    server, which outlives the supervisor while its children hold its alive
    descriptor: there the EOF guard is the one that acts), and EOF on the
    parent's pipe is late when a forked sibling inherited its write end.
    Both are checked once after arming, in case the parent died before.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:
            _die_with_our_group()
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return
    armed = _kill_on_eof(sentinel)
    if select.select([sentinel], [], [], 0)[0]:
        _die_with_our_group()
    if not armed:
        threading.Thread(
            target=_watch_parent, args=(sentinel,), name="gymnasiarch-parent-watch", daemon=True
        ).start()


def _report_error(send: _Sender, error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)).rstrip()
    try:
        pickle.dumps(error)
        picklable: BaseException | None = error
    except Exception:
        picklable = None
    send(("error", picklable, type(error).__qualname__, str(error), text))


def _report_result(send: _Sender, result: Any) -> None:
    try:
        send(("result", result))
    except Exception as error:  # the result would not pickle
        failure = TypeError(
            f"the target returned a {type(result).__name__}, which cannot be sent "
            f"to the supervisor: {error}"
        )
        _report_error(send, failure)
        raise SystemExit(1) from None


def _run_target(launch: Launch, send: _Sender) -> Any:
    target = resolve(launch.target) if isinstance(launch.target, str) else launch.target
    forward_structlog()  # the target's module may have imported structlog just now
    send(("started",))
    release_start_slot()  # our fork server may fork the next spare now
    # The caretaking of spawn_wrapper is done already (child_main); a sync
    # target runs without an event loop around it, so it may start its own.
    result = target(*launch.args, **launch.kwargs)
    if inspect.isawaitable(result):

        async def _await() -> Any:
            return await result

        result = anyio.run(_await)
    return result


def child_main(launch: Launch, channel: Connection) -> None:
    """Entry point of every supervised child process."""
    if launch.environ is not None:
        os.environ.clear()
        os.environ.update(launch.environ)
    if launch.output is not None:
        redirect_output(*launch.output)  # first: even an early death is heard
    send = _Sender(channel)
    set_log_connect_hook(lambda: send(("log_connected",)))
    # spawn_wrapper's caretaking, once: the process title first, the runtime
    # config, logging to the parent (also for records logged at import time).
    handler = prepare_child(launch.name, launch.runtime_config)
    # Our own group: the supervisor's signals reach our subprocesses too.
    # (It fails only for a group or session leader, which we already are then.)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _guard_against_orphaning()
    set_child_context(
        ChildContext(
            name=launch.name,
            seed=launch.seed,
            restarts=launch.restarts,
            runtime_config=RuntimeConfig.current(),
            _send=send,
        )
    )
    result: Any = None
    exit_: SystemExit | None = None
    error: BaseException | None = None
    try:
        result = _run_target(launch, send)
    except SystemExit as exited:
        exit_ = exited
    except BaseException as raised:
        error = raised
    finally:
        # Every way out passes here: the last records and the goodbye go to
        # the log server, and print()'s buffer to the pipes, before the
        # supervisor hears how we ended (it reads both to their end first).
        if handler is not None:
            handler.close()
        flush_output()
    if exit_ is not None:
        send(("exit", exit_.code if isinstance(exit_.code, int) else 1))
        raise exit_
    if error is not None:
        _report_error(send, error)
        raise SystemExit(1)
    _report_result(send, result)
