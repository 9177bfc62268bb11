"""The backend seam: what the supervisor and every backend share, and nothing more.

The supervisor decides (start, restart, stop, give up); a backend carries it
out. They speak through this module only: the supervisor hands a backend a
:class:`Launch`, gets back a :class:`ChildRun`, follows its events and reads
its :class:`ExitStatus`. :class:`~gymnasiarch.LocalBackend`
(:mod:`gymnasiarch._backends.local`) runs each child as a process of this
machine; :class:`~gymnasiarch.ray_backend.RayBackend` runs the same launch on
a cluster node (ARCHITECTURE.md, "Beyond one machine"); the tests' fake
backend scripts runs without a process.

This module imports nothing of ours but leaves (the exceptions), so a
backend, the process layer and the child's bootstrap may all import it
without pulling the supervisor, and the supervisor may import it without
pulling the process layer. ``tests/test_layers.py`` keeps it so.
"""

from __future__ import annotations

import abc
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
from anyio.abc import TaskStatus

from gymnasiarch.exceptions import (
    ChildHungError,
    ChildOverLimitError,
    InitializationFailedError,
    ResultNotSentError,
)

if TYPE_CHECKING:
    from gymnasiarch.logserver import LogServer, LogTicket

#: How the local backend starts a child's process: through the fork server
#: (fast: modules are loaded once in the server) or a fresh interpreter.
StartMethod = Literal["forkserver", "spawn"]

#: Seconds an exited child's output and log connection may stay open (held
#: by a subprocess of it) before the exit is reported without the rest.
DRAIN_TIMEOUT = 2.0


@dataclass(frozen=True)
class Launch:
    """Everything a child needs to know; pickled to it over its trusted start pipe."""

    name: str
    target: Callable[..., Any] | str | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    runtime_config: dict[str, Any]
    seed: int | None
    restarts: int
    #: The child's stdout and stderr as the backend hands them over (the
    #: local backend's pair of ``_output.InheritedFd``); None: the child's own.
    output: tuple[Any, Any] | None = None
    #: The environment to run in, where it is not the starting process's
    #: own (a child of a fork server shared by several Ray actors).
    environ: dict[str, str] | None = None
    #: The anyio backend an ``async def`` target runs on ("asyncio" or "trio").
    async_backend: str = "asyncio"
    #: The child's path in the tree (``agents/agent-1``), for its process
    #: title; None for a child of the root (its name is its path).
    path: str | None = None
    #: An external program to exec instead of running *target* (its argv).
    command: tuple[str, ...] | None = None
    #: For a *command*: variables to set (or, where None, to remove).
    env: dict[str, str | None] | None = None
    #: For a *command*: the directory to run it in.
    cwd: str | None = None
    #: For a *command*: the signal that asks it to stop.
    stop_signal: int = 15
    #: The child's watchdog period in seconds (None: no watchdog): the run
    #: is hung when it does not beat that often (see ``_process.run``).
    watchdog: float | None = None
    #: Whether the watchdog starts at the child's ready (or first beat),
    #: rather than when its target starts: a child with a ``ready_timeout``,
    #: a program (armed by its sd_notify ``READY=1``).
    watchdog_from_ready: bool = False
    #: With a watchdog, for a Python child: the timer whose deadline its
    #: beats move (the process layer's ``timerfd``, as an ``_output.InheritedFd``).
    beats: Any = None
    #: For a *command*: its ready kind (a ``gymnasiarch.ready`` value), for a
    #: backend whose runs check it where the program runs
    #: (:attr:`ChildRun.checks_program_ready`): a ``Notify`` socket must be
    #: there before the program starts, a ``Line`` matcher fed from its first line.
    ready: Any = None
    #: The level of a plain line of captured stdout (INFO), and of stderr (WARNING).
    stdout_level: int = 20
    stderr_level: int = 30
    #: With ``output="json"``: the key paths of a JSON line's level, message,
    #: time and extras (``_spec.json_key_paths``); None: every line is plain.
    json_keys: dict[str, tuple[str, ...]] | None = None
    #: Resource limits to set in the child before its target or program
    #: starts (``ChildSpec.limits``, checked: sizes in bytes).
    limits: dict[str, int | bool] | None = None
    #: A ceiling on the resident bytes of the child's process group, sampled
    #: where the child runs (``ChildSpec.max_memory``); and the grace between
    #: the stop signal and SIGKILL when the child is stopped for it.
    max_memory: int | None = None
    shutdown: float | None = 5.0
    #: For a *command* whose ``ports=`` its backend picks where it runs
    #: (``picks_program_ports``): each name and the port it had (0: none
    #: yet, pick one); its command, env and ready keep their placeholders,
    #: filled there. None: no ports, or filled in by the supervisor already.
    node_ports: dict[str, int] | None = None


def target_module(target: object) -> str | None:
    """The module of a target given as ``package.module:name`` (worth preloading), else None."""
    if isinstance(target, str) and ":" in target:
        return target.partition(":")[0]
    return None


# -- how a run ended ----------------------------------------------------------------


class RemoteTraceback(Exception):  # noqa: N818 - named after what it shows
    """The traceback of an exception raised in a child, as text.

    It is the ``__cause__`` of the exception the child raised, so a
    traceback printed in the parent shows where in the child it happened.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\n{self.text}"


class RemoteError(Exception):
    """Stands in for a child's exception that could not be pickled."""


def rebuild_error(payload: tuple[Any, ...]) -> tuple[BaseException, str]:
    """The child's exception and traceback text from what its bootstrap sent.

    *payload* is ``(error or None, type name, str(error), traceback text)``:
    the error itself where it pickled, else a :class:`RemoteError` standing
    in for it. Either way its ``__cause__`` is the :class:`RemoteTraceback`.
    """
    error, type_name, text, tb_text = payload
    if not isinstance(error, BaseException):
        error = RemoteError(f"{type_name}: {text}")
    error.__cause__ = RemoteTraceback(tb_text)
    return error, tb_text


@dataclass(frozen=True)
class ExitStatus:
    """How one run of a child ended.

    Attributes:
        exitcode: The exit code, or ``None`` if a signal ended the child.
        signum: The signal that ended the child, or ``None``.
        result: What the target returned (if it returned).
        error: The exception the target raised, with a :class:`RemoteTraceback`
            as its ``__cause__`` (if it raised).
        traceback: The child's traceback text (if it raised).
        pid: The process id the child had.
        output: The last lines the child wrote to stderr (if captured).
        lost: Why the child's host went away with it (a cluster node lost,
            its actor killed), where a backend runs children elsewhere.
        result_error: Set when the target returned, but its return value
            could not be pickled to the parent: a result error, not a
            crash (the target ran to its end; a run again would return the
            same). ``result`` is ``None`` then, and the run is not normal.
        start_error: Set when a program child's program could not be
            exec'd (not found, not executable, its ``cwd`` gone): a start
            failure that a restart would repeat, not a crash.
        over_limit: Set when the child was stopped for going over its
            ``max_memory``: an abnormal end, whatever its exit code.
        signal_cause: For a child ended by a signal that one of its
            ``limits`` made the kernel send: which limit
            (``over limits.cpu_seconds of 1 s`` for a SIGXCPU).
        not_ready: Set when the supervisor stopped the child for missing
            its ``ready_timeout``: an abnormal end, whatever its exit code.
    """

    exitcode: int | None
    signum: int | None
    result: Any = None
    error: BaseException | None = None
    traceback: str | None = None
    pid: int | None = None
    output: str | None = None
    lost: str | None = None
    result_error: ResultNotSentError | None = None
    start_error: InitializationFailedError | None = None
    over_limit: ChildOverLimitError | None = None
    signal_cause: str | None = None
    not_ready: InitializationFailedError | None = None

    @property
    def normal(self) -> bool:
        """True if the child ended on its own with exit code 0, no exception, its result sent."""
        return (
            self.exitcode == 0
            and self.error is None
            and self.result_error is None
            and self.start_error is None
            and self.over_limit is None
            and self.not_ready is None
        )

    def describe(self) -> str:  # noqa: PLR0911 - one return per way a run ends
        """A short human text: ``exit code 3``, ``signal SIGKILL``, ``raised ValueError``."""
        if self.lost is not None:
            return f"lost with its host: {self.lost}"
        if self.over_limit is not None:
            return f"stopped over its limit: {self.over_limit.args[0]}"
        if self.not_ready is not None:
            return f"stopped: {self.not_ready.args[0]}"
        if self.start_error is not None:
            return str(self.start_error)
        if isinstance(self.error, ChildHungError):  # "hung: ...", and where it was stuck
            stuck = self.error.stuck_at()
            where = f"; stuck at {'; '.join(stuck)}" if stuck else ""
            return f"{self.error.args[0] if self.error.args else 'hung'}{where}"
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {self.error}"
        if self.result_error is not None:
            return (
                f"returned a {self.result_error.result_type} that cannot be sent back "
                f"(cannot pickle {self.result_error.type_name})"
            )
        if self.signum is not None:
            cause = f" ({self.signal_cause})" if self.signal_cause else ""
            return f"killed by {signal.Signals(self.signum).name}{cause}"
        return f"exit code {self.exitcode}"


# -- one run ------------------------------------------------------------------------


async def first_of(first: anyio.Event, *others: anyio.Event) -> None:
    """Return as soon as any of the events is set (one helper task per other event)."""
    if first.is_set() or any(event.is_set() for event in others):
        return
    async with anyio.create_task_group() as group:

        async def wait_and_cancel(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in others:
            group.start_soon(wait_and_cancel, event)
        await first.wait()
        group.cancel_scope.cancel()


class ChildRun(abc.ABC):
    """One run of one child, as the supervisor sees it, whichever backend runs it.

    The backend's :meth:`Backend.start` returns it; the supervisor then runs
    :meth:`watch` in a task of its own and waits on the events. A backend
    subclasses it, sets the events as the run goes, and :attr:`status` just
    before :attr:`exited`.

    Attributes:
        name: The child's name.
        pid: The process id, where the child has one this machine's
            supervisor can name (None for a nested supervisor, or before a
            remote run reports it).
        started: Set once the child's target runs.
        ready: Set once the child said it is ready (``ready_value`` is what it said).
        ready_value: What the child passed to ``ready()``.
        exited: Set once the run is over (``status`` says how it ended).
        status: How the run ended, once :attr:`exited` is set.
        stop_requested: Set by whoever stops the child on purpose: such an
            exit is no crash.
    """

    pid: int | None = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = anyio.Event()
        self.ready = anyio.Event()
        self.ready_value: Any = None
        self.exited = anyio.Event()
        self.status: ExitStatus | None = None
        self.stop_requested = False
        #: Set by the supervisor when it stops the child for missing its
        #: ``ready_timeout``: the run's :attr:`status` then says so.
        self.not_ready: InitializationFailedError | None = None
        #: Called with each line of captured output, where the backend
        #: captures it here (a program's ``ready=Line``); set before watch().
        self.on_output_line: Callable[[str], object] | None = None
        #: Called with each sd_notify ``STATUS`` a program sends, where the
        #: run checks readiness itself (:attr:`checks_program_ready`).
        self.on_notify_status: Callable[[str | None], object] | None = None
        #: Called with a program's ports once its run picked them where it
        #: runs (:attr:`Launch.node_ports`), before :attr:`started` is set.
        self.on_ports: Callable[[dict[str, int]], object] | None = None
        #: Called (without waiting) when a program's watchdog deadline has
        #: passed, before it is found hung: it hands the sd_notify messages
        #: queued for the run to :meth:`beat`, so that a ``WATCHDOG=1`` the
        #: program sent in time counts although the supervisor's loop was
        #: busy (the deadline is checked again after it).
        self.on_watchdog_expiry: Callable[[], object] | None = None
        #: Called (without waiting) with why, when the run itself begins to
        #: stop its child (over its ``max_memory``): the supervisor shows the
        #: child as ``stopping`` and publishes a ``stopping`` event.
        self.on_stopping: Callable[[str], object] | None = None

    @abc.abstractmethod
    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the run to its end; set :attr:`status`, then :attr:`exited`.

        Called once, in a task of the supervisor's; ``task_status.started()``
        once the run is followed. It returns when the run is over, or once
        :meth:`abandon` gave up on it.
        """

    @abc.abstractmethod
    def terminate(self) -> None:
        """Ask the child to stop (it may clean up; the supervisor bounds how long)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the child now."""

    @abc.abstractmethod
    def abandon(self) -> None:
        """Stop following a child that would not go away (it is reported as a zombie)."""

    def beat(self, at: float | None = None) -> None:  # noqa: B027 - a default: ignored
        """The child showed from outside that it is alive (a program's sd_notify ``WATCHDOG=1``).

        Moves the run's watchdog deadline to *at* (when the message was
        received, ``time.monotonic()`` seconds; None: now) plus the watchdog
        (and, before the first, starts it: the supervisor calls it at a
        program's ``READY=1`` too); a beat at a time after the deadline does
        not count. A Python child's own beats reach its run directly; by
        default nothing.
        """

    def trigger_watchdog(self) -> None:  # noqa: B027 - a default: as beat()
        """The program sent sd_notify ``WATCHDOG=trigger``: its watchdog expires now.

        As ``sd_notify(3)`` says: act as if the deadline had passed. A run
        with a watchdog finds the child hung at once; by default nothing.
        """

    def usage(self) -> tuple[int, float] | None:
        """Resident bytes and CPU seconds of the child's process group, read now; None if unknown.

        By default unknown: a run whose child is not a process of this
        machine (a nested supervisor, a child on another node).
        """
        return None

    def published_ports(self, ports: Mapping[str, int]) -> dict[str, Any]:
        """The ready value of a program with ``ports=``: where to reach it, by name.

        On this machine, the ports as they are (``{"api": 40123}``); a run
        on another node adds the address the driver reaches it at (``"host"``).
        """
        return dict(ports)

    def retire(self) -> None:  # noqa: B027 - a default: most runs keep nothing
        """After the run: the supervisor will not start its child again from it.

        A backend that keeps something of a run for the child's next one
        (:meth:`Backend.start`'s *previous*) frees it now; by default
        nothing is kept.
        """

    #: Whether this run checks its program's ready kind itself, where the
    #: program runs (:meth:`program_ready`): a run on another machine, whose
    #: process group, notify socket, paths and output are there. Otherwise
    #: (a local process) the supervisor checks it on this machine.
    checks_program_ready: bool = False

    async def program_ready(self, kind: Any) -> Any:
        """Wait until the program shows *kind*; what was found (the ready value).

        For a run with :attr:`checks_program_ready` only. *kind* is the
        child's ``gymnasiarch.ready`` value, its placeholders substituted.
        The supervisor races the wait against the run's exit, its stop and
        the child's ``ready_timeout``; the notify ``STATUS`` lines that come
        while the program runs go to :attr:`on_notify_status`.

        Raises:
            ProcessLookupError: The program ended before it was ready (its
                exit, reported in a moment, says how).
        """
        raise NotImplementedError(f"{type(self).__name__} does not check readiness itself")


# -- where runs run -----------------------------------------------------------------


class Backend(Protocol):
    """Where children run.

    A supervisor calls :meth:`prepare` once before its first start (before
    it installs its signal handlers) and :meth:`aclose` once after its last
    child has gone; nested supervisors share their parent's backend, so
    these calls nest.

    Attributes:
        prepare_before_signals: Prepare before the supervisor installs its
            signal handlers (a backend that starts a cluster which replaces
            them); otherwise after, so that Ctrl-C during a slow prepare is
            an orderly stop.
        resolves_targets_here: The supervisor imports each dotted target
            once itself, to fail before any process starts; a backend whose
            children run where other code may be installed says False.

    A backend may also say ``runs_programs = True``: it runs command
    children (programs). Their readiness is checked by the supervisor on
    this machine, or, where the backend says ``checks_program_ready = True``
    (its programs run elsewhere), by each run where its program runs
    (:meth:`ChildRun.program_ready`). Without ``runs_programs``, a tree with
    a command child fails to start.
    """

    prepare_before_signals: bool
    resolves_targets_here: bool

    def preload(self, module: str) -> None:
        """A module the children's targets live in, worth loading once for all."""

    async def prepare(self) -> None:
        """Get ready to start children (called before the first start)."""

    def log_server(self) -> LogServer:
        """A new log server the children of this backend can reach."""

    async def start(
        self,
        launch: Launch,
        *,
        ticket: LogTicket | None,
        capture_output: bool,
        placement: Mapping[str, Any] | None = None,
        previous: ChildRun | None = None,
    ) -> ChildRun:
        """Start one run of a child (*placement*: see ``ChildSpec.placement``).

        *previous* is the child's run before this one, ended, if it had
        one: a backend may start the new run where that one ran.
        """

    async def aclose(self) -> None:
        """Release what :meth:`prepare` took (called once per :meth:`prepare`)."""
