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

SIGTERM (how a supervisor stops a child) is an orderly end rather than
sudden death: see :class:`_Stop`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import multiprocessing
import os
import pickle
import select
import signal
import threading
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from types import FrameType
from typing import Any, NoReturn

import anyio

from gymnasiarch import _context, _platform
from gymnasiarch._backends.base import Launch
from gymnasiarch._context import (
    BEAT_FRACTION,
    IGNORES_SIGTERM,
    ChildContext,
    child_context,
    set_child_context,
)
from gymnasiarch._process.forkserver_main import release_start_slot
from gymnasiarch._process.marks import mark_descendants
from gymnasiarch._process.output import (
    enable_crash_dumps,
    enable_stack_dumps,
    flush_output,
    redirect_output,
    seal_descriptors,
)
from gymnasiarch._runtime_config import RuntimeConfig
from gymnasiarch._spec import format_size
from gymnasiarch.dynaloader import resolve
from gymnasiarch.spawn import prepare_child, set_log_connect_hook


class _Sender:
    """Send whole messages on the channel from any thread, one at a time."""

    def __init__(self, channel: Connection) -> None:
        self._channel = channel
        self._lock = threading.Lock()

    def __call__(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._channel.send(message)

    def send_bytes(self, pickled: bytes | memoryview) -> None:
        """Send a message pickled already (by :class:`ForkingPickler`, as ``send`` does)."""
        with self._lock:
            self._channel.send_bytes(pickled)


class _Stop:
    """SIGTERM as an orderly end of the child.

    From the first line of the bootstrap until a sync target returns, the
    handler raises :class:`SystemExit` in the main thread (where Python runs
    signal handlers): a sleeping or working target unwinds through its
    ``finally`` blocks, and a SIGTERM during the bootstrap ends the child just
    as promptly. While an ``async def`` target runs, the handler asks the
    target's event loop to cancel the cancel scope around the target
    (:func:`_canceller`). Either way the bootstrap then closes the log
    handler (the last records go out) and flushes the output, and
    :func:`_end_by_sigterm` ends the process by SIGTERM, so the parent reads
    the exit as a stop, as before.

    Only the first SIGTERM acts: more of them while the child cleans up are
    ignored (the ``shutdown`` grace, then SIGKILL, bounds the cleanup), and
    one that arrives after the target has ended changes nothing (the child is
    on its way out and reports how its target ended). The handler is
    installed only where SIGTERM had its default action, and a target that
    installs its own (``signal.signal``, ``loop.add_signal_handler``, the
    pytest plugin's ``stubborn``) replaces it and keeps it. A process forked
    from the child gets the default action back.
    """

    def __init__(self) -> None:
        self.requested = False  # a SIGTERM interrupted the bootstrap or the target
        # What a SIGTERM does now: "raise" SystemExit (bootstrap, sync
        # target), "defer" (an event loop starts: the runner looks at
        # `requested`), "cancel" (call _cancel), "ignore" (the target is over).
        self._mode = "ignore"
        self._cancel: Callable[[], object] | None = None

    def install(self) -> None:
        """Handle SIGTERM from now on (in the main thread, if SIGTERM had its default)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # ignored on purpose by whoever started us: it stays so
        self._mode = "raise"
        signal.signal(signal.SIGTERM, self._on_sigterm)
        os.register_at_fork(after_in_child=self._forget)

    def defer(self) -> None:
        """An event loop is being started: note a SIGTERM, raise nothing inside the loop."""
        if self._mode == "raise":
            self._mode = "defer"

    def cancel_with(self, cancel: Callable[[], object]) -> None:
        """An async target runs now: a SIGTERM calls *cancel* (signal-safe)."""
        if self._mode == "defer":
            self._cancel, self._mode = cancel, "cancel"

    def finish(self) -> None:
        """The target is over: SIGTERM does nothing more."""
        self._mode, self._cancel = "ignore", None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.requested or self._mode == "ignore":
            return
        self.requested = True
        if self._mode == "cancel" and self._cancel is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                self._cancel()
        elif self._mode == "raise":
            # Raised at most once, and only inside child_main's inner try (see there).
            self._mode = "ignore"
            raise SystemExit(128 + signum)

    def _forget(self) -> None:
        # A subprocess forked (without exec) by the target is not the target:
        # it gets SIGTERM's default action back, as it had before us.
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


_STOP = _Stop()


def _end_by_sigterm() -> None:
    """End this process by SIGTERM's default action: the parent reads "stopped by SIGTERM"."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.raise_signal(signal.SIGTERM)  # delivered to this thread before it returns
    os._exit(128 + signal.SIGTERM)  # not reached


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

    Signal-driven I/O needs no watcher thread (see
    :func:`gymnasiarch._platform.signal_on_readable`). Linux only; returns
    False where it is not available.
    """
    # A negative owner is a process group: only our own, never the
    # supervisor's (setpgid may have failed, see child_main).
    owner = -os.getpid() if os.getpgrp() == os.getpid() else os.getpid()
    return _platform.signal_on_readable(sentinel, signal.SIGKILL, owner)


def _guard_against_orphaning() -> None:
    """Exit when the supervisor dies, even by SIGKILL.

    Two guards, because each has a measured trap: the parent-death signal
    belongs to the thread that forked us, and EOF on the parent's pipe is
    late when a forked sibling inherited its write end. A child of a fork
    server arms only the EOF guard, which the kernel carries out (a SIGKILL
    even for an interpreter stuck in C code): its parent-death signal would
    tie it to the fork server, whose death must not take running children
    with it (issue 14), and which waits for its last child before it ends
    on the supervisor's death anyway. Both guards are checked once after
    arming, in case the parent died before. The child's exec'd descendants
    are marked as its own (see gymnasiarch._process.subreaper).
    """
    parent = multiprocessing.parent_process()
    supervisor = getattr(parent, "pid", None)
    if supervisor is not None:
        mark_descendants(supervisor)
    if _platform.LINUX and supervisor == os.getppid():
        _platform.set_parent_death_signal(signal.SIGKILL)
        # Gone already? Then we have another parent (init, or a subreaper).
        if os.getppid() != supervisor:
            _die_with_our_group()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return
    armed = _kill_on_eof(sentinel)
    if select.select([sentinel], [], [], 0)[0]:
        _die_with_our_group()
    if not armed:
        watcher = threading.Thread(
            target=_watch_parent, args=(sentinel,), name="gymnasiarch-parent-watch", daemon=True
        )
        with _platform.signals_blocked():  # the child's signals stay the main thread's
            watcher.start()


#: The child's memory limit in bytes, once set: a MemoryError then names it.
_MEMORY_LIMIT: int | None = None


def _set_limits(limits: dict[str, int | bool] | None, send: _Sender) -> None:
    """Set the child's resource limits, before its bootstrap, target or program.

    So early that they hold for everything the child does and starts
    (rlimits survive fork and exec). A limit this process may not set (above
    its hard limit, unprivileged) is a start failure, reported as such
    (``limit_failed``): the same launch would fail the same way, so the
    supervisor gives up instead of restarting into it.
    """
    global _MEMORY_LIMIT  # noqa: PLW0603 - this process's one memory limit
    if not limits:
        return
    try:
        _platform.set_resource_limits(limits)
    except ValueError as error:
        send(("limit_failed", str(error)))
        flush_output()
        os._exit(127)
    memory = limits.get("memory")
    _MEMORY_LIMIT = None if memory is None or isinstance(memory, bool) else memory


def _name_the_limit(error: BaseException) -> None:
    """Say which limit a failure to get memory ran into, for the traceback and the report.

    A bare MemoryError gets the limit as its message. A MemoryError with a
    message of its own, or a thread that could not start (its stack is
    private writable memory too, so a small ``limits.memory`` refuses it
    long before the heap is full), gets a note appended to its message.
    """
    if _MEMORY_LIMIT is None:
        return
    if isinstance(error, MemoryError) and not error.args:
        error.args = (
            f"over limits.memory of {_MEMORY_LIMIT} bytes ({_MEMORY_LIMIT / 2**20:.0f} MiB, "
            "RLIMIT_DATA: the private writable memory of the process)",
        )
        return
    thread = isinstance(error, RuntimeError) and "can't start new thread" in str(error)
    if (isinstance(error, MemoryError) or thread) and len(error.args) <= 1:
        said = str(error.args[0]) if error.args else type(error).__name__
        error.args = (
            f"{said} (it ran under limits.memory = {format_size(_MEMORY_LIMIT)}; "
            "RLIMIT_DATA: thread stacks and malloc arenas count)",
        )


def _report_error(send: _Sender, error: BaseException) -> None:
    _name_the_limit(error)
    text = "".join(traceback.format_exception(error)).rstrip()
    try:
        pickle.dumps(error)
        picklable: BaseException | None = error
    except Exception:
        picklable = None
    send(("error", picklable, type(error).__qualname__, str(error), text))


def _type_name(kind: type) -> str:
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _unpicklable_type(value: Any) -> str:
    """The type of the object in *value* that pickle failed on (*value*'s own if not found).

    Pickles *value* once more, noting each object the pickler is about to
    reduce: the last one noted when it fails is the culprit (a lock, a
    local function, a socket deep inside a model), which tells the user more
    than the type of the whole result. Only on this error path.
    """
    last: list[object] = [value]

    class _Noting(ForkingPickler):
        def reducer_override(self, obj: object) -> Any:
            last[0] = obj
            return NotImplemented  # reduce it as usual

    with contextlib.suppress(Exception):  # it fails; `last` names what it failed on
        _Noting(io.BytesIO()).dump(value)
    return _type_name(type(last[0]))


def _report_result(send: _Sender, result: Any) -> None:
    # Pickled here first, so that a result that will not pickle is told
    # apart from a channel that broke: it is no crash, and re-running the
    # target (a training run) would only make the same result again.
    try:
        pickled = ForkingPickler.dumps(("result", result))
    except Exception as error:
        culprit = _unpicklable_type(result)
        reason = f"{type(error).__name__}: {error}"
        send(("result_error", _type_name(type(result)), culprit, reason))
        raise SystemExit(1) from None
    send.send_bytes(pickled)


def _canceller(scope: anyio.CancelScope, backend: str) -> Callable[[], object]:
    """A function a signal handler may call to cancel *scope* on the running event loop.

    The one backend-specific corner of the bootstrap: anyio has no way in
    for a signal handler (``from_thread.run_sync`` waits for its result,
    which a handler on the loop's own thread never gets). Both calls are
    documented as safe from a signal handler; they cost nothing until
    used, where a watcher task and a pipe cost a child 0.4 ms of its start.
    """
    if backend == "trio":
        import trio  # noqa: PLC0415 - only where a child runs on trio (preloaded)

        token = trio.lowlevel.current_trio_token()
        return lambda: token.run_sync_soon(scope.cancel)
    import asyncio  # noqa: PLC0415 - loaded with anyio's asyncio backend

    loop = asyncio.get_running_loop()
    return lambda: loop.call_soon_threadsafe(scope.cancel)


async def _beat_forever(every: float, arm: bool) -> None:
    """An ``async def`` child's watchdog beats: one every *every* seconds while its loop turns.

    A loop blocked by a synchronous call (or a deadlock) stops them, so the
    supervisor finds the child hung without any code of the user's. With
    *arm*, the first beat arms the watchdog: the event loop's start (trio's
    import under spawn, ~80 ms) is not the target's work.
    """
    context = child_context()
    if arm:
        context._arm()
    while True:
        context._beat_if_armed()  # once the child is ready (see ChildContext._arm)
        await anyio.sleep(every)


async def _await_with_beats(awaitable: Awaitable[Any], every: float, arm: bool) -> Any:
    """Await *awaitable* while :func:`_beat_forever` beats beside it, in the same loop."""
    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_beat_forever, every, arm)
            try:
                result = await awaitable
            finally:
                # The target's work is over here, not when anyio.run returns:
                # the backend's shutdown after it (asyncio joins its default
                # executor's threads, finalizes async generators) is no hang.
                _disarm_watchdog()
            group.cancel_scope.cancel()
    except BaseExceptionGroup as raised:
        # The target's own exception, not the task group's wrapping of it:
        # the report names what the target raised, as without a watchdog.
        if len(raised.exceptions) != 1:
            raise
        error = raised.exceptions[0]
    if error is not None:
        raise error
    return result


async def _await_target(
    awaitable: Awaitable[Any], backend: str, beat_every: float | None = None, arm: bool = False
) -> Any:
    """Await an async target in a cancel scope that a SIGTERM cancels (see :class:`_Stop`)."""
    with anyio.CancelScope() as scope:
        _STOP.cancel_with(_canceller(scope, backend))
        if _STOP.requested:  # it came while the loop started
            scope.cancel()
        if beat_every is not None:
            return await _await_with_beats(awaitable, beat_every, arm)
        return await awaitable
    return None  # cancelled: the child ends by SIGTERM


def _run_coroutine(
    awaitable: Awaitable[Any], backend: str, beat_every: float | None = None, arm: bool = False
) -> Any:
    _STOP.defer()
    try:
        return anyio.run(_await_target, awaitable, backend, beat_every, arm, backend=backend)
    finally:
        _STOP.finish()


def _run_target(launch: Launch, send: _Sender) -> Any:
    assert launch.target is not None  # a command child never gets here
    if launch.watchdog is not None:
        enable_stack_dumps()  # a hung child's stacks, on the supervisor's request
    target = resolve(launch.target) if isinstance(launch.target, str) else launch.target
    if getattr(target, IGNORES_SIGTERM, False):
        # Ignored from before the supervisor hears "started" (gymnasiarch.
        # testing.stubborn): a stop right after it must meet the ignore.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Its watchdog starts now (else at its ready()), armed before the
    # supervisor hears of the start (a child stopped right after it is still
    # watched); an async def target's at the first beat of its beat task,
    # once its event loop runs.
    arm = not launch.watchdog_from_ready
    if arm and not inspect.iscoroutinefunction(target):
        child_context()._arm()
    send(("started",))
    release_start_slot()  # our fork server may fork the next spare now
    # The caretaking of spawn_wrapper is done already (child_main); a sync
    # target runs without an event loop around it, so it may start its own.
    try:
        result = target(*launch.args, **launch.kwargs)
        if inspect.isawaitable(result):
            beat_every = None if launch.watchdog is None else launch.watchdog * BEAT_FRACTION
            result = _run_coroutine(result, launch.async_backend, beat_every, arm)
    finally:
        _disarm_watchdog()  # the target's work is over: no hang from here on
    return result


def _disarm_watchdog() -> None:
    """Stop this child's watchdog (if it has one): its target returned or raised."""
    context = _context._current
    if context is not None:
        # A target that closed the timer's fd (closerange, say) must not have
        # the disarm's OSError hide its own result or exception.
        with contextlib.suppress(OSError):
            context._disarm()


def _watchdog_beats(launch: Launch) -> dict[str, Any]:
    """The child context's watchdog: none without one; else the timer its beats move.

    The timer is the supervisor's (see ``_process.hung.WatchdogTimer``): a
    beat moves its deadline, armed when the child starts or is ready.
    """
    if launch.watchdog is None or launch.beats is None:
        return {}
    fd = launch.beats.fd
    return {
        "_watchdog": launch.watchdog,
        "_beat_every": launch.watchdog * BEAT_FRACTION,
        "_expire_at": functools.partial(_platform.timerfd_expire_at, fd),
        "_disarm_timer": functools.partial(_platform.timerfd_disarm, fd),
    }


#: What systemd gives a service it notifies and watches (sd_notify(3),
#: sd_watchdog_enabled(3)). A child gets them only from its own run (a
#: program's ready=Notify() and watchdog), never the supervisor's own: a
#: supervisor run by systemd must not have its children ping systemd, nor
#: tell a child without a watchdog that it has one.
_SYSTEMD_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _drop_systemd_environ(environ: dict[str, str] | os._Environ[str]) -> None:
    """Remove the supervisor's own sd_notify and watchdog variables from *environ*."""
    for key in _SYSTEMD_KEYS:
        if key in environ:
            del environ[key]


def _program_environ(launch: Launch) -> dict[str, str]:
    environ = dict(os.environ)
    _drop_systemd_environ(environ)  # the spec's env and our watchdog's set them below
    for key, value in (launch.env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    if launch.watchdog is not None:
        # As systemd sets them for WatchdogSec=: sd_watchdog_enabled(3) reads
        # both, and exec keeps our pid, which is the program's.
        environ["WATCHDOG_USEC"] = str(max(1, round(launch.watchdog * 1e6)))
        environ["WATCHDOG_PID"] = str(os.getpid())
    return environ


def _exec_program(launch: Launch, send: _Sender) -> NoReturn:
    """Become the program of a command child, after the caretaking that protects it.

    Its own process group and the parent-death guards come first, as for
    a Python child: the supervisor's stop reaches the program's own
    subprocesses, and the program dies with the supervisor. The EOF guard
    is the kernel's (signal-driven I/O on the parent's sentinel, owned by
    our group): it lives in the open file description, so it outlives exec
    as long as the descriptor stays open, which it must do here. Signals
    we ignore would stay ignored in the program (SIGINT, and Python's
    SIGPIPE): they get their defaults back, and none stays blocked.
    No log ticket is used: the program's words reach the parent through
    the output pipes on fds 1 and 2; everything above is close-on-exec.

    The channel is close-on-exec too: after an ``exec`` message its EOF
    tells the parent the exec succeeded; a failure is sent on it instead,
    with the errno, and the child exits 127.
    """
    assert launch.command is not None
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _guard_against_orphaning()
    sentinel = getattr(multiprocessing.parent_process(), "sentinel", None)
    if sentinel is not None:
        os.set_inheritable(sentinel, True)
    environ = _program_environ(launch)
    for signum in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            if signal.getsignal(signum) is not signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
    # No release_start_slot() here: the spare's socket is close-on-exec, so
    # the exec (or the exit after a failed one) releases it. Released
    # earlier, the server's fork of the next spare ran beside this exec on
    # a small machine, and slowed it down (measured: ~0.8 ms of a start).
    program = launch.command[0]
    what = f"program {program!r}"
    try:
        if launch.cwd is not None:
            what = f"program {program!r} in directory {launch.cwd!r}"
            os.chdir(launch.cwd)
        send(("exec",))
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        _exec_searching(program, launch.command, environ)
    except OSError as error:
        send(("exec_failed", what, error.errno, error.strerror))
    os._exit(127)  # as a shell does for a program it cannot run


def _replace_environ(environ: dict[str, str]) -> None:
    """Make ``os.environ`` equal *environ*, changing only the keys that differ.

    Why: *environ* is the supervisor's environment, which the fork server
    (hence this child) mostly has already; ``os.environ.clear()`` and
    ``update()`` would unset and set every variable again, ~0.5 ms of a
    freshly forked child's start (measured), against ~0.1 ms for the diff.
    """
    current = os.environ
    for key in [key for key in current if key not in environ]:
        del current[key]
    for key, value in environ.items():
        if current.get(key) != value:
            current[key] = value


def _exec_searching(
    program: str, argv: tuple[str, ...] | list[str], environ: dict[str, str]
) -> NoReturn:
    """``os.execvpe``, without a failed ``execve`` for each PATH entry before the program's.

    Why: ``os.execvpe`` tries every PATH entry in turn, and each miss is a
    failed ``execve`` (a new address space set up and the environment
    copied, then ENOENT): ~0.4 ms of a program's start with eight entries
    before ``/usr/bin``, measured. Entries where nothing of that name
    exists are skipped here (``os.execvpe`` skips them too); the first one
    that exists is exec'd if it is an executable file. Anything else (it
    exists but is not, or its exec fails) leaves the search to
    ``os.execvpe``, from the start, which does and raises what it always did.
    """
    if os.sep not in program:
        for folder in os.get_exec_path(environ):
            path = os.path.join(folder, program)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                with contextlib.suppress(OSError):
                    os.execve(path, argv, environ)  # noqa: S606 - the user's argv, no shell
                break
            if os.path.lexists(path):
                break
    os.execvpe(program, argv, environ)  # noqa: S606 - the user's argv, no shell


def child_main(launch: Launch, channel: Connection) -> None:
    """Entry point of every supervised child process."""
    if launch.environ is not None:
        _replace_environ(launch.environ)
    if launch.output is not None:
        redirect_output(*launch.output)  # first: even an early death is heard
    enable_crash_dumps()  # a native crash names its Python line on our stderr (issue 14)
    seal_descriptors()  # nothing handed to us passes to the programs we exec (issue 14)
    send = _Sender(channel)
    _set_limits(launch.limits, send)
    if launch.command is not None:
        _exec_program(launch, send)
    _drop_systemd_environ(os.environ)  # a Python child beats on its own timer, not by sd_notify
    handler = None
    result: Any = None
    exit_: SystemExit | None = None
    error: BaseException | None = None
    try:
        # _STOP raises SystemExit for a SIGTERM at most once, and only until
        # the inner finally: always inside this outer try, so the flush and
        # the end below run whenever the SIGTERM comes.
        try:
            _STOP.install()
            set_log_connect_hook(lambda: send(("log_connected",)))
            # spawn_wrapper's caretaking, once: the process title first, the runtime
            # config, logging to the parent (also for records logged at import time).
            # The title names the child by its path: agent-1 of two groups differ.
            handler = prepare_child(launch.path or launch.name, launch.runtime_config)
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
                    **_watchdog_beats(launch),
                )
            )
            result = _run_target(launch, send)
        finally:
            _STOP.finish()
    except SystemExit as exited:
        exit_ = exited
    except BaseException as raised:
        error = raised
    finally:
        # Every way out passes here: the last records and the goodbye go to
        # the log server, and print()'s buffer to the pipes, before the
        # supervisor hears how we ended (it reads both to their end first).
        if handler is not None:
            handler.finish()
        flush_output()
    if _STOP.requested:
        # Stopped: a failing cleanup still tells its traceback; then the exit
        # the parent reads as "stopped by SIGTERM", whatever the target did.
        if error is not None:
            _report_error(send, error)
        _end_by_sigterm()
    if exit_ is not None:
        send(("exit", exit_.code if isinstance(exit_.code, int) else 1))
        raise exit_
    if error is not None:
        _report_error(send, error)
        raise SystemExit(1)
    _report_result(send, result)
