"""The process layer: start a child in a fresh process, hear it, stop it, reap it.

One :class:`ChildProcess` is one run of one child. Its exit is awaited on a
pidfd through anyio (no polling, no SIGCHLD handler, no ``waitpid(-1)``); its
messages (started, ready, the result or the exception) arrive on a pipe only
parent and child hold; its stdout and stderr on two more pipes; its log
records through the supervisor's log server, on a ticket of its own; and
signals go to the child's process group, so its own subprocesses stop with
it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from gymnasiarch import _platform
from gymnasiarch._backends.base import (
    DRAIN_TIMEOUT,
    ChildRun,
    ExitStatus,
    Launch,
    RemoteTraceback,
    StartMethod,
    rebuild_error,
)
from gymnasiarch._context import BEAT_FRACTION
from gymnasiarch._process import cpython, sampler
from gymnasiarch._process.child import child_main
from gymnasiarch._process.forkserver import SERVER, Requester
from gymnasiarch._process.hung import WatchdogTimer, with_source_lines
from gymnasiarch._process.launcher import Started, start_forkserver, start_spawn
from gymnasiarch._process.output import (
    DUMP_SIGNAL,
    MAX_JSON_LINE,
    InheritedFd,
    OutputCapture,
)
from gymnasiarch._process.sampler import Ceiling, enforce
from gymnasiarch._process.subreaper import (
    Escapees,
    boot_ticks,
    children,
    escapees,
    nothing_escaped,
    reap_pidfd,
    reap_strays,
    stat,
)
from gymnasiarch._spec import format_size
from gymnasiarch.exceptions import (
    ChildHungError,
    ChildOverLimitError,
    InitializationFailedError,
    ResultNotSentError,
    _shown_stack,
)

if TYPE_CHECKING:
    from gymnasiarch.logserver import LogTicket

logger = logging.getLogger("gymnasiarch.process")


def _importable(module: str) -> bool:
    """True if *module* can be found (without importing it, only its parent packages)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


# Our own modules, loaded once in the fork server so that each child starts
# in milliseconds instead of importing them again. The fork server itself
# never imports popen_forkserver, yet every child needs it to unpickle the
# descriptors it is handed: 1.5-2 ms per start, measured, when left to the child.
# anyio's backends are what an ``async def`` child imports before its first
# line (anyio.run loads the backend's module): 25-30 ms per start for asyncio's,
# more for trio with trio itself, measured. trio is optional: preloaded only
# where it is installed (a sys.modules diff of a child against the server
# found nothing else imported before a target's first line). Last,
# gymnasiarch._process.warm runs each event loop once (see there).
PRELOAD = [
    "gymnasiarch._process.child",
    "structlog",
    "multiprocessing.popen_forkserver",
    "anyio._backends._asyncio",
    *(["trio", "anyio._backends._trio"] if _importable("trio") else []),
    "gymnasiarch._process.warm",
]
#: Seconds a child's escaped daemons have, after SIGTERM, to end on their own
#: once the child has exited, before they are SIGKILLed.
ESCAPEE_GRACE = 1.0
#: Seconds a hung Python child has to begin its stack dump, and of quiet in
#: it, before it is SIGKILLed (it ends itself right after the dump, see
#: output.enable_stack_dumps).
DUMP_WAIT = 0.05
#: Seconds a hung Python child's dump may take in all while it keeps coming
#: (see ChildProcess._await_dump): a hundred deep threads took ~0.3 s.
DUMP_WAIT_MAX = 2.0
#: Seconds of CPU time below its hard ``RLIMIT_CPU`` at which a SIGKILLed
#: child is still taken to have been killed by the kernel for it (a child
#: killed at a hard limit of 2 s showed 1.98 s in its zombie's stat).
CPU_SLACK = 0.25
#: The pids of this process's children that run now (never a child's escapee).
_LIVE: set[int] = set()


def _helpers() -> tuple[int, int]:
    """Our fork server and multiprocessing's resource tracker: children of ours, no escapees."""
    return SERVER.pid or 0, cpython.tracker_pid() or 0


def library_helper_pids() -> set[int]:
    """The long-lived helpers of this process: our fork server and its spare, multiprocessing's.

    Our fork server, the spare it forked ahead of demand, multiprocessing's
    resource tracker and its own fork server (if this process started
    them): processes that outlive a supervisor on purpose. The pytest
    plugin's leftover check does not count them as leftovers. (Supervised
    children of the fork server are among its children too; the check sees
    them as the test's descendants.)
    """
    found = {cpython.tracker_pid(), cpython.stdlib_forkserver_pid()}
    if SERVER.pid is not None:
        found.add(SERVER.pid)
        found.update(children(SERVER.pid))
    return {pid for pid in found if pid is not None}


def _adopter(pid: int, method: str, fork_server: Requester) -> int | None:
    """Where the orphans of child *pid* go, where that is not us (see subreaper.escapees).

    A shared fork server's child (on a Ray node) has that server for its
    parent, a subreaper: read now, while the child runs. None for our own
    children and our own server's (orphaned, they come to us).
    """
    if method != "forkserver" or fork_server is SERVER:
        return None
    info = stat(pid)
    return info.ppid if info is not None else None


def reap_our_strays() -> None:
    """Reap the zombies that are gymnasiarch's by construction (see _subreaper.reap_strays)."""
    reap_strays({*_LIVE, *_helpers()})


def _needs_main_module(launch: Launch) -> bool:
    """True if the target or its arguments refer to something defined in ``__main__``."""
    return b"__main__" in pickle.dumps((launch.target, launch.args, launch.kwargs))


def _status_from_code(code: int | None) -> tuple[int | None, int | None]:
    if code is None:
        return None, None
    if code < 0:
        return None, -code
    return code, None


def _zombie_exit_code(pid: int) -> int | None:
    """The exit code of *pid*, a child of our fork server, if it is a zombie still.

    The fork server reaps our children and only then writes their exit
    code to us: a wake-up of another process on the way to every exit
    event. Linux shows a zombie's wait status in ``/proc/PID/stat`` (its
    52nd field, since 3.5), so when our pidfd fires first we need not wait
    for the server. The pid cannot be someone else's: a zombie keeps it
    until reaped, and only a zombie's status is taken. None otherwise (not
    Linux, reaped already): the server's word is awaited then.
    """
    return _platform.zombie_exit_code(pid)


class ChildProcess(ChildRun):
    """One run of one child in its own process.

    Create it with :meth:`start`; then run :meth:`watch` in a task (it is the
    only reader of the child's pidfd and channel) and stop the child with
    :meth:`terminate` / :meth:`kill`, waiting on :attr:`exited`.
    """

    # The watchdog (Launch.watchdog): its period, its timer, and how late
    # the child was once found hung.
    _watchdog: float | None = None
    _timer: WatchdogTimer | None = None
    _hung: tuple[float | None, float] | None = None  # (None: it sent WATCHDOG=trigger)
    _hung_since: str | None = None  # "it started", "it was ready": it never beat after that
    _watchdog_from_ready = False  # its watchdog starts at its ready, not its start
    _started_at: float | None = None  # time.monotonic() of its "started", "ready" messages
    _ready_at: float | None = None
    _dumps_stacks = False  # a Python child: it dumps its stacks on DUMP_SIGNAL
    _beats = 0  # a program's beats counted (see _keep_watch)
    _deadline: float | None = None  # a program's, set by its beats (see beat)
    _last_beat: float | None = None  # when a program's last beat counted from (see beat)
    _dump_waited: float | None = None  # seconds a hung child's stack dump was awaited
    _triggered = False  # a program sent WATCHDOG=trigger
    _watchdog_scope: anyio.CancelScope | None = None

    def __init__(
        self,
        name: str,
        process: Started,
        channel: Connection,
        method: str,
        *,
        ticket: LogTicket | None = None,
        output: OutputCapture | None = None,
    ) -> None:
        super().__init__(name)
        self._ticket = ticket
        self._output = output
        self._log_connected = False
        self.pid: int = process.pid
        self._process = process
        self._channel = channel
        self._method = method
        self._pidfd: int | None
        try:
            self._pidfd = _platform.pidfd_open(self.pid)
        except ProcessLookupError:
            self._pidfd = None  # already gone: the watcher collects the status
        self._outcome: tuple[str, tuple[Any, ...]] | None = None
        # A program child: the signal that asks it to stop, and whether it
        # is about to exec (then the channel's EOF, its close-on-exec end
        # gone, says the exec succeeded: see child_main).
        self._stop_signal = signal.SIGTERM
        # max_memory: the ceiling, the grace of a stop for it, and what was
        # measured when the child was found over it (see _keep_under_ceiling).
        self._max_memory: int | None = None
        self._grace: float | None = 5.0
        self._over_limit: ChildOverLimitError | None = None
        # limits.cpu_seconds, and the CPU time the child had used at its end:
        # they name the limit behind a SIGXCPU or SIGKILL (see _signal_cause).
        self._cpu_seconds: int | None = None
        self._cpu_at_exit: float | None = None
        self._cpu_soft_limit_at_exit: int | None = None
        self._exec_pending = False
        self._zombie_code: int | None = None  # the exit code, read before the fork server reaps
        self._watch_scope: anyio.CancelScope | None = None
        # Processes that left the child's group (see _subreaper), and what
        # tells a process that came from the child: it started no earlier
        # (than now less a tick: the child's target has not run yet).
        self._escapees = Escapees()
        self._title_name = name  # what its title says: gymnasiarch[<path in the tree>]
        self._start_ticks = boot_ticks() - 1
        # Where the child's orphans go, where that is not us: the shared fork
        # server of a Ray node, a subreaper (see subreaper.escapees).
        self._adopter: int | None = None
        _LIVE.add(self.pid)

    @classmethod
    async def start(
        cls,
        launch: Launch,
        method: StartMethod,
        preload: list[str] | None = None,
        *,
        ticket: LogTicket | None = None,
        capture_output: bool = True,
        main_module: bool | None = None,
        fork_server: Requester = SERVER,
        max_json_line: int = MAX_JSON_LINE,
        json_record_fits: Callable[[logging.LogRecord], bool] | None = None,
    ) -> ChildProcess:
        """Start a child process running :func:`gymnasiarch._process.child.child_main`.

        *ticket* is the child's log-server ticket (its client config is in
        the launch's runtime config); with *capture_output* its stdout and
        stderr become records. *main_module* says whether a spawned child
        must load our ``__main__`` first (by default: if the target or its
        arguments refer to it). Must run in the event loop's thread: the
        parent-death signal belongs to the thread that forks (with the
        spawn method). *fork_server* is the server the forkserver method
        asks (this process's own by default). *max_json_line* bounds a
        JSON output line kept as one record (a Ray host's is lower: see
        :class:`~gymnasiarch._process.output.OutputCapture`), and where
        given, *json_record_fits* must also pass a long line's record.
        """
        context: Any = multiprocessing.get_context(method)
        path = ticket.name if ticket is not None else launch.path
        output = (
            OutputCapture(
                launch.name,
                path,
                stdout_level=launch.stdout_level,
                stderr_level=launch.stderr_level,
                json_keys=launch.json_keys,
                max_json_line=max_json_line,
                json_record_fits=json_record_fits,
            )
            if capture_output
            else None
        )
        reader: Connection | None = None
        writer: Connection | None = None
        timer = WatchdogTimer()
        try:
            launch = timer.attach(launch)
            if output is not None:
                launch = dataclasses.replace(launch, output=output.child_ends())
            else:
                # Our stdout and stderr as they are now: a fork-server child
                # would otherwise write wherever the server's pointed at its start.
                launch = dataclasses.replace(launch, output=(InheritedFd(1), InheritedFd(2)))
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(
                target=child_main, args=(launch, writer), name=f"gymnasiarch[{launch.name}]"
            )
            if method == "forkserver":
                # The preload counts when the fork server starts, i.e. for
                # the first supervisor of this process; later children import.
                started = await start_forkserver(process, PRELOAD + (preload or []), fork_server)
            else:
                needs_main = _needs_main_module(launch) if main_module is None else main_module
                started = start_spawn(process, needs_main=needs_main)
            try:
                child = cls(launch.name, started, reader, method, ticket=ticket, output=output)
                child._adopter = _adopter(child.pid, method, fork_server)
                child._title_name = launch.path or launch.name
                child._stop_signal = signal.Signals(launch.stop_signal)
                if launch.watchdog is not None:
                    child._watchdog, child._timer = launch.watchdog, timer
                    child._dumps_stacks = launch.command is None
                    child._watchdog_from_ready = launch.watchdog_from_ready
                child._max_memory, child._grace = launch.max_memory, launch.shutdown
                cpu_seconds = (launch.limits or {}).get("cpu_seconds")
                child._cpu_seconds = None if isinstance(cpu_seconds, bool) else cpu_seconds
            except BaseException:  # out of descriptors for the pidfd, say
                with contextlib.suppress(OSError):
                    os.kill(started.pid, signal.SIGKILL)
                started.close()
                raise
        except BaseException:
            for end in (reader, writer):
                if end is not None:
                    end.close()
            if output is not None:
                output.close()
            if ticket is not None:
                ticket.revoke()
            timer.close()
            raise
        writer.close()
        if output is not None:
            output.close_child_ends()
        return child

    @property
    def log_connected(self) -> bool:
        """Whether the child connected to its log server (it does at its first record)."""
        return self._log_connected

    # -- watching -------------------------------------------------------------

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Read the child's messages, output and records; await its exit; set :attr:`exited`.

        The exit is reported only after the child's output pipes and its log
        connection have reached their end, so nothing it wrote or logged is
        handled after its exit (bounded by :data:`DRAIN_TIMEOUT`: a
        subprocess of the child may hold them open). Shielded: the watcher
        ends when the process does (the supervisor guarantees that with
        SIGKILL), or when :meth:`abandon` gives up on a process that does
        not go away.
        """
        with anyio.CancelScope(shield=True) as self._watch_scope:
            task_status.started()
            try:
                # One flat task group: a start costs a task per pipe, no more.
                async with anyio.create_task_group() as group:
                    pumped = []
                    for stream in self._output.streams if self._output else ():
                        pumped.append(done := anyio.Event())
                        group.start_soon(self._pump, stream, done)
                    reading = anyio.CancelScope()
                    group.start_soon(self._read_messages, reading)
                    if self._max_memory is not None:
                        group.start_soon(self._keep_under_ceiling, self._max_memory)
                    watchdog = self._watchdog_scope = anyio.CancelScope()
                    if self._watchdog is not None:
                        group.start_soon(self._keep_watch, self._watchdog, watchdog)
                    await self._wait_gone()
                    watchdog.cancel()  # gone: no deadline for it any more
                    reading.cancel()
                    self._drain()  # whatever the child sent before it exited
                    await self._wait_for_the_last_words(pumped)
                    group.cancel_scope.cancel()
                self.status = await self._collect_status()
                if self._over_limit is not None:
                    self.status = dataclasses.replace(self.status, over_limit=self._over_limit)
                cause = self._signal_cause(self.status.signum)
                if cause is not None:
                    self.status = dataclasses.replace(self.status, signal_cause=cause)
                if self._hung is not None and not self.status.normal:
                    self.status = self._hung_status(self.status)
            finally:
                self._close()
                self.exited.set()

    async def _pump(self, stream: str, done: anyio.Event) -> None:
        assert self._output is not None
        self._output.on_line = self.on_output_line
        try:
            await self._output.pump(stream)
        finally:
            done.set()

    async def _wait_for_the_last_words(self, pumped: list[anyio.Event]) -> None:
        ticket = self._ticket if self._log_connected else None
        if all(done.is_set() for done in pumped) and (ticket is None or ticket.finished.is_set()):
            return  # all in already (the usual exit): no timer to set up and cancel
        with anyio.move_on_after(DRAIN_TIMEOUT) as scope:
            for done in pumped:
                await done.wait()
            if self._log_connected and self._ticket is not None:
                await self._ticket.finished.wait()
        if scope.cancelled_caught:
            logger.warning(
                "child %r exited, but its output or log connection stayed open for "
                "%g s more (a subprocess of it holds them?): going on without the rest",
                self.name,
                DRAIN_TIMEOUT,
            )

    def abandon(self) -> None:
        """Stop watching a process that would not die (it is reported as a zombie)."""
        if self._watch_scope is not None:
            self._watch_scope.cancel()

    async def _wait_gone(self) -> None:
        try:
            if self._pidfd is not None:
                await anyio.wait_readable(self._pidfd)
                if self._cpu_seconds is not None:  # read before anyone reaps it
                    self._cpu_at_exit = _platform.zombie_cpu_seconds(self.pid)
                    self._cpu_soft_limit_at_exit = _platform.zombie_cpu_soft_limit(self.pid)
                if self._method == "forkserver":
                    self._zombie_code = _zombie_exit_code(self.pid)
                    # If its fork server died, the child was reparented to us
                    # (the subreaper, see LocalBackend.prepare): reap it here.
                    reaped = reap_pidfd(self._pidfd)
                    if reaped is not None:
                        self._zombie_code = reaped
            self._end_the_group()
            await self._end_the_escapees()
        finally:
            # Only now: a spawned child, multiprocessing's to reap, is never a stray.
            _LIVE.discard(self.pid)

    def _end_the_group(self) -> None:
        """SIGKILL what is left of the exited child's process group.

        Subprocesses the child left running would be orphans, and would keep
        its output pipes open. The group id cannot have been reused: it
        stays taken while any member lives.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _find_escapees(self, *, group: bool = False) -> bool:
        """Take hold of the processes that came from the child and left its group.

        With *group*, also of its group's members that were reparented to
        us. True if any is held.
        """
        known = {*_LIVE, *_helpers()}
        self._escapees.take(
            escapees(
                self.pid,
                self._title_name,
                self._start_ticks,
                known,
                group=group,
                adopter=self._adopter,
            )
        )
        return bool(self._escapees.pidfds)

    async def _end_the_escapees(self) -> None:
        """End the exited child's escapees: SIGTERM, a grace, then SIGKILL; reap them.

        A daemon that left the child's group is a service of its own: it is
        asked first (SIGTERM, up to :data:`ESCAPEE_GRACE` seconds; a stopped
        child's escapees got their SIGTERM with it already). Then SIGKILL,
        round after round: a process's children are reparented to us before
        its exit can be awaited, so each round finds the next generation.
        Bounded by :data:`DRAIN_TIMEOUT`: a process in uninterruptible sleep
        dies later (then it is reaped at a later sweep, see reap_strays).
        """
        if (
            not self._escapees.pidfds
            and self._adopter is None  # (its orphans are not our children)
            and nothing_escaped({*_LIVE, *_helpers(), self.pid})
        ):
            return  # the common case: one read of /proc instead of a scan and a sweep
        try:
            if not self._find_escapees(group=True):
                return  # without a cancel scope's cost
            self._escapees.signal(signal.SIGTERM)
            with anyio.move_on_after(ESCAPEE_GRACE):
                for pid, pidfd in list(self._escapees.pidfds.items()):
                    await anyio.wait_readable(pidfd)
                    self._escapees.reap(pid)
            if not self._find_escapees(group=True):
                return
            with anyio.move_on_after(DRAIN_TIMEOUT):
                while True:
                    self._escapees.signal(signal.SIGKILL)
                    for pid, pidfd in list(self._escapees.pidfds.items()):
                        await anyio.wait_readable(pidfd)
                        self._escapees.reap(pid)
                    if not self._find_escapees(group=True):
                        break
        finally:
            self._escapees.close()
            reap_our_strays()

    async def _read_messages(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.wait_readable(self._channel.fileno())
                if not self._drain():
                    return

    def _drain(self) -> bool:
        """Handle every complete message waiting; False once the channel is closed."""
        try:
            while self._channel.poll():
                self._handle(self._channel.recv())  # trusted-pipe: only our child writes
        except (EOFError, OSError):
            if self._exec_pending and self._outcome is None:
                # The channel closed on exec, and no failure came first.
                self._exec_pending = False
                self.started.set()
            return False
        return True

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "log_connected":
            self._log_connected = True
        elif kind == "started":
            self._started_at = time.monotonic()
            self.started.set()
        elif kind == "exec":
            self._exec_pending = True
        elif kind in ("exec_failed", "limit_failed"):
            self._outcome = (kind, message[1:])
        elif kind == "ready":
            self._ready_at = time.monotonic()
            self.ready_value = message[1]
            self.ready.set()
        elif kind in ("result", "error", "exit", "result_error"):
            self._outcome = (kind, message[1:])
            if self._watchdog_scope is not None:
                # Its target is over (the child disarmed its timer too): what
                # is left (a non-daemon thread, atexit) is no hang of its work.
                self._watchdog_scope.cancel()
        else:
            logger.warning("child %r sent an unknown message %r", self.name, kind)

    async def _collect_status(self) -> ExitStatus:
        code = self._zombie_code
        if code is None and self._method == "forkserver":
            # The fork server reaps the child and then writes its exit code.
            with anyio.move_on_after(5):
                await anyio.wait_readable(self._process.sentinel)
        if code is None:
            code = self._process.poll()
        exitcode, signum = _status_from_code(code)
        kind, payload = self._outcome or ("", (None,))
        output = self._output.tail_text() if self._output is not None else None
        if kind == "result" and exitcode == 0:
            return ExitStatus(exitcode, signum, result=payload[0], pid=self.pid, output=output)
        if kind == "error":
            error, text = rebuild_error(payload)
            return ExitStatus(
                exitcode, signum, error=error, traceback=text, pid=self.pid, output=output
            )
        if kind == "limit_failed":
            failure = InitializationFailedError(f"child {self.name!r}: {payload[0]}")
            return ExitStatus(exitcode, signum, pid=self.pid, output=output, start_error=failure)
        if kind == "exec_failed":
            what, errno_, reason = payload
            failure = InitializationFailedError(
                f"child {self.name!r} could not run {what}: [Errno {errno_}] {reason}"
            )
            return ExitStatus(exitcode, signum, pid=self.pid, output=output, start_error=failure)
        if kind == "result_error":
            result_type, type_name, reason = payload
            unsent = ResultNotSentError(
                f"child {self.name!r} returned a {result_type}, which cannot be sent "
                f"to the supervisor: {reason}",
                child=self.name,
                pid=self.pid,
                type_name=type_name,
                result_type=result_type,
                reason=reason,
            )
            return ExitStatus(exitcode, signum, pid=self.pid, output=output, result_error=unsent)
        return ExitStatus(exitcode, signum, pid=self.pid, output=output)

    def _close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._channel.close()
        self._process.close()
        if self._output is not None:
            self._output.close()
        if self._ticket is not None:
            self._ticket.revoke()
        if self._timer is not None:
            self._timer.close()

    # -- the watchdog ---------------------------------------------------------

    def beat(self, at: float | None = None) -> None:
        """The child is alive: arm its watchdog, or move the deadline (see :meth:`_keep_watch`).

        For a program: the supervisor calls it at its sd_notify ``READY=1``
        (which arms the watchdog) and each ``WATCHDOG=1``, with *at* when
        the kernel received it (``NotifyMessage.received_at``; None: unknown).
        The deadline is *at* plus the watchdog. Why *at*: a beat read late,
        queued while the supervisor's loop was busy, counts when it was
        sent; a beat sent after the deadline had passed does not count at
        all (the program was hung by then, however lively it is now), so
        the timer expires as it was set and the child is found hung. A
        beat whose sending is unknown (no kernel stamp) counts from now,
        and is never late: read at the deadline, it may have been sent in
        time. Nor does a beat count from before the one before it (a stamp
        made to look old by a step of the realtime clock). A Python child
        moves the deadline itself: it holds the timer too.
        """
        if self._timer is None or self._watchdog is None or self._triggered:
            return
        now = time.monotonic()
        if at is not None:
            at = min(at, now)
            if self._deadline is not None and at > self._deadline:
                return  # late: its deadline passed first (the timer has expired)
        at = now if at is None else at
        if self._last_beat is not None:
            at = max(at, self._last_beat)
        self._beats += 1
        self._last_beat = at
        self._deadline = at + self._watchdog
        self._timer.expire_at(self._deadline)

    def trigger_watchdog(self) -> None:
        """The program sent ``WATCHDOG=trigger``: it is hung now (later beats do not count)."""
        if self._timer is not None and self._watchdog is not None and not self._triggered:
            self._triggered = True
            self._timer.expire_at(time.monotonic())

    async def _keep_watch(self, period: float, scope: anyio.CancelScope) -> None:
        """Find the child hung once it has not beaten in time; then end it.

        In time: within *period* seconds for a program, and a beat spacing
        more for a Python child (see ``ChildContext._beat``).

        One timer per run, which the beats move, and which wakes the
        supervisor only when the child is late: a beat of a Python child is
        a ``timerfd_settime`` in the child (the deadline is its
        :class:`WatchdogTimer`, armed by the child when it is ready), so a
        healthy child costs the supervisor nothing at all. (A message per
        beat cost the supervisor ~0.15 ms of CPU each, and a timer of its
        own that wakes once a period ~0.1 ms a wake-up, measured: 50
        children with ``watchdog=1.0`` took 3 %, then 1 %, of a core.)
        Cancelled by :meth:`watch` once the process is gone, or once its
        result, error or exit message came (its target is over). A child
        being stopped is left to its stop (its grace, then SIGKILL). A
        program's beats that wait on its notify socket are taken at the
        deadline (:attr:`on_watchdog_expiry`) before it is judged.
        """
        with scope:
            timer = self._timer
            assert timer is not None
            while True:
                overdue = await timer.expired()
                if self._triggered or self.on_watchdog_expiry is None:
                    break
                # A program's WATCHDOG=1 may be queued on its notify socket,
                # sent in time, while our loop was busy: take it first.
                beats = self._beats
                self.on_watchdog_expiry()
                if self._beats == beats or self._triggered:
                    break
            timer.disarm()
            if self.stop_requested or self._over_limit is not None:
                return  # being stopped (by us, or over its max_memory): left to its stop
            if self._triggered:
                self._hung = (None, period)
                logger.warning("child %r sent WATCHDOG=trigger: killing it", self._title_name)
            else:
                late = period + timer.margin + overdue  # since its last beat
                self._hung = (late, period)
                self._hung_since = self._never_beat_since(time.monotonic() - late, period)
                logger.warning(
                    "child %r hung: %s (its watchdog is %g s): killing it",
                    self._title_name,
                    self._no_beat(late),
                    period,
                )
            if self._dumps_stacks and self._pidfd is not None:
                # Its stacks to its stderr first; then it ends by itself, and
                # its end cancels this wait (see enable_stack_dumps).
                if self._output is not None:
                    self._output.recorded = []
                with contextlib.suppress(ProcessLookupError):
                    _platform.pidfd_send_signal(self._pidfd, DUMP_SIGNAL)
                await self._await_dump()
            self.kill()

    async def _await_dump(self) -> None:
        """Give a hung child's stack dump time to come: :data:`DUMP_WAIT` of quiet ends it.

        Its end (right after the dump) cancels this wait. A long dump (a
        hundred threads, ~10,000 lines) takes longer than one wait to pass
        through the pipe: each of its lines gives it :data:`DUMP_WAIT` more,
        up to :data:`DUMP_WAIT_MAX` in all. Without captured output (the
        dump goes to our own stderr) one :data:`DUMP_WAIT`. Only the dump's
        lines count (from its first thread's header on), not the child's own
        output. How long it waited is kept for the error's text.
        """
        output = self._output
        if output is None:
            await anyio.sleep(DUMP_WAIT)
            return
        began = time.monotonic()
        try:
            with anyio.move_on_after(DUMP_WAIT_MAX):
                while True:
                    output.dump_progress = progress = anyio.Event()
                    with anyio.move_on_after(DUMP_WAIT) as quiet:
                        await progress.wait()
                    if quiet.cancelled_caught:
                        return
        finally:
            output.dump_progress = None
            self._dump_waited = time.monotonic() - began

    def _hung_status(self, status: ExitStatus) -> ExitStatus:
        """*status* of a run found hung: a :class:`ChildHungError` with its stack dump."""
        assert self._hung is not None
        late, period = self._hung
        recorded = self._output.recorded if self._output is not None else None
        stack = with_source_lines(recorded) if recorded else None
        what = "it sent WATCHDOG=trigger" if late is None else self._no_beat(late)
        if stack is None and self._dumps_stacks and self._output is not None:
            # Asked, and not answered in time (a DUMP_SIGNAL handler of its own,
            # the signal blocked, a machine too busy): say so, not nothing.
            waited = DUMP_WAIT if self._dump_waited is None else self._dump_waited
            what += (
                f"; no stack dump: it did not answer the watchdog's dump request "
                f"within {waited:.2f} s"
            )
        error = ChildHungError(
            f"hung: {what}, its watchdog is {period:g} s",
            child=self._title_name,
            pid=self.pid,
            seconds=late,
            watchdog=period,
            stack=stack,
        )
        shown = None
        if stack is not None:
            assert self._output is not None
            self._output.log_dump(stack, f"stack dump of hung child {self._title_name!r}:")
            # What a traceback shows: the user's threads, not our start's frames.
            shown = _shown_stack(stack) or stack
            error.__cause__ = RemoteTraceback(shown)
        return dataclasses.replace(status, error=error, traceback=shown)

    def _no_beat(self, late: float) -> str:
        """``no beat for 1.25 s``; ``no beat in 0.62 s since it started`` where it never beat."""
        if self._hung_since is not None:
            return f"no beat in {late:.2f} s since {self._hung_since}"
        return f"no beat for {late:.2f} s"

    def _never_beat_since(self, last_beat: float, period: float) -> str | None:
        """Since when the child did not beat at all, if its last beat was its watchdog's start.

        A Python child's watchdog starts (a beat) at its start or its ready,
        and a heartbeat() within a beat spacing of a beat does not beat: a
        last beat less than a spacing after the start was that start. A
        program's first beat is its READY=1.
        """
        if not self._dumps_stacks:
            return "it was ready" if self._beats <= 1 else None
        since, what = (
            (self._ready_at, "it was ready")
            if self._watchdog_from_ready
            else (self._started_at, "it started")
        )
        if since is not None and last_beat < since + period * BEAT_FRACTION:
            return what
        return None

    # -- stopping -------------------------------------------------------------

    # -- resources ------------------------------------------------------------

    def usage(self) -> tuple[int, float] | None:
        """Resident bytes and CPU seconds of the child's process group, read now from /proc."""
        if self.exited.is_set():
            return None
        return _platform.group_usage(self.pid)

    def _signal_cause(self, signum: int | None) -> str | None:
        """Which of the child's ``limits`` made the kernel send *signum*, which ended it (or None).

        SIGXCPU: its ``cpu_seconds``. SIGKILL: the hard limit above it, if the
        child had used that much CPU (it handled its SIGXCPU and spun on),
        read from the zombie (:func:`_platform.zombie_cpu_seconds`, or the
        soft limit the kernel raised to the hard one,
        :func:`_platform.zombie_cpu_soft_limit`), and if no stop of ours sent
        it. Best effort: a fork server may reap the zombie before it is read
        (a spawned child is ours to reap: never); then the SIGKILL is told as
        it is.
        """
        seconds = self._cpu_seconds
        if seconds is None:
            return None
        if signum == signal.SIGXCPU:
            return f"over limits.cpu_seconds of {seconds} s"
        hard = seconds + _platform.CPU_HARD_MARGIN
        used = self._cpu_at_exit
        # The kernel kills by its CPU time in ticks, which may read a little less than the
        # exact time, or under load a lot more: then its soft limit, which it raised by a
        # second at each SIGXCPU, tells that it had counted up to the hard limit's last second.
        near = (used is not None and used >= hard - CPU_SLACK) or (
            self._cpu_soft_limit_at_exit is not None and self._cpu_soft_limit_at_exit >= hard
        )
        if (
            signum == signal.SIGKILL
            and near
            and self._over_limit is None
            and self._hung is None
            and not self.stop_requested  # our own SIGKILL, after the stop's grace
        ):
            return f"over limits.cpu_seconds of {seconds} s, and its hard limit of {hard} s"
        return None

    async def _keep_under_ceiling(self, limit: int) -> None:
        """Stop the child (stop signal, grace, SIGKILL) once its group is over *limit* bytes.

        Runs in the watcher's task group, which is cancelled once the child
        has exited: the grace ends there too. The grace is the child's
        ``shutdown``, or :data:`~gymnasiarch._process.sampler.OVER_LIMIT_GRACE`
        where that is None: a child that ignores its stop signal while it
        grows is SIGKILLed all the same. :attr:`on_stopping` hears of the stop.
        """
        ceiling = Ceiling(self.pid, limit)
        await enforce(ceiling)
        measured = ceiling.measured or 0
        self._over_limit = ChildOverLimitError(
            f"{format_size(measured)} resident, over its max_memory of {format_size(limit)}",
            child=self.name,
            pid=self.pid,
            limit="max_memory",
            limit_bytes=limit,
            measured=measured,
        )
        logger.warning("child %r: %s: stopping it", self.name, self._over_limit.args[0])
        if self.on_stopping is not None:
            self.on_stopping(
                f"over max_memory (measured {format_size(measured)} of limit {format_size(limit)})"
            )
        self.terminate()
        # Looked up here, not bound at import: a test shortens it.
        await anyio.sleep(sampler.OVER_LIMIT_GRACE if self._grace is None else self._grace)
        self.kill()

    def send_signal(self, signum: int) -> None:
        """Send *signum* to the child's process group (its subprocesses too).

        Before the child has made its own group, the signal goes to the child
        alone. Signals to a child that has already exited are dropped.
        """
        if self.exited.is_set():
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            if self._pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    _platform.pidfd_send_signal(self._pidfd, signum)

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM, or a program's stop signal); its escapees too."""
        self.send_signal(self._stop_signal)
        self._signal_escapees(signal.SIGTERM)

    def kill(self) -> None:
        """Stop the child now (SIGKILL); the processes that left its group too."""
        self.send_signal(signal.SIGKILL)
        self._signal_escapees(signal.SIGKILL)

    def _signal_escapees(self, signum: int) -> None:
        if not self.exited.is_set():
            self._find_escapees()
            self._escapees.signal(signum)
