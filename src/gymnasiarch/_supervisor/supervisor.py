"""The supervisor: OTP restart strategies over children in their own processes.

A :class:`Supervisor` owns an anyio task group. In it run one watcher task
per child run (it hears the child's messages and its exit), and a signal
monitor. Decisions (restart which children, give up, shut down) are made one
at a time under a lock, so a crash that arrives during a restart waits for
the restart to finish and is then judged on its own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from gymnasiarch import _ports
from gymnasiarch import ready as ready_kinds
from gymnasiarch._backends.base import (
    Backend,
    ChildRun,
    ExitStatus,
    Launch,
    StartMethod,
    first_of,
    target_module,
)
from gymnasiarch._backends.local import LocalBackend  # the default backend, nothing more
from gymnasiarch._from_ready import FromReady, references, substitute
from gymnasiarch._runtime_config import RuntimeConfig
from gymnasiarch._spec import (
    Backoff,
    ChildSpec,
    RestartType,
    StartOrder,
    Strategy,
    json_key_paths,
    ready_references,
)
from gymnasiarch._supervisor.events import Event, EventHub, EventKind
from gymnasiarch._supervisor.options import SupervisorOptions
from gymnasiarch._supervisor.policy import (
    GiveUp,
    Intensity,
    Member,
    Restart,
    StopTree,
    backoff_step,
    decide,
)
from gymnasiarch._supervisor.signals import SignalCatcher
from gymnasiarch.dynaloader import ErrorDuringImport, resolve
from gymnasiarch.exceptions import (
    ChildEndedError,
    ChildHungError,
    DeadChildrenRisingAsZombiesError,
    FieldTypeError,
    FieldValueError,
    GymnasiarchError,
    InitializationFailedError,
    PrematureTaskDeathError,
    SignalInterruptError,
)
from gymnasiarch.logserver import LOG_CONFIG_KEY, LogServer
from gymnasiarch.seeding import derive_seed

logger = logging.getLogger("gymnasiarch.supervisor")

ChildState = Literal[
    "waiting", "starting", "running", "restarting", "stopping", "exited", "terminated"
]
_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _not_ignored(signums: tuple[int, ...]) -> list[int]:
    """Those of *signums* this process does not ignore.

    A signal ignored when the supervisor starts was ignored on purpose by
    whoever started us or by the application: ``nohup`` ignores SIGHUP so
    that closing the terminal does not end a long run, a shell ignores
    SIGINT for a job it runs in the background. Python itself leaves SIGINT
    alone when it starts ignored; so do we, for each of the three.
    """
    return [signum for signum in signums if signal.getsignal(signum) != signal.SIG_IGN]


# Where a supervisor is in its life: idle (before __aenter__, after __aexit__),
# starting (in __aenter__), running, shutting_down (its children are being
# stopped, until __aexit__ ends). One value, so no two flags can disagree.
_Phase = Literal["idle", "starting", "running", "shutting_down"]
_T = TypeVar("_T")


class _Option(Generic[_T]):
    """A read-only attribute of a :class:`Supervisor`: the option of that name it runs with."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, supervisor: None, owner: type) -> _Option[_T]: ...
    @overload
    def __get__(self, supervisor: Supervisor, owner: type) -> _T: ...
    def __get__(self, supervisor: Supervisor | None, owner: type) -> _T | _Option[_T]:
        if supervisor is None:
            return self
        value: _T = getattr(supervisor._settings, self._name)
        return value

    def __set__(self, supervisor: Supervisor, value: _T) -> None:
        raise AttributeError(
            f"Supervisor.{self._name} is read-only: "
            f"use supervisor.configure({self._name}=...) before it starts"
        )


@dataclass(frozen=True)
class ChildInfo:
    """One row of :meth:`Supervisor.which_children` and :meth:`Supervisor.walk`.

    Attributes:
        name: The child's name.
        pid: Its process id while it runs (``None`` for a nested supervisor
            or a child that is not running).
        state: ``waiting`` (not started yet: in a sequential start, behind
            an earlier sibling still starting, or never started because the
            tree ended first), ``starting``, ``running``, ``restarting``,
            ``stopping``, ``exited`` or ``terminated``.
        restarts: How often it has been restarted by its supervisor's
            current run (OTP's count: it starts again at 0 when a nested
            supervisor is itself restarted).
        last_exit: How its last run ended, if it has ended once.
        uptime: Seconds since its current run started (``None`` when it is
            not running).
        path: Where it is in the tree, ``"agents/agent-1"`` for a child of
            the nested supervisor ``agents``; its name for the root's children.
        ready_value: What it passed to ``child_context().ready(value)`` in
            its current or last run (``None`` until then).
        placement: Its spec's placement (``None`` for a nested supervisor).
        crashes: How often it ended abnormally, counted over the whole life
            of the root supervisor, across restarts of the groups it is in
            (each restart of a nested supervisor gives that group a fresh
            restart intensity; this count shows what that adds up to).
        nested: True for a row that is a nested supervisor.
        on_this_machine: Whether *pid* is a process of this machine: False
            for a child that a cluster backend runs on another node, whose
            pid here would name some other process.
        notify_status: For a program with ``ready=Notify()``: the last
            ``STATUS=`` line it sent (``None`` before any).
        ports: For a program with ``ports=``: the port the supervisor
            picked for each name (``{"api": 40123}``), from its first start
            on, the same across its restarts unless another process took
            it while the child was down (then a new one; a WARNING says so)
            (empty before its first start). Under the Ray backend, picked
            by its actor on its node.
        memory: The resident memory (RSS) of its process group in bytes,
            read from ``/proc`` when the row is made (``which_children()``,
            ``walk()``, not sampled); ``None`` when it is not running, or
            for a nested supervisor. For a child on a Ray node, the last
            figure its actor read there, fetched in the background while
            rows are asked for (``None`` until the first comes: see
            ``gymnasiarch.ray_backend.USAGE_REFRESH``).
        cpu_seconds: The CPU time (user and system) of its process group so
            far, read on demand as *memory* is; ``None`` likewise.
    """

    name: str
    pid: int | None
    state: ChildState
    restarts: int
    last_exit: ExitStatus | None
    uptime: float | None = None
    path: str = ""
    ready_value: Any = None
    placement: Mapping[str, Any] | None = None
    crashes: int = 0
    nested: bool = False
    on_this_machine: bool = True
    notify_status: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    memory: int | None = None
    cpu_seconds: float | None = None


class _NestedRun(ChildRun):
    """A nested supervisor, run as a child of another: a run like any backend's (no pid)."""

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(supervisor.name)
        self._supervisor = supervisor
        self._scope = anyio.CancelScope()

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        status = ExitStatus(None, signal.SIGTERM)  # if stopped from outside
        try:
            with self._scope:
                self.started.set()
                task_status.started()
                # Ready once its own children have started, as OTP's
                # start_link of a supervisor returns after its init: a later
                # sibling may depend on them (FromReady("group/child")).
                result = await self._supervisor._run(on_started=self.ready.set)
                status = ExitStatus(0, None, result=result)
        except GymnasiarchError as error:
            text = "".join(traceback.format_exception(error)).rstrip()
            status = ExitStatus(1, None, error=error, traceback=text)
        finally:
            self.status = status
            self.exited.set()

    def terminate(self) -> None:
        self._scope.cancel()  # the inner supervisor shuts its children down in order

    def kill(self) -> None:
        self._supervisor._kill_now()
        self._scope.cancel()

    def abandon(self) -> None:
        """Nothing to abandon: the inner supervisor bounds its own waits."""


#: The grace of a child stopped for missing its ready_timeout, where its
#: ``shutdown`` is None (as _process.sampler.OVER_LIMIT_GRACE for max_memory).
_UNREADY_GRACE = 5.0


class _Child:
    """The supervisor's record of one child across its runs."""

    def __init__(self, spec: ChildSpec | Supervisor) -> None:
        self.spec = spec
        self.run: ChildRun | None = None
        # The latest run, kept after its end: the backend may start the next
        # one where it ran (a Ray backend reuses its actor), until retired.
        self.last_run: ChildRun | None = None
        self.state: ChildState = "waiting"  # not "exited": it has not run yet
        # Stopped with terminate_child(): kept in the tree, which runs on for
        # it (OTP's supervisor, supervisord's `stop`), until restart_child().
        self.held = False
        # Set by terminate_child(): the start under way stops waiting for readiness.
        self.start_called_off = anyio.Event()
        self.restarts = 0
        self.last_exit: ExitStatus | None = None
        self.started_at = 0.0
        self.failures_in_row = 0
        self.ready_value: Any = None
        self.was_ready = False  # the current or last run called ready()
        # A program with ready=Notify: its run's socket (made with its
        # launch), set when READY=1 came, and the last STATUS it sent.
        self.notify: ready_kinds.NotifySocket | None = None
        self.notify_ready = anyio.Event()
        self.notify_status: str | None = None
        self.notify_ready_status: str | None = None  # the STATUS as READY=1 came
        self.line_matcher: ready_kinds.LineMatcher | None = None  # a program's ready=Line
        # A program's ports=: picked at its first start, kept across its restarts
        # (tested again before each: replaced if taken meanwhile).
        self.ports: dict[str, int] = {}
        # For wait_ready(): set (and renewed) when the child becomes ready or
        # ends for good; and why it ended for good (None while it runs or will
        # run again).
        self.changed = anyio.Event()
        self.ended: str | None = None
        # The restart due for it after a backoff (see Supervisor._restart), and when.
        self.pending_restart: object | None = None
        self.due_at = 0.0

    def call_off_restart(self) -> bool:
        """Forget the restart due for it (not done: not counted); whether one was due."""
        if self.pending_restart is None:
            return False
        self.pending_restart = None
        self.restarts -= 1
        return True

    @property
    def name(self) -> str:
        return self.spec.name

    def close_notify(self) -> None:
        """Close the sd_notify socket of a run that never got going."""
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def wake(self) -> None:
        """Tell the :meth:`Supervisor.wait_ready` callers of this child to look again."""
        self.changed.set()
        self.changed = anyio.Event()

    def end_for_good(self, why: str) -> None:
        """No run follows (the first reason counts); waiters for its readiness hear it."""
        if self.ended is None:
            self.ended = why
        self.wake()

    def retire(self, why: str | None = None) -> None:
        """No run of this child follows its last one (unless asked for anew), for *why*.

        By default: its restart type does not restart it. How its last run
        ended is not said here: a waiter's error carries it once.
        """
        self.end_for_good(why or f"it ended and, as a {self.restart} child, is not restarted")
        # Its ports may go to another child (kept, they come back with its next pick).
        _ports.forget(self.ports.values())
        if self.last_run is not None:
            self.last_run.retire()
            self.last_run = None

    @property
    def restart(self) -> RestartType:
        return self.spec.restart

    @property
    def significant(self) -> bool:
        return self.spec.significant

    @property
    def shutdown(self) -> float | None:
        spec = self.spec
        return spec.shutdown if isinstance(spec, ChildSpec) else spec._grace()


class Supervisor:
    """Start children in their own processes, restart them by OTP rules, stop them in order.

    Use it as an async context manager and :meth:`wait` for the tree to end,
    or call :meth:`run`, which does both::

        async with Supervisor([ChildSpec("env", "mysim.env:run")]) as sup:
            results = await sup.wait()

    Each option below (but *log_server*) is an attribute of the same name,
    read-only (``sup.seed``); :attr:`options` holds them all as one
    :class:`~gymnasiarch.SupervisorOptions`, and :meth:`configure` changes
    them before the supervisor starts. A nested supervisor reads what it runs
    with: its own options, completed by its parent's (runtime config, a
    derived seed, the backend; no signals).

    Args:
        children: A list of :class:`ChildSpec` objects, or supervisors to
            nest (a supervision tree), in start order (one child too:
            ``[spec]``). Names must be unique among siblings; a name has no
            ``/`` (it separates the names of a path) and no space at an end.
        strategy: Which children to restart when one must be restarted:
            ``"one_for_one"`` just that one, ``"one_for_all"`` all of them,
            ``"rest_for_one"`` it and the ones started after it. Siblings are
            stopped in reverse start order and started in start order.
        max_restarts: Restart intensity, as in OTP: more than this many
            restarts within *max_seconds* make the supervisor give up.
        max_seconds: The window of the restart intensity.
        seed: If given, each child's ``child_context().seed`` is
            ``derive_seed(seed, child_name)``, stable across runs and restarts.
        runtime_config: Handed to every child as ``RuntimeConfig.current()``.
        start_order: ``"sequential"`` starts each child once the previous one
            is ready; ``"parallel"`` starts them all at once.
        backoff: Delay restarts with exponential backoff; ``None`` restarts
            at once (as OTP does).
        start_method: ``"forkserver"`` (fast; the default) or ``"spawn"``,
            for the default :class:`~gymnasiarch.LocalBackend`.
        backend: Where the children run; by default processes of this
            machine (``LocalBackend(start_method)``).
        kill_timeout: How long to wait for a child to go away after SIGKILL
            before it is reported as a zombie.
        handle_signals: Turn SIGINT, SIGTERM and SIGHUP into an orderly
            shutdown and :class:`~gymnasiarch.exceptions.SignalInterruptError`
            (only possible in the main thread; nested supervisors leave
            signals to the outermost one). A signal the process ignores
            when the supervisor starts stays ignored (``nohup``'s SIGHUP,
            the SIGINT of a shell's background job), as Python does with SIGINT.
        name: The supervisor's name, when it is nested in another.
        restart: Its restart type, when it is nested in another.
        significant: Whether it is significant, when nested in another.
        shutdown: When nested: seconds its parent grants it to stop before
            it kills what is left of it. ``None`` (the default) grants what
            its own children's shutdowns need: the sum of their graces (each
            plus *kill_timeout*) when it stops them one after another, the
            largest when it stops them at once, plus a second; ``math.inf``
            waits for ever.
        log_server: Where the children's log records go. By default the
            supervisor runs its own while it runs, the one its backend
            asks for (a :meth:`LogServer.unix
            <gymnasiarch.logserver.LogServer.unix>` for local children); a server
            given here must be running already and is left running.

    Raises:
        FieldValueError: A bad strategy, restart intensity, duplicate child
            name... (a ``ValueError``; its ``field`` names the argument, or
            ``children[i]``).
        FieldTypeError: *children* is not a list of them (a single spec, a
            text, a mapping), a child that is neither a ChildSpec nor a
            Supervisor, an option of the wrong type (a ``TypeError``).
    """

    def __init__(
        self,
        children: Iterable[ChildSpec | Supervisor] = (),
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        seed: int | str | None = None,
        runtime_config: Mapping[str, Any] | None = None,
        start_order: StartOrder = "sequential",
        backoff: Backoff | None = None,
        start_method: StartMethod | None = None,
        kill_timeout: float = 2.0,
        handle_signals: bool = True,
        name: str = "supervisor",
        restart: RestartType = "permanent",
        significant: bool = False,
        shutdown: float | None = None,
        log_server: LogServer | None = None,
        backend: Backend | None = None,
    ) -> None:
        # Validated as one frozen value: each bad option is a FieldError naming it.
        self._set_options(
            SupervisorOptions(
                name=name,
                strategy=strategy,
                max_restarts=max_restarts,
                max_seconds=max_seconds,
                seed=seed,
                runtime_config=runtime_config,  # type: ignore[arg-type]  # made a RuntimeConfig
                start_order=start_order,
                backoff=backoff,
                start_method=start_method,
                kill_timeout=kill_timeout,
                handle_signals=handle_signals,
                restart=restart,
                significant=significant,
                shutdown=shutdown,
                backend=backend,
            )
        )
        if log_server is not None and not isinstance(log_server, LogServer):
            raise FieldTypeError("log_server", f"expected a LogServer or None, got {log_server!r}")
        self._given_log_server = log_server
        self._parent_log_server: LogServer | None = None  # set when nested
        self._backend_prepared = False
        self._init_tree(children)
        self._reset()

    def __repr__(self) -> str:
        names = [s.name for s in self._specs]
        return f"<Supervisor {self.name!r} {self.strategy} children={names}>"

    # -- options ----------------------------------------------------------------

    # What it runs with, each read-only: a nested supervisor's are its own
    # options, completed by its parent's (see _settings_for).
    name: _Option[str] = _Option()
    strategy: _Option[Strategy] = _Option()
    max_restarts: _Option[int] = _Option()
    max_seconds: _Option[float] = _Option()
    seed: _Option[int | str | None] = _Option()
    runtime_config: _Option[RuntimeConfig] = _Option()
    start_order: _Option[StartOrder] = _Option()
    backoff: _Option[Backoff | None] = _Option()
    kill_timeout: _Option[float] = _Option()
    handle_signals: _Option[bool] = _Option()
    restart: _Option[RestartType] = _Option()
    significant: _Option[bool] = _Option()
    shutdown: _Option[float | None] = _Option()

    @property
    def start_method(self) -> StartMethod:
        """How the default local backend starts children (``"forkserver"`` unless told)."""
        return self._settings.start_method or "forkserver"

    @property
    def backend(self) -> Backend:
        """Where the children run: the backend given, the parent's, or a local one."""
        return self._settings.backend or self._default_backend

    @property
    def options(self) -> SupervisorOptions:
        """The options this supervisor was built with (or given by :meth:`configure`)."""
        return self._options

    def configure(self, **changes: Any) -> None:
        """Change some options before the supervisor starts: ``sup.configure(seed=7)``.

        Takes the keyword arguments of :class:`Supervisor` (but *log_server*);
        the others keep their values. The result is checked as at construction.

        Raises:
            RuntimeError: The supervisor is running.
            ValueError: A nested supervisor's name is fixed by its parent.
            FieldError: A bad value (a ``ValueError`` or ``TypeError`` too).
            TypeError: No option has that name.
        """
        if self._entered:
            raise RuntimeError(f"supervisor {self.name!r} is running: configure it before")
        if self._parent is not None and changes.get("name", self.name) != self.name:
            raise FieldValueError("name", "a nested supervisor's name cannot change")
        self._set_options(replace(self._options, **changes))

    def _set_options(self, options: SupervisorOptions) -> None:
        self._options = options
        # What the next run uses: the parent completes a nested one's (see _launch).
        self._settings = options
        if options.backend is None:
            self._default_backend: Backend = LocalBackend(options.start_method or "forkserver")

    def _settings_for(self, nested: Supervisor) -> SupervisorOptions:
        """What *nested* runs with under this supervisor: its options, completed by ours.

        The outermost supervisor owns the signals; what the nested one was
        not given, it inherits: the runtime config, a seed derived from
        ours, and (given neither backend nor start method) our backend.
        """
        own = nested.options
        seed = own.seed
        if seed is None and self.seed is not None:
            seed = derive_seed(self.seed, own.name)
        return replace(
            own,
            handle_signals=False,
            runtime_config=own.runtime_config or self.runtime_config,
            seed=seed,
            backend=self.backend if own.inherits_backend else own.backend,
        )

    # -- construction helpers -------------------------------------------------

    def _init_tree(self, children: Iterable[ChildSpec | Supervisor]) -> None:
        # Created once: a caller may subscribe before entering the supervisor.
        # A nested supervisor's events go to its ancestors' hubs as well, and
        # its hub lives as long as the root's, across restarts of its group.
        self._events = EventHub()
        self._upstream: list[EventHub] = []
        self._prefix = ""  # this supervisor's path in the tree, with a slash
        self._nested = False
        self._parent: Supervisor | None = None
        # FromReady references whose source is not among our children: the
        # enclosing supervisors may start it (see _check_references).
        self._pending_refs: list[tuple[ChildSpec, FromReady]] = []
        self._specs: list[ChildSpec | Supervisor] = []
        # A single spec, a text or a mapping would fail in the loop below, if
        # at all, with an error that does not say what was meant.
        if isinstance(children, ChildSpec | Supervisor | str | bytes | Mapping) or not isinstance(
            children, Iterable
        ):
            single = isinstance(children, ChildSpec | Supervisor | Mapping)
            raise FieldTypeError(
                "children",
                "expected a list of ChildSpec or Supervisor objects, got "
                f"{f'a {type(children).__name__}' if single else repr(children)} "
                "(one child goes in a list too: Supervisor([spec]))",
            )
        for child in children:
            self._add_spec(child)
        self._check_references()
        self._phase: _Phase = "idle"
        # The stops under way, by id of their run: the end of each (see _stop_runs).
        self._stops: dict[int, anyio.Event] = {}
        # Abnormal ends per child over the root's whole run: OTP counts
        # restarts per run of a supervisor, so a restarted group forgets.
        self._crashes: dict[str, int] = {}
        self._async_backend = "asyncio"

    def _add_spec(self, spec: ChildSpec | Supervisor) -> None:
        # The field names the child by its place: a tree file points at its table.
        field = f"children[{len(self._specs)}]"
        if not isinstance(spec, ChildSpec | Supervisor):
            raise FieldTypeError(field, f"expected a ChildSpec or a Supervisor, got {spec!r}")
        if spec is self:
            raise FieldValueError(field, "a supervisor cannot be its own child")
        if any(s.name == spec.name for s in self._specs):
            raise FieldValueError(field, f"duplicate child name {spec.name!r}")
        if isinstance(spec, Supervisor):
            if spec._nested:
                raise FieldValueError(
                    field, f"supervisor {spec.name!r} is nested in another already"
                )
            try:
                spec._adopt(self)
            except TypeError as error:  # a FromReady inside it: a tree file's line
                raise FieldTypeError(field, str(error)) from None
            except ValueError as error:
                raise FieldValueError(field, str(error)) from None
        self._specs.append(spec)

    def _adopt(self, parent: Supervisor) -> None:
        """Take this supervisor's place under *parent*: its path and where its events go."""
        if self._parent is None:  # its references not found inside: among parent's earlier
            for child_spec, ref in self._pending_refs:
                if not parent._check_reference(child_spec, ref, list(parent._specs)):
                    parent._pending_refs.append((child_spec, ref))
            self._pending_refs = []
        self._parent = parent
        self._nested = True
        self._prefix = f"{parent._prefix}{self.name}/"
        self._upstream = [parent._events, *parent._upstream]
        for spec in self._specs:
            if isinstance(spec, Supervisor):
                spec._adopt(self)

    def _check_references(self) -> None:
        """Check each FromReady of the children now: a bad one fails where it is written.

        A source is looked for among the earlier siblings, then (once this
        supervisor is nested) among the children its parent starts before
        it, and so on up, as names in nested scopes are. A reference not
        found yet waits for the parent; the root's :meth:`__aenter__` fails
        on one that nobody had.
        """
        for index, spec in enumerate(self._specs):
            if isinstance(spec, ChildSpec):
                for ref in ready_references(spec):
                    try:
                        found = self._check_reference(spec, ref, self._specs[:index])
                    except TypeError as error:  # named by its place: a tree file's line
                        raise FieldTypeError(f"children[{index}]", str(error)) from None
                    except ValueError as error:
                        raise FieldValueError(f"children[{index}]", str(error)) from None
                    if not found:
                        self._pending_refs.append((spec, ref))

    def _check_reference(
        self, spec: ChildSpec, ref: FromReady, earlier: list[ChildSpec | Supervisor]
    ) -> bool:
        """Whether *ref*'s source is one of *earlier* (then checked); False if it is not."""
        where = f"child {spec.name!r}: FromReady({ref.source!r})"
        head, *rest = ref.source.strip("/").split("/")
        source: ChildSpec | Supervisor | None = next((s for s in earlier if s.name == head), None)
        if source is None:
            if any(s.name == head for s in self._specs) and spec in self._specs:
                raise ValueError(f"{where}: {head!r} starts after {spec.name!r}, not before it")
            return False
        if self.start_order != "sequential":
            raise ValueError(
                f"{where} needs start_order='sequential' in supervisor {self.name!r}: in "
                "parallel, no child starts after another has announced its value"
            )
        for name in rest:
            if not isinstance(source, Supervisor) or name not in source._spec_names():
                raise ValueError(f"{where}: no child {ref.source!r} in the tree")
            source = next(s for s in source._specs if s.name == name)
        if isinstance(source, Supervisor):
            raise TypeError(f"{where}: {ref.source!r} is a supervisor, which has no ready value")
        # A program's ready kind will do, and so will its ports (its value from its start);
        # it cannot call child_context().ready(): say what it can do.
        if source.command is not None:
            if source.ready is not None or source.ports:
                return True
            raise ValueError(
                f"{where}: program {ref.source!r} has no ready value for {spec.name!r}: give it "
                "ready= (ready.Port, ready.Path, ready.Line or ready.Notify) or ports=[...], "
                f"so that {spec.name!r} starts once it is ready"
            )
        if source.ready_timeout is None:
            raise ValueError(
                f"{where}: child {ref.source!r} needs a ready_timeout, so that {spec.name!r} "
                "starts only once it has announced its value with child_context().ready(value)"
            )
        return True

    def _unresolved_reference(self) -> ValueError:
        spec, ref = self._pending_refs[0]
        head = ref.source.strip("/").split("/")[0]
        return ValueError(
            f"child {spec.name!r}: FromReady({ref.source!r}): no child named {head!r} starts "
            "before it (looked for among its earlier siblings, then among the children "
            "started before each enclosing supervisor)"
        )

    def _spec_names(self) -> list[str]:
        return [s.name for s in self._specs]

    def _grace(self) -> float | None:
        """Seconds this supervisor, nested, needs to stop its children (see *shutdown*)."""
        if self.shutdown is not None:
            return self.shutdown
        graces: list[float] = []
        for spec in self._specs:
            grace = spec.shutdown if isinstance(spec, ChildSpec) else spec._grace()
            if grace is None:
                return None  # a child that is granted for ever
            graces.append(grace + self.kill_timeout)
        if not graces:
            return _NESTED_MARGIN
        ordered = self.start_order == "sequential"
        return (sum(graces) if ordered else max(graces)) + _NESTED_MARGIN

    def _reset(self) -> None:
        previous: dict[str, _Child] = getattr(self, "_children", {})
        self._children: dict[str, _Child] = {s.name: _Child(s) for s in self._specs}
        for name, child in self._children.items():
            if name in previous:  # a restarted group keeps its programs' ports
                child.ports = previous[name].ports
        # New records: a wait_ready() on one of the old ones looks again.
        renewed, self._renewed = getattr(self, "_renewed", None), anyio.Event()
        if renewed is not None:
            renewed.set()
        self._results: dict[str, Any] = {}
        self._intensity = Intensity(self.max_restarts, self.max_seconds)  # a fresh run forgets
        self._lock = anyio.Lock()
        self._done = anyio.Event()
        self._stopping = anyio.Event()  # stop() was called
        self._error: GymnasiarchError | None = None
        self._zombie_error: DeadChildrenRisingAsZombiesError | None = None
        self._shut_down = anyio.Event()  # every child was stopped by _shutdown
        self._kill_immediately = False
        self._grace_scopes: set[anyio.CancelScope] = set()
        self._pending_exits = 0
        self._log_server: LogServer | None = None
        self._log_scope: anyio.CancelScope | None = None
        self._last_sigint = -math.inf
        self._signal_monitor: anyio.CancelScope | None = None
        self._signal_monitor_done = anyio.Event()

    @property
    def _entered(self) -> bool:
        """Between the start of ``__aenter__`` and the end of ``__aexit__``."""
        return self._phase != "idle"

    @property
    def _shutting_down(self) -> bool:
        """Its children are being stopped for good: no more starts, no more decisions."""
        return self._phase == "shutting_down"

    @staticmethod
    def _check_target(spec: ChildSpec, path: str | None = None) -> str | None:
        """Fail before any process starts if *spec*'s target cannot run in a child.

        Returns the module to preload for a target given as a dotted path.
        *path* is the child's path in the tree, which the errors name.
        """
        path = path or spec.name
        where = f"child {path!r}"
        if spec.command is not None:
            return None  # a program: exec'd in the child, where a failure is told back
        try:
            target = resolve(spec.target) if isinstance(spec.target, str) else spec.target
        except ErrorDuringImport as error:  # its type and fields kept; its message names whose
            error.child = path
            raise
        if not callable(target):
            raise InitializationFailedError(
                f"{where}: target {spec.target!r} is a {type(target).__name__}, not a callable"
            )
        try:
            pickle.dumps((spec.target, spec.args, spec.kwargs))
        except Exception as error:
            raise InitializationFailedError(
                f"{where}: its target and arguments must be picklable to reach the child "
                f"(define the target at module level): {error}"
            ) from error
        return target_module(spec.target)

    def _check_and_preload(self, spec: ChildSpec) -> None:
        if spec.command is not None and not getattr(self.backend, "runs_programs", False):
            # Its readiness is checked here (the program's group, its notify
            # socket): a cluster backend must do that on the program's node.
            raise InitializationFailedError(
                f"child {spec.name!r}: a command child needs the local backend "
                f"(not yet {type(self.backend).__name__})"
            )
        # A cluster's workers may have code this machine has not (a
        # runtime_env, an image): such a backend's children check their own.
        if getattr(self.backend, "resolves_targets_here", True):
            module = self._check_target(spec, self._prefix + spec.name)
            if module:
                self.backend.preload(module)

    def _check_all(self) -> None:
        for spec in self._specs:
            if isinstance(spec, ChildSpec):
                self._check_and_preload(spec)
            else:
                # Its preloads go where its children start (our backend, if it inherits it).
                spec._settings = self._settings_for(spec)
                spec._check_all()  # a nested supervisor: its targets are checked too

    async def _check_tree(self) -> None:
        """Fail on a bad target of the tree before any process starts.

        Importing targets runs their modules' code: not on the caller's loop,
        which an application embedding us needs for its own work. A nested
        supervisor was checked with its parent's tree (or by ``start_child``).
        """
        if self._nested:
            return
        # A daemon thread of its own, not anyio's worker: a signal that
        # stops the start does not wait for a slow import to end, and the
        # thread, left to finish it on its own, does not hold up the
        # process's exit either (anyio's asyncio workers are joined at exit).
        done = anyio.Event()
        failure: list[BaseException] = []
        token = anyio.lowlevel.current_token()

        def check() -> None:
            try:
                self._check_all()
            except BaseException as error:  # raised on the caller's loop below
                failure.append(error)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone (abandoned)
                    anyio.from_thread.run_sync(done.set, token=token)

        threading.Thread(target=check, name="gymnasiarch-target-check", daemon=True).start()
        await done.wait()
        if failure:
            raise failure[0]

    @property
    def _programs_here(self) -> bool:
        """Whether this supervisor checks its programs' readiness (and cwd) on this machine.

        False for a backend whose programs run on other nodes: each run
        checks them there (``ChildRun.program_ready``).
        """
        return not getattr(self.backend, "checks_program_ready", False)

    def _uses_backend(self) -> bool:
        """Whether a child of this tree starts through this supervisor's backend."""
        return any(
            isinstance(s, ChildSpec) or (s.options.inherits_backend and s._uses_backend())
            for s in self._specs
        )

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        if self._entered:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        if self._pending_refs and not self._nested:
            raise self._unresolved_reference()
        self._reset()
        # From here until the start is done, stop() is remembered and acted
        # on once the body's scope exists (see the end).
        self._phase = "starting"
        self._async_backend = _current_async_backend()
        self._tg: TaskGroup = anyio.create_task_group()
        await self._tg.__aenter__()
        # The body of ``async with`` runs in this scope: giving up or a signal
        # cancels it, and __aexit__ turns that into the supervisor's error.
        self._host_scope = anyio.CancelScope()
        self._host_scope.__enter__()
        try:
            uses_backend = self._uses_backend()
            if uses_backend and getattr(self.backend, "prepare_before_signals", False):
                # A backend that starts a cluster may replace the signal
                # handlers (Ray does): ours go in after it.
                await self._prepare_backend()
            if self.handle_signals and threading.current_thread() is threading.main_thread():
                await self._tg.start(self._monitor_signals)
                _shield_once_started(self._signal_monitor)
            else:
                self._signal_monitor_done.set()
            # Imported with the signals already ours: a Ctrl-C or SIGTERM
            # during a slow import stops the start (a stop() too, once the
            # import is done), instead of meeting the application's handler
            # or killing the process with a traceback.
            await self._check_tree()
            if uses_backend:
                await self._prepare_backend()
            if any(isinstance(s, ChildSpec) for s in self._specs):
                # The backend says where its children can reach the log server.
                await self._ensure_log_server()
            async with self._lock:
                await self._start_initial()
        except BaseException:  # stop what did start, then re-raise
            await self.__aexit__(*sys.exc_info())
            raise
        finally:
            if self._phase == "starting":  # not shut down (nor left) while starting
                self._phase = "running"
        if self._stopping.is_set():
            self._host_scope.cancel()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        with anyio.CancelScope(shield=True):
            await self._shutdown()
            if self._signal_monitor is not None:
                # The application's own handlers go back in before anything
                # else can fail: a late signal must find them, not a default.
                self._signal_monitor.cancel()
                await self._signal_monitor_done.wait()
        for child in self._children.values():
            try:
                child.retire()  # every child has stopped: what a backend kept of them goes
            except Exception:  # one backend's failure must not keep the others'
                logger.exception(
                    "child %r: its backend failed to free its last run", self._prefix + child.name
                )
        ours = bool(self._host_scope.__exit__(exc_type, exc, tb))
        if ours:
            exc = None  # the body was cancelled by us: we raise the reason below
        if self._log_server is not None and self._log_server not in (
            self._given_log_server,
            self._parent_log_server,
        ):
            with anyio.CancelScope(shield=True):
                await self._log_server.stop()  # every child is gone: no record is left
        if self._backend_prepared:
            self._backend_prepared = False
            with anyio.CancelScope(shield=True):
                await self.backend.aclose()
        self._tg.cancel_scope.cancel()
        if self._log_scope is not None:  # shielded from the line above (stopped by now, normally)
            self._log_scope.cancel()
        try:
            # The body's exception is ours to pass on, not the task group's:
            # handed to it, anyio would wrap it in an exception group.
            await self._tg.__aexit__(None, None, None)
        finally:
            self._publish("stopped", None)
            if not self._nested:
                self._close_hubs()  # the root's end: every subscription in the tree ends
            self._phase = "idle"
        # Our own cancellation of the body (giving up, a signal) becomes the
        # error; a cancellation from outside goes on as it is.
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        error = self._zombie_error or self._error
        if error is not None and not cancelled:
            raise error
        return ours  # stop() cancelled the body: that is no error to pass on

    async def wait(self) -> dict[str, Any]:
        """Wait until the tree is done; return ``{child name: return value}``.

        The tree is done when no child runs and none is due for a restart:
        transient and temporary children that ended, or a significant child
        that ended (which stops its siblings). A child stopped with
        :meth:`terminate_child` keeps it running (it may be started again
        with :meth:`restart_child`), as in OTP: then only :meth:`stop` ends
        it. Children that ended abnormally have no entry, nor have stopped
        ones, unless they returned normally when asked to stop.

        Raises:
            PrematureTaskDeathError: The supervisor gave up on a child.
            SignalInterruptError: A signal stopped the tree.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return dict(self._results)

    async def run(self) -> dict[str, Any]:
        """Start the tree, wait until it is done, stop it; see :meth:`wait`.

        After :meth:`stop`, returns the results of the children that had
        ended by then.
        """
        return await self._run()

    async def _run(self, on_started: Callable[[], None] | None = None) -> dict[str, Any]:
        async with self:
            if on_started is not None:
                on_started()
            await self._done.wait()
        return dict(self._results)

    def stop(self) -> None:
        """Begin an orderly shutdown, as a signal would, but without an error.

        The body of ``async with`` is cancelled, every child is stopped in
        reverse start order, and :meth:`wait` and :meth:`run` return what
        the children that ended had returned. Does nothing when the
        supervisor is not running.
        """
        if self._phase not in ("starting", "running"):
            return
        self._done.set()
        self._stopping.set()
        if self._phase == "running":  # else __aenter__ cancels the body once it is done
            self._host_scope.cancel()

    def events(self, *, replay: bool = False) -> MemoryObjectReceiveStream[Event]:
        """An async iterator of the lifecycle events of the whole tree below this supervisor.

        Events of nested supervisors' children come too, each with its
        :attr:`~gymnasiarch.Event.path`. A subscription lasts until this
        supervisor stops (for a nested one: until the root stops, across
        restarts of its group); subscribe before ``async with`` and nothing
        is missed. A subscription made while the supervisor is not running
        (before it starts, or after it stopped) lasts until the end of its
        next run. With *replay*, the stream starts with one event per child
        that says its current state (``ready`` for a running child,
        ``started`` for one starting, ``exited`` for one that is not running),
        so a subscriber that comes late still sees the whole tree; their
        paths are from the root, as those of live events.

        Each call gives an independent subscription; events are buffered, so
        a slow reader never slows the supervisor down.
        """
        first: list[Event] = []
        if replay:
            for info in self.walk():
                kind = {"running": "ready", "starting": "started"}.get(info.state, "exited")
                first.append(
                    Event(
                        kind,  # type: ignore[arg-type]
                        child=info.name,
                        path=self._prefix + info.path,  # from the root, as live events
                        pid=info.pid,
                        restarts=info.restarts,
                        value=info.ready_value,
                        detail=f"replayed: {info.state}",
                    )
                )
        return self._events.subscribe(first)

    def which_children(self) -> list[ChildInfo]:
        """The direct children in start order, nested supervisors as one row each."""
        now = time.monotonic()
        return [self._info(c, now) for c in self._children.values()]

    def _info(self, c: _Child, now: float) -> ChildInfo:
        spec = c.spec
        usage = c.run.usage() if c.run is not None else None  # read now, from /proc
        return ChildInfo(
            c.name,
            c.run.pid if c.run else None,
            c.state,
            c.restarts,
            c.last_exit,
            now - c.started_at if c.run else None,
            path=self._prefix + c.name,
            ready_value=c.ready_value,
            placement=spec.placement if isinstance(spec, ChildSpec) else None,
            crashes=self._crashes.get(c.name, 0),
            nested=isinstance(spec, Supervisor),
            # A run that does not say runs here (a local process, a subtree).
            on_this_machine=getattr(c.run, "on_this_machine", True),
            notify_status=c.notify_status,
            ports=dict(c.ports),
            memory=usage[0] if usage else None,
            cpu_seconds=usage[1] if usage else None,
        )

    def child_info(self, path: str) -> ChildInfo:
        """The row of one child of the tree, as :meth:`walk` gives it.

        Args:
            path: The child's name, or its path from this supervisor
                (``"agents/agent-1"``).

        Raises:
            KeyError: No child is at *path*.
        """
        owner, child = self._find(path)
        row = owner._info(child, time.monotonic())
        return replace(row, path=row.path[len(self._prefix) :])

    def walk(self) -> Iterator[ChildInfo]:
        """Every child of the tree, depth first in start order, nested ones with their paths.

        A nested supervisor's row comes before its children's rows; paths
        (``"agents/agent-1"``) are relative to this supervisor.
        """
        for row in self.which_children():
            info = replace(row, path=row.path[len(self._prefix) :])
            yield info
            spec = self._children[info.name].spec
            if isinstance(spec, Supervisor):
                for inner in spec.walk():
                    yield replace(inner, path=f"{info.path}/{inner.path}")

    @property
    def children(self) -> list[ChildSpec | Supervisor]:
        """The specs of the direct children, in start order (a copy)."""
        return list(self._specs)

    # -- events -----------------------------------------------------------------

    def _publish(self, kind: EventKind, child: _Child | None, **fields: Any) -> None:
        """Publish to this supervisor's subscribers and to every ancestor's."""
        if child is not None:
            fields.setdefault("restarts", child.restarts)
            event = Event(kind, child=child.name, path=self._prefix + child.name, **fields)
        else:
            event = Event(kind, path=self._prefix.rstrip("/") or None, **fields)
        self._events.deliver(event)
        for hub in self._upstream:
            hub.deliver(event)

    def _close_hubs(self) -> None:
        self._events.close()
        for spec in self._specs:
            if isinstance(spec, Supervisor):
                spec._close_hubs()

    # -- starting ---------------------------------------------------------------

    async def _prepare_backend(self) -> None:
        if not self._backend_prepared:
            await self.backend.prepare()
            self._backend_prepared = True

    async def _start_initial(self) -> None:
        children = list(self._children.values())
        if self.start_order == "sequential":
            for child in children:
                if self._stopping.is_set():
                    break
                await self._start_in_turn(child)
        else:
            try:
                async with anyio.create_task_group() as group:
                    for child in children:
                        group.start_soon(self._start_in_turn, child)
                        # Each start's first step (its launch) runs on the
                        # caller's loop: one per turn, so that the caller's
                        # own tasks get their turns in between (20 at once
                        # held its loop for ~5 ms).
                        await anyio.lowlevel.checkpoint()
            except BaseExceptionGroup as errors:
                raise _first_leaf(errors) from None
        if not children:
            self._done.set()

    async def _start_in_turn(self, child: _Child) -> None:
        """The tree's start of *child*, unless terminate_child() stopped it before its turn."""
        if not child.held:
            await self._start(child, initial=True)

    async def _launch(self, child: _Child, asked: bool = False) -> ChildRun:
        spec = child.spec
        if isinstance(spec, Supervisor):
            # Its own options, completed by ours (signals, runtime config,
            # seed, backend: see _settings_for); it writes to our log server.
            spec._settings = self._settings_for(spec)
            spec._parent_log_server = await self._ensure_log_server()
            return _NestedRun(spec)
        # A backend whose programs run on other nodes picks their ports there
        # (free on the node, not here): it gets the names and the ports they had.
        node_ports = bool(spec.ports) and getattr(self.backend, "picks_program_ports", False)
        if spec.ports and not node_ports:
            # Picked at the first start, then kept: whoever learned the port
            # (a sibling, the orchestrator) finds the restarted program there;
            # unless someone took it while the program was down: a new one
            # then, not a bind that fails at every restart.
            kept = child.ports
            # As its holder: a kept port another child was handed since
            # (after terminate_child, say) is not kept.
            child.ports = _ports.pick_ports({n: kept.get(n, 0) for n in spec.ports}, holder=child)
            _ports.warn_moved(logger, self._prefix + spec.name, kept, child.ports)
        ports = {} if node_ports else child.ports
        seed = None if self.seed is None else derive_seed(self.seed, spec.name)
        args, kwargs, command, env = self._substitute_ready_values(spec, asked)
        # Records are tagged with the child's path: agent-1 of two groups differ.
        ticket = (await self._ensure_log_server()).admit(self._prefix + spec.name)
        runtime_config = self.runtime_config.to_dict()
        # No level: the child follows the parent's per-logger levels, and their pushes.
        runtime_config[LOG_CONFIG_KEY] = ticket.client_config()
        launch = Launch(
            name=spec.name,
            target=spec.target,
            args=args,
            kwargs=kwargs,
            runtime_config=runtime_config,
            seed=seed,
            restarts=child.restarts,
            async_backend=spec.async_backend or self._async_backend,
            path=self._prefix + spec.name if self._prefix else None,
            command=None if command is None else _ports.fill_command(command, ports),
            # A program starts from the supervisor's environment as it is now,
            # not from the fork server's copy of how it was at its start.
            environ=None if spec.command is None else dict(os.environ),
            env=_ports.fill_env(self._program_env(child, env), ports),
            cwd=None if spec.cwd is None else os.fspath(spec.cwd),
            stop_signal=int(spec.stop_signal),
            watchdog=spec.watchdog,
            # A program is armed by its READY=1 (see _keep_notify).
            watchdog_from_ready=spec.ready_timeout is not None or spec.command is not None,
            limits=dict(spec.limits) if spec.limits else None,
            max_memory=None if spec.max_memory is None else int(spec.max_memory),
            shutdown=spec.shutdown,
            # For a backend whose runs check it where the program runs.
            ready=None
            if spec.command is None or spec.ready is None
            else _ports.fill_ready(spec.ready, ports),
            stdout_level=int(spec.stdout_level),
            stderr_level=int(spec.stderr_level),
            json_keys=json_key_paths(spec.json_keys) if spec.output == "json" else None,
            node_ports={n: child.ports.get(n, 0) for n in spec.ports} if node_ports else None,
        )
        # (A program that runs on another node has its cwd checked there, by its exec.)
        if launch.cwd is not None and self._programs_here and not _is_directory(launch.cwd):
            ticket.revoke()
            child.close_notify()
            raise InitializationFailedError(
                f"child {spec.name!r}: its cwd {launch.cwd!r} is not a directory"
            )
        previous = child.last_run
        return await self.backend.start(
            launch,
            ticket=ticket,
            capture_output=spec.output != "inherit",  # "capture" or "json"
            placement=spec.placement,
            previous=None if isinstance(previous, _NestedRun) else previous,
        )

    async def _launch_closing_notify(self, child: _Child, asked: bool = False) -> ChildRun:
        """:meth:`_launch`; a program's sd_notify socket goes if the launch fails."""
        try:
            return await self._launch(child, asked)
        except BaseException:
            child.close_notify()
            raise

    def _program_env(
        self, child: _Child, given: dict[str, str | None] | None
    ) -> dict[str, str | None] | None:
        """A program's *env*, with the NOTIFY_SOCKET of its run where it speaks sd_notify.

        The socket is made here, with the launch, so that the program finds
        it from its first instruction on (a program on another node gets
        one of its node, made by its run there). Where the program has no
        ``ready=Notify()``, a NOTIFY_SOCKET of our own (a supervisor run by
        systemd) is not passed on: the program would tell systemd about
        itself.
        """
        spec = child.spec
        assert isinstance(spec, ChildSpec)
        if spec.command is None:
            return None
        env: dict[str, str | None] = {"NOTIFY_SOCKET": None, **(given or {})}
        if isinstance(spec.ready, ready_kinds.Notify) and not self._programs_here:
            child.close_notify()
            child.notify_status = child.notify_ready_status = None
        elif isinstance(spec.ready, ready_kinds.Notify):
            child.close_notify()
            child.notify = ready_kinds.NotifySocket()
            child.notify_ready = anyio.Event()
            child.notify_status = None
            env["NOTIFY_SOCKET"] = child.notify.path
        return env

    def _source_of(self, spec: ChildSpec, ref: FromReady) -> _Child:
        """The child *ref* (of *spec*, a child of ours) names, in this scope or an enclosing one."""
        head = ref.source.strip("/").split("/")[0]
        scope: Supervisor | None = self
        while scope is not None and head not in scope._children:
            scope = scope._parent  # checked when built: an enclosing one has it
        if scope is None:
            raise InitializationFailedError(f"child {spec.name!r}: no source {ref.source!r}")
        return scope._find(ref.source)[1]

    @staticmethod
    def _require_source_running(spec: ChildSpec, ref: FromReady, source: _Child) -> None:
        """Refuse a start asked for while *source* is stopped: its last value is stale.

        (The port it bound is closed. A restart the supervisor decided on
        takes the last value all the same: failing it would give the whole
        tree up; the dependent fails, and is restarted, until its source is
        back.)
        """
        if source.state in ("terminated", "restarting", "stopping"):
            raise InitializationFailedError(
                f"child {spec.name!r} needs the ready value of {ref.source!r}, which is "
                f"not running now ({source.state}): start it first"
            )

    def _substitute_ready_values(
        self, spec: ChildSpec, asked: bool = False
    ) -> tuple[
        tuple[Any, ...], dict[str, Any], tuple[str, ...] | None, dict[str, str | None] | None
    ]:
        """*spec*'s args, kwargs, command and env, each FromReady replaced by its value.

        A program's are texts: a value there must be a string or a number.
        """

        def lookup(ref: FromReady) -> Any:
            source = self._source_of(spec, ref)
            if asked:
                self._require_source_running(spec, ref, source)
            if not source.was_ready:
                raise InitializationFailedError(
                    f"child {spec.name!r} needs the ready value of {ref.source!r}, "
                    "which has not called child_context().ready(value) yet"
                )
            value = source.ready_value
            if ref.key is not None:  # checked here, where the source and key are known
                try:
                    value[ref.key]
                except (KeyError, IndexError, TypeError):
                    raise InitializationFailedError(
                        f"child {spec.name!r}: FromReady({ref.source!r}, key={ref.key!r}): the "
                        f"ready value of {ref.source!r} has no key {ref.key!r}; "
                        f"{_what_it_has(value)}"
                    ) from None
            return value

        args, kwargs = tuple(spec.args), dict(spec.kwargs or {})
        if any(True for _ in (*references(args), *references(kwargs))):
            try:
                args, kwargs = substitute(args, lookup), substitute(kwargs, lookup)
            except (KeyError, IndexError, TypeError) as error:  # the value lacks FromReady's key
                raise InitializationFailedError(
                    f"child {spec.name!r}: a FromReady key does not fit its ready value: {error!r}"
                ) from error

        def text(where: str, part: str | FromReady | None) -> str | None:
            if not isinstance(part, FromReady):
                return part
            try:
                value = substitute(part, lookup)
            except (KeyError, IndexError, TypeError) as error:
                raise InitializationFailedError(
                    f"child {spec.name!r}: {where}: a FromReady key does not fit its ready "
                    f"value: {error!r}"
                ) from error
            if value is None:
                raise InitializationFailedError(
                    f"child {spec.name!r}: {where} is {part!r}, and {part.source!r} "
                    "announced no value (ready() without one): a program takes text or a number"
                )
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise InitializationFailedError(
                    f"child {spec.name!r}: {where} is {part!r}, whose value is "
                    f"{type(value).__name__} {value!r}: a program takes text or a number "
                    "(pick one with FromReady(..., key=...))"
                )
            if "\0" in str(value):  # no argv or environment can hold it
                raise InitializationFailedError(
                    f"child {spec.name!r}: {where} is {part!r}, whose value holds a NUL "
                    f"character: {str(value)[:200]!r}"
                )
            # Ports are filled into the program's texts after this: a {name}
            # in the value is text, not a placeholder (see _ports.fill).
            return _ports.escape(str(value)) if spec.ports else str(value)

        command = None
        if spec.command is not None:
            command = tuple(
                text(f"command[{i}]", part) or "" for i, part in enumerate(spec.command)
            )
        env = None
        if spec.env is not None:
            env = {name: text(f"env[{name!r}]", value) for name, value in spec.env.items()}
        return args, kwargs, command, env

    async def _ensure_log_server(self) -> LogServer:
        if self._log_server is None:
            self._log_server = self._given_log_server or self._parent_log_server
        if self._log_server is None:
            self._log_server = self.backend.log_server()
            await self._tg.start(self._serve_logs, self._log_server)
            _shield_once_started(self._log_scope)
        return self._log_server

    async def _serve_logs(
        self, server: LogServer, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # Shielded once started: a cancel scope around the supervisor
        # (anyio's move_on_after, a trio nursery cancelled) cancels our task
        # group at once, while __aexit__ still stops the children in order;
        # cut off, their last records (what their finally blocks log) would
        # be lost. __aexit__ stops the server once every child is gone.
        with anyio.CancelScope() as self._log_scope:
            await server.serve(task_status=task_status)

    async def _start(self, child: _Child, initial: bool, *, asked: bool = False) -> None:
        """Start *child*: at the tree's start (*initial*), at a restart, or one *asked* for.

        A start that cannot even launch raises at the tree's start and when
        it was asked for (restart_child: the child stays stopped, the caller
        hears why); a restart the supervisor decided on gives up instead.
        """
        child.pending_restart = None  # whatever restart was due for it, this is it
        held, child.held = child.held, False
        # Starting from the launch on: terminate_child() meanwhile calls it off
        # (it takes a child still "waiting" as one whose start has not begun).
        was, child.state = child.state, "starting"
        try:
            run = await self._launch_closing_notify(child, asked)
        except (OSError, InitializationFailedError) as error:
            # Out of descriptors or processes, a cwd gone, a FromReady source
            # without a value...
            if asked:  # it stays as it was, stopped
                child.state = was
                child.held = held or was == "terminated"
            self._launch_failed(child, error, raises=initial or asked)
            return
        child.run, child.last_run = run, run
        child.state, child.started_at = "starting", time.monotonic()
        child.was_ready, child.ready_value = False, None
        child.ended = None  # running again (restart_child after terminate_child)
        self._prepare_program_ready(child, run)
        self._publish("started", child, pid=run.pid)
        # Not ``_tg.start``: a stop that cancels us while it waits would have
        # anyio cancel the new task too, and a run nobody watches never ends
        # (its exit unheard, its shutdown waits for ever). The watcher shields
        # itself from its first line, so it cannot be cancelled once started.
        self._tg.start_soon(self._watch, child, run)
        if self._shutting_down:
            # The shutdown took its list of runs while this one was launched:
            # it is ours to stop, or it would outlive the tree.
            with anyio.CancelScope(shield=True):
                await self._stop_children([child], why="shutdown")
            return
        nested = isinstance(child.spec, Supervisor)
        timeout = None if nested else child.spec.ready_timeout  # type: ignore[union-attr]
        program = not nested and child.spec.command is not None  # type: ignore[union-attr]
        # A nested supervisor is ready once its own children have started; a
        # program once it was exec'd (its ready kind, if any, is awaited below).
        awaited = run.ready if (timeout is not None and not program) or nested else run.started
        called_off = child.start_called_off
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            # stop() ends a wait that may be long (a child on a cluster
            # waits for a node with room), and so does terminate_child().
            await first_of(awaited, run.exited, self._stopping, called_off)
        if (self._stopping.is_set() or called_off.is_set()) and not (
            awaited.is_set() or run.exited.is_set()
        ):
            return  # the shutdown, or terminate_child(), that follows stops it
        if run.exited.is_set() and not awaited.is_set():
            if initial:
                run.stop_requested = True
                raise _ended_before_ready(child.name, run.status or ExitStatus(None, None))
            return  # a restart that failed at once: its watcher judges the exit
        if not awaited.is_set():
            missed = await self._stop_unready(
                child,
                run,
                initial,
                f"child {self._prefix + child.name!r} did not call child_context().ready() "
                f"within its ready_timeout of {timeout} s",
            )
            if initial:
                raise missed
            return
        # Exec'd; now what a program is to show before it counts as ready.
        found = await self._await_program_ready(child, run, initial)
        if found is None:
            return
        _ports.warn_loopback(logger, self._prefix + child.name, run, found[0])
        # A program with ports: its ready value is where to reach it, by name.
        run.ready_value = run.published_ports(child.ports) if child.ports else found[0]
        if child.run is run and child.state == "starting":
            child.state = "running"
        child.was_ready, child.ready_value = True, run.ready_value
        self._publish("ready", child, pid=run.pid, value=run.ready_value)
        child.wake()  # wait_ready()

    def _launch_failed(self, child: _Child, error: Exception, *, raises: bool) -> None:
        """A start of *child* could not even launch: raise that, or give up on it."""
        if raises:
            if isinstance(error, InitializationFailedError):
                raise error
            raise InitializationFailedError(
                f"child {child.name!r} could not be started: {error}"
            ) from error
        # A restart that cannot even launch would fail the same way
        # again: give up now rather than spin.
        child.state = "exited"
        last = child.last_exit or ExitStatus(None, None)
        why = f"could not restart child {child.name!r}: {error}"
        self._give_up(child, last, why, cause=error)

    def _prepare_program_ready(self, child: _Child, run: ChildRun) -> None:
        """Before *run* is watched: what its program's ready kind listens to.

        ``Line``: a matcher that the output pump feeds. ``Notify``: a task
        that keeps the run's socket open while it runs, so that STATUS
        lines keep coming after READY=1; it closes the socket at the end.
        """
        spec = child.spec
        if not isinstance(spec, ChildSpec) or spec.command is None:
            return
        if run.checks_program_ready:
            # Its run reads the program's sd_notify socket on its node, and
            # hands each STATUS on (ChildRun.program_ready does the rest).
            def note(status: str | None) -> None:
                if run in (child.run, child.last_run):
                    child.notify_status = status

            run.on_notify_status = note

            def took(ports: dict[str, int]) -> None:  # picked on its node (Launch.node_ports)
                if run in (child.run, child.last_run):
                    # The node replaced a kept port that was taken there (as
                    # _launch does on this machine).
                    _ports.warn_moved(logger, self._prefix + child.name, child.ports, ports)
                    child.ports = dict(ports)

            run.on_ports = took
            return
        if isinstance(spec.ready, ready_kinds.Line):
            line = _ports.fill_ready(spec.ready, child.ports)  # its {ports} in
            assert isinstance(line, ready_kinds.Line)
            matcher = ready_kinds.LineMatcher(line)
            run.on_output_line = matcher.feed
            child.line_matcher = matcher
        notify, child.notify = child.notify, None
        if notify is not None:
            if run.pid is not None:
                notify.believe(run.pid)  # the program leads its own group
            self._tg.start_soon(self._keep_notify, child, run, notify, child.notify_ready)

    async def _keep_notify(
        self, child: _Child, run: ChildRun, notify: ready_kinds.NotifySocket, ready: anyio.Event
    ) -> None:
        """Read *run*'s sd_notify messages until it exits (READY=1 sets *ready*)."""

        def note(message: ready_kinds.NotifyMessage) -> None:
            if message.watchdog or message.ready:
                # Its watchdog's deadline, in the run (none: ignored), from
                # when it was sent: it may be read late, our loop busy.
                run.beat(message.received_at)
            if message.watchdog_trigger:
                run.trigger_watchdog()
            if run in (child.run, child.last_run):
                child.notify_status = notify.status
            if message.ready and not ready.is_set():
                child.notify_ready_status = notify.status
                ready.set()

        async def listen() -> None:
            async for message in notify:
                note(message)

        def take_pending() -> None:  # at its watchdog's deadline: what it sent in time
            for message in notify.pending():
                note(message)

        run.on_watchdog_expiry = take_pending
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(listen)
                await run.exited.wait()
                group.cancel_scope.cancel()
            # What it said just before its end (a last STATUS, STOPPING=1) is
            # queued still: read it without waiting for more.
            with anyio.move_on_after(0):
                while True:
                    note(await notify.receive())
        finally:
            notify.close()

    async def _await_program_ready(
        self, child: _Child, run: ChildRun, initial: bool
    ) -> tuple[Any] | None:
        """What the program's ready kind found, in a tuple; None if it is not ready.

        The value is the port listened on, the path, the matching text, or
        the last sd_notify STATUS (or None); for any other child, the run's
        ready value as it is.

        Raced against the program's exit and the tree's stop; bounded by its
        ``ready_timeout`` (:data:`PROGRAM_READY_TIMEOUT` where not given).
        A miss at the first start is an InitializationFailedError with the
        program's last output; at a restart, the run is killed and its
        watcher judges the exit.
        """
        spec = child.spec
        if not isinstance(spec, ChildSpec) or spec.ready is None:
            return (run.ready_value,)
        ready = _ports.fill_ready(spec.ready, child.ports)
        timeout = PROGRAM_READY_TIMEOUT if spec.ready_timeout is None else spec.ready_timeout
        found: list[Any] = []
        seen = anyio.Event()

        async def look() -> None:
            if run.checks_program_ready:
                # The program runs on another node: its run checks there.
                try:
                    found.append(await run.program_ready(ready))
                except ProcessLookupError:
                    await anyio.sleep_forever()  # it ended first: its exit says how
            elif isinstance(ready, ready_kinds.Port):
                assert run.pid is not None  # a local run: the program leads its group
                try:
                    found.append((await ready_kinds.wait_port(ready, run.pid)).port)
                except ProcessLookupError:
                    # It ended before it listened: its exit, which the run
                    # reports in a moment, says how (no readiness to report).
                    await anyio.sleep_forever()
            elif isinstance(ready, ready_kinds.Path):
                found.append(await ready_kinds.wait_path(ready))
            elif isinstance(ready, ready_kinds.Line):
                assert child.line_matcher is not None
                found.append((await child.line_matcher.wait()).group(0))
            else:
                await child.notify_ready.wait()
                found.append(child.notify_ready_status)
            seen.set()

        async with anyio.create_task_group() as group:
            group.start_soon(look)
            with anyio.move_on_after(timeout):
                await first_of(seen, run.exited, self._stopping, child.start_called_off)
            group.cancel_scope.cancel()
        if seen.is_set():
            return (found[0],)
        stopped = self._stopping.is_set() or child.start_called_off.is_set()
        if stopped and not run.exited.is_set():
            return None  # the shutdown, or terminate_child(), that follows stops it
        if run.exited.is_set():
            if not initial:
                return None  # its watcher judges the exit
            run.stop_requested = True
            raise _ended_before_ready(spec.name, run.status or ExitStatus(None, None))
        error = await self._stop_unready(
            child,
            run,
            initial,
            f"child {self._prefix + spec.name!r} was not ready ({ready!r}) "
            f"within its ready_timeout of {timeout} s",
        )
        if initial:
            raise error
        return None

    async def _stop_unready(
        self, child: _Child, run: ChildRun, initial: bool, why: str
    ) -> InitializationFailedError:
        """Stop a child that missed its ready_timeout, as any stop: its stop signal, grace, SIGKILL.

        Not a SIGKILL at once: a child stuck in its start still gets to run
        its ``finally`` blocks and send its last records. Its exit is then
        judged (at a restart) as one that says why it was stopped; the
        error returned (raised by a first start) has the child's last
        stderr lines.
        """
        logger.warning("%s: stopping it", why)
        error = InitializationFailedError(why)
        run.not_ready = error
        if initial:
            run.stop_requested = True  # the first start fails: no restart follows
        if child.shutdown == 0 or self._kill_immediately:
            run.kill()
        else:
            run.terminate()
        # Bounded even with shutdown=None, as a stop over max_memory is: a
        # child that never got ready may well ignore its stop, and the start
        # (or, at a restart, every other exit) waits for this one.
        grace = _UNREADY_GRACE if child.shutdown is None else child.shutdown
        with anyio.move_on_after(math.inf if grace is None else grace) as scope:
            self._grace_scopes.add(scope)  # a second Ctrl-C kills now
            try:
                await run.exited.wait()
            finally:
                self._grace_scopes.discard(scope)
        if not run.exited.is_set():
            run.kill()
            with anyio.move_on_after(self.kill_timeout):
                await run.exited.wait()
        if run.status is not None:
            error.output = run.status.output
        return error

    # -- watching and deciding --------------------------------------------------

    async def _watch(
        self,
        child: _Child,
        run: ChildRun,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        def stopping(why: str) -> None:  # the run stops its child itself (over max_memory)
            if child.run is run and child.state in ("starting", "running"):
                child.state = "stopping"
                self._publish("stopping", child, pid=run.pid, detail=why)

        run.on_stopping = stopping
        await run.watch(task_status=task_status)
        status = run.status
        if status is None:
            return  # abandoned: reported as a zombie by whoever gave up on it
        if run.not_ready is not None:  # we stopped it for missing its ready_timeout
            status = replace(status, not_ready=run.not_ready)
        if child.run is run:
            child.run, child.last_exit = None, status
            child.state = "exited"
        requested = run.stop_requested or self._shutting_down
        self._publish(
            "exited",
            child,
            pid=run.pid,
            exitcode=status.exitcode,
            signum=status.signum,
            detail=status.describe(),
            requested=requested,
        )
        if status.normal:
            # Recorded now, whatever follows: a child that finished its work
            # as the tree stopped (a significant sibling ended, a stop() came
            # before its exit was judged) still has a result.
            self._results[child.name] = status.result
        if requested:
            return
        self._pending_exits += 1
        try:
            async with self._lock:
                # Meanwhile the start that launched it may have failed and
                # been called off (start_child), the child taken out of the
                # tree: its exit is that call's error, nothing to judge.
                # Or it was stopped on purpose (terminate_child) just after
                # it ended on its own: it stays stopped.
                if run.stop_requested or child.held or self._children.get(child.name) is not child:
                    return
                await self._judge_exit(child, status, ran_for=time.monotonic() - child.started_at)
        finally:
            self._pending_exits -= 1
            self._check_done()

    async def _judge_exit(self, child: _Child, status: ExitStatus, ran_for: float) -> None:
        if self._shutting_down:
            return
        if child.run is not None:
            # Started again meanwhile: it ended on its own while a strategy
            # stopped its siblings one by one, and was taken into their
            # restart. Its end is still counted and told, not decided on twice.
            if not status.normal:
                self._note_crash(child, status)
            return
        if status.start_error is not None:
            # A program that cannot be exec'd now will not be at the next
            # try either: give up at once, as for a restart that cannot launch.
            child.retire(self._giving_up(str(status.start_error)))
            self._give_up(child, status, str(status.start_error), cause=status.start_error)
            return
        if status.result_error is not None:
            # The target did its work; only its answer could not travel.
            # Running it again would do the work again (train the model
            # again) and fail the same way: stop the tree and say why (not
            # retire()'s default: its restart type is not why it stays down).
            child.retire(self._giving_up(str(status.result_error)))
            status.result_error.restarts = child.restarts
            self._publish("gave_up", child, detail=str(status.result_error))
            self._fail(status.result_error)
            return
        normal = status.normal
        if not normal:
            self._note_crash(child, status)
        # Decide (pure, in _policy), then act. The delay is drawn now; the
        # count of restarts in a row is the child's only if it is restarted.
        in_row, delay = backoff_step(self.backoff, child.failures_in_row, ran_for, rng=random)
        members = [
            Member(
                c.name,
                c.restart,
                c.significant,
                # Waiting for its restart counts as running: a strategy's
                # group takes it in (rest_for_one: restarted after the one
                # it depends on), as when exits were judged one at a time.
                running=c.run is not None or c.pending_restart is not None,
                count_normal_exits=getattr(c.spec, "count_normal_exits", True),
            )
            for c in self._children.values()
        ]
        decision = decide(
            members,
            child.name,
            normal=normal,
            strategy=self.strategy,
            intensity=self._intensity,
            now=time.monotonic(),
            delay=delay,
        )
        if isinstance(decision, Restart):
            self._intensity = decision.intensity
            child.failures_in_row = in_row
            await self._restart(child, decision)
            return
        # Not restarted: what a backend kept of its run goes; a waiter hears why.
        child.retire(self._giving_up(decision.reason) if isinstance(decision, GiveUp) else None)
        if isinstance(decision, StopTree):
            await self._shutdown()
        elif isinstance(decision, GiveUp):
            self._give_up(child, status, decision.reason)

    def _note_crash(self, child: _Child, status: ExitStatus) -> None:
        """Count and tell an abnormal end of *child*."""
        self._results.pop(child.name, None)
        self._crashes[child.name] = self._crashes.get(child.name, 0) + 1
        # With the child's traceback (the error's cause), where it raised:
        # a crash that is restarted is told nowhere else.
        raised = status.error if not isinstance(status.error, ChildHungError) else None
        logger.warning("child %r %s", self._prefix + child.name, status.describe(), exc_info=raised)

    async def _restart(self, child: _Child, decision: Restart) -> None:
        why = f"{self.strategy}: {child.name!r} exited"
        await self._stop_children([self._children[n] for n in decision.stop], why=why)
        for name in decision.retire:
            self._children[name].retire()  # a temporary sibling, stopped for good
        if self._shutting_down or self._stopping.is_set():
            return  # a stop came while the siblings stopped: no restart to announce
        group = [self._children[n] for n in decision.start]
        # A member already waiting for its own restart (it ended just
        # before) is taken into this one, in the group's order, and keeps
        # its own delay: the group starts once the longest is over.
        due = time.monotonic() + decision.delay
        due = max([due, *(m.due_at for m in group if m.pending_restart is not None)])
        delay = due - time.monotonic()
        token = object()  # this restart's: a later one (or a stop) takes it away
        before = {member.name: member.state for member in group}
        for member in group:
            member.call_off_restart()  # replaced by this one: counted once
            member.restarts += 1
            member.state = "restarting"
            member.pending_restart, member.due_at = token, due
            self._publish(
                "restarting", member, detail=f"after {delay:.3f} s" if delay > 0 else "now"
            )
        if delay > 0:
            # Each child's backoff is its own: while this one waits, another
            # child's exit is judged (and restart_child, terminate_child
            # act) at once, not after this delay. Held, the lock made every
            # sibling wait out this child's backoff, one after the other.
            self._lock.release()
            try:
                with anyio.move_on_after(delay):
                    await self._stopping.wait()  # a stop ends the wait: nothing is due then
            finally:
                with anyio.CancelScope(shield=True):  # held again, or `async with` fails
                    await self._lock.acquire()
                if self._shutting_down or self._stopping.is_set():
                    # Stopped during the backoff (or cancelled): the restarts
                    # announced do not happen; they are not counted, and the
                    # rows say how each ended, as before.
                    for left in group:
                        if left.pending_restart is token and left.run is None:
                            left.call_off_restart()
                            left.state = before[left.name]
        for member in group:
            if self._shutting_down or self._stopping.is_set():
                return
            if member.pending_restart is not token or member.run is not None:
                continue  # started, stopped or restarted by another decision meanwhile
            await self._start(member, initial=False)

    def _give_up(
        self, child: _Child, status: ExitStatus, why: str, cause: BaseException | None = None
    ) -> None:
        error = PrematureTaskDeathError(
            f"supervisor {self.name!r} gave up: {why}; last: {status.describe()}",
            child=self._prefix + child.name,
            pid=status.pid,
            exitcode=status.exitcode,
            signum=status.signum,
            restarts=child.restarts,
            remote_traceback=status.traceback,
            output=status.output,
        )
        error.__cause__ = cause or status.error or status.over_limit or status.not_ready
        self._publish("gave_up", child, detail=self._giving_up(why))
        self._fail(error)
        child.end_for_good(self._giving_up(why))

    def _giving_up(self, why: str) -> str:
        """The words for this supervisor giving up, for *why* (an event's, a waiter's)."""
        return f"supervisor {self._prefix.rstrip('/') or self.name!r} gave up: {why}"

    def _fail(self, error: GymnasiarchError) -> None:
        if self._error is None:
            self._error = error
        self._host_scope.cancel()
        self._done.set()

    def _check_done(self) -> None:
        # A child stopped with terminate_child() may be started again: the
        # tree is not done with it (a nested group would otherwise end, and
        # its parent restart it, the stopped child with it).
        if self._pending_exits == 0 and all(
            c.run is None and not c.held for c in self._children.values()
        ):
            self._done.set()

    # -- signals ----------------------------------------------------------------

    async def _monitor_signals(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with (
                # Shielded once started, as the log server: a cancellation
                # from outside still stops the children in order, and a
                # second Ctrl-C during that stop is ours (kill now), not the
                # application's. __aexit__ ends it once the children are stopped.
                anyio.CancelScope() as self._signal_monitor,
                SignalCatcher(_not_ignored(_SHUTDOWN_SIGNALS)) as caught,
            ):
                task_status.started()
                async for signum in caught.received():
                    self._on_signal(signum)
        finally:  # the application's handlers are back
            self._signal_monitor_done.set()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if signum == signal.SIGINT:
            # A wrapper (``timeout --foreground``, a shell script) may pass on
            # the terminal's Ctrl-C that reached us too: one press, two
            # SIGINTs a few ms apart. Only a later one means "kill now". The
            # window runs from the press that counted, so pressing again and
            # again still escalates.
            if now - self._last_sigint < _SAME_PRESS:
                return
            self._last_sigint = now
        if self._shutting_down or self._error is not None:
            if signum == signal.SIGINT:
                logger.warning("second SIGINT: killing the remaining children now")
                self._kill_now()
            return
        logger.warning("received %s: shutting down", name)
        self._fail(
            SignalInterruptError(f"supervisor {self.name!r} stopped on {name}", signum=int(signum))
        )

    def _kill_now(self) -> None:
        """Skip the remaining grace periods: SIGKILL everything of this tree still running."""
        self._kill_immediately = True
        for scope in self._grace_scopes:
            scope.cancel()
        for child in self._children.values():
            if child.run is not None:
                child.run.stop_requested = True
                child.run.kill()  # a nested supervisor's kills its whole subtree

    # -- stopping ---------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._shutting_down:
            # One under way (a significant child ended, a signal came): the
            # caller waits for it, so that leaving means every child stopped.
            await self._shut_down.wait()
            return
        self._phase = "shutting_down"
        self._publish("shutting_down", None)
        for child in self._children.values():  # no run follows: wait_ready() hears it now
            child.end_for_good(f"supervisor {self._prefix.rstrip('/') or self.name!r} stopped")
        try:
            await self._stop_children(reversed(list(self._children.values())), why="shutdown")
        finally:
            self._shut_down.set()
        self._done.set()

    async def _stop_children(self, children: Iterable[_Child], *, why: str) -> None:
        """Stop *children*, given in the order in which they are to be stopped.

        A tree that starts its children in sequence stops them one at a
        time, each asked only once the one before it has exited, because a
        child started later may depend on an earlier one (an agent on its
        environment), as OTP does. A tree started in parallel declares no
        order: its children are stopped at once. Either way each child has
        its own grace before SIGKILL; a second Ctrl-C (:meth:`_kill_now`)
        kills everything that is left at once.
        """
        runs = [(c, c.run) for c in children if c.run is not None]
        zombies: dict[str, int] = {}
        if self.start_order == "sequential":
            for index, (child, run) in enumerate(runs):
                if self._kill_immediately:  # what is left goes at once
                    await self._stop_runs(runs[index:], why, zombies)
                    break
                await self._stop_runs([(child, run)], why, zombies)
        else:
            await self._stop_runs(runs, why, zombies)
        if zombies:
            error = DeadChildrenRisingAsZombiesError(
                f"supervisor {self.name!r}: children still alive after SIGKILL", zombies=zombies
            )
            self._zombie_error = self._zombie_error or error

    async def _stop_runs(
        self, runs: list[tuple[_Child, ChildRun]], why: str, zombies: dict[str, int]
    ) -> None:
        """Ask each of *runs* to stop, then wait for them all (grace, SIGKILL, zombie bound)."""
        under_way = [(c, r, self._stops[id(r)]) for c, r in runs if id(r) in self._stops]
        runs = [(child, run) for child, run in runs if id(run) not in self._stops]
        for child, run in runs:
            if run.exited.is_set():
                # Gone already (it ended on its own, a second Ctrl-C killed
                # it): nothing to stop, and its end was not asked for.
                continue
            run.stop_requested = True
            self._stops[id(run)] = anyio.Event()
            child.state = "stopping"
            self._publish("stopping", child, pid=run.pid, detail=why)
            if child.shutdown == 0 or self._kill_immediately:
                run.kill()
            else:
                run.terminate()
            if len(runs) > 1:
                await anyio.lowlevel.checkpoint()  # as for starts: the caller's loop gets turns
        # Shielded: a stop once begun is seen through (its grace, SIGKILL),
        # whoever asked for it gives up waiting (a cancelled terminate_child):
        # else the child would be left stopping, never killed.
        with anyio.CancelScope(shield=True):
            try:
                async with anyio.create_task_group() as group:
                    for child, run in runs:
                        group.start_soon(self._await_stop, child, run, zombies)
                    # Stops of the same runs another caller began (a strategy's,
                    # when the shutdown came): awaited, not begun twice.
                    for child, run, stopped in under_way:
                        group.start_soon(self._await_stop_of_another, child, run, stopped, zombies)
            finally:
                for _, run in runs:
                    if id(run) in self._stops:
                        self._stops.pop(id(run)).set()
        for child, _ in runs:
            child.state = "terminated"

    async def _await_stop_of_another(
        self, child: _Child, run: ChildRun, stopped: anyio.Event, zombies: dict[str, int]
    ) -> None:
        """Wait for the stop of *run* another caller began; see it through if that one did not."""
        await stopped.wait()
        # Seen through, its run is gone or abandoned as a zombie (no longer
        # the child's); if it was not (that stop failed), this one sees to it.
        if not run.exited.is_set() and child.run is run:
            await self._await_stop(child, run, zombies)

    async def _await_stop(self, child: _Child, run: ChildRun, zombies: dict[str, int]) -> None:
        grace = child.shutdown
        if not self._kill_immediately:
            with anyio.move_on_after(math.inf if grace is None else grace) as scope:
                self._grace_scopes.add(scope)
                try:
                    await self._wait_saying_why(child, run, grace)
                finally:
                    self._grace_scopes.discard(scope)
        if not run.exited.is_set():
            if self._kill_immediately:  # a second Ctrl-C: no timeout ran out
                logger.warning("child %r: killing it now (SIGKILL)", self._prefix + child.name)
            else:
                logger.warning(
                    "child %r did not stop in time: sending SIGKILL", self._prefix + child.name
                )
            run.kill()
            with anyio.move_on_after(self.kill_timeout):
                await run.exited.wait()
        if not run.exited.is_set():
            run.abandon()
            zombies[child.name] = run.pid or 0
        if child.run is run:
            child.run = None

    async def _wait_saying_why(self, child: _Child, run: ChildRun, grace: float | None) -> None:
        """Wait for *run* to exit; a wait of over a second says what it waits for."""
        with anyio.move_on_after(_PATIENCE):
            await run.exited.wait()
            return
        then = "SIGKILL follows" if grace is not None else "no SIGKILL follows (shutdown=None)"
        remaining = "" if grace is None else f" in {max(0.0, grace - _PATIENCE):.1f} s"
        logger.warning(
            "waiting for child %r%s to stop after SIGTERM; %s%s (Ctrl-C kills now)",
            self._prefix + child.name,
            "" if run.pid is None else f" (pid {run.pid})",  # a nested group has none
            then,
            remaining,
        )
        await run.exited.wait()

    # -- runtime API ------------------------------------------------------------

    def _get(self, name: str) -> _Child:
        try:
            return self._children[name]
        except KeyError:
            raise KeyError(f"supervisor {self.name!r} has no child named {name!r}") from None

    def _group_at(self, path: str, asked: str | None = None) -> Supervisor:
        """The nested supervisor at *path* (``agents``, ``world/agents``).

        *asked* is the path the caller gave, which the error names
        (``env/agent``, where ``env`` is no group).
        """
        group: Supervisor = self
        for name in path.strip("/").split("/"):
            spec = group._get(name).spec
            if not isinstance(spec, Supervisor):
                raise KeyError(f"{name!r} in {asked or path!r} is a child, not a nested supervisor")
            group = spec
        return group

    def _owner(self, path: str) -> tuple[Supervisor, str]:
        """The supervisor that owns the child at *path* (``group/child``), and its name."""
        *groups, name = path.strip("/").split("/")
        return (self._group_at("/".join(groups), path) if groups else self), name

    def _find(self, path: str) -> tuple[Supervisor, _Child]:
        owner, name = self._owner(path)
        return owner, owner._get(name)

    def _require_running(self) -> None:
        if self._phase == "shutting_down" or (
            self._phase in ("starting", "running") and self._stopping.is_set()
        ):
            raise RuntimeError(f"supervisor {self.name!r} is shutting down")
        if self._phase not in ("starting", "running"):
            raise RuntimeError(f"supervisor {self.name!r} is not running")

    async def start_child(self, spec: ChildSpec | Supervisor, *, under: str | None = None) -> None:
        """Add a child to the running tree and start it (after the others).

        Args:
            spec: The child to add.
            under: The path of the nested supervisor to add it to
                (``"agents"``); by default this supervisor.

        Raises:
            ValueError: The name is taken.
            FieldTypeError: *spec* is neither a ChildSpec nor a Supervisor.
            KeyError: *under* names no nested supervisor.
            RuntimeError: The supervisor (or the one *under* names) is not running.
            InitializationFailedError: The child could not be started.
        """
        if not isinstance(spec, ChildSpec | Supervisor):  # not an AttributeError further on
            raise FieldTypeError("spec", f"expected a ChildSpec or a Supervisor, got {spec!r}")
        if under is not None:
            await self._group_at(under).start_child(spec)
            return
        self._require_running()
        if isinstance(spec, Supervisor):
            # Checked here, as a root checks its tree: it will not check itself.
            spec._settings = self._settings_for(spec)
            await anyio.to_thread.run_sync(spec._check_all)
        elif spec.command is not None:
            # A program's check imports nothing: no worker thread's round
            # trip for it (~0.3 ms, measured: much of a program's start).
            self._check_and_preload(spec)
        else:
            await anyio.to_thread.run_sync(self._check_and_preload, spec)
        if isinstance(spec, ChildSpec):
            for ref in ready_references(spec):
                scope: Supervisor | None = self
                while scope is not None and not scope._check_reference(
                    spec, ref, list(scope._specs)
                ):
                    scope = scope._parent
                if scope is None:
                    raise ValueError(
                        f"child {spec.name!r}: FromReady({ref.source!r}): no such child "
                        "in the tree to take a ready value from"
                    )
        self._require_running()  # a stop may have come while the target was checked
        self._add_spec(spec)
        child = self._children[spec.name] = _Child(spec)
        async with self._lock:
            try:
                self._require_running()  # ... or while we waited for the lock
                if isinstance(spec, ChildSpec):
                    await self._prepare_backend()  # the tree may have had only subtrees
                await self._start(child, initial=True)
            except BaseException:  # leave no half-started child behind, then re-raise
                with anyio.CancelScope(shield=True):  # also when the caller was cancelled
                    await self._stop_children([child], why="failed to start")
                child.retire()
                del self._children[spec.name]
                self._specs.remove(spec)
                raise

    async def terminate_child(self, name: str) -> None:
        """Stop a child on purpose; it stays stopped until :meth:`restart_child`.

        The tree runs on meanwhile, also when no other child runs: the
        child is kept, to be started again, until :meth:`stop`.

        *name* is a child's name or its path in the tree (``"agents/agent-1"``).
        A stop asked for never counts as a crash.
        """
        owner, child = self._find(name)
        owner._require_running()
        if child.state == "waiting" and child.run is None:
            # Not started yet (behind a sibling that is still starting): it
            # will not be, and nothing waits for the start to be done.
            child.held, child.state = True, "terminated"
            child.retire("it was stopped with terminate_child()")
            return
        # A start under way (waiting for its readiness, with the lock) is
        # called off at once, and so is one that begins before we have the
        # lock (a strategy's restart): that wait may be long, and a child
        # stopped on purpose has nothing to be ready for.
        child.start_called_off.set()
        try:
            async with owner._lock:
                owner._require_running()  # a stop may have come while we waited
                if child.call_off_restart():  # one due after a backoff
                    child.state = "terminated"
                await owner._stop_children([child], why="terminate_child")
                child.retire("it was stopped with terminate_child()")
                child.held = True
        finally:
            child.start_called_off = anyio.Event()  # the next start is not called off
        owner._check_done()

    async def restart_child(self, name: str) -> None:
        """Stop a child (if it runs) and start it again; not counted as a crash.

        *name* is a child's name or its path in the tree (``"agents/agent-1"``).
        """
        owner, child = self._find(name)
        owner._require_running()
        async with owner._lock:
            owner._require_running()  # a stop may have come while we waited
            if isinstance(child.spec, ChildSpec):  # before anything is stopped or called off
                for ref in ready_references(child.spec):
                    owner._require_source_running(
                        child.spec, ref, owner._source_of(child.spec, ref)
                    )
            if child.pending_restart is not None:
                await owner._restart_due_now(child.pending_restart)
                return
            await owner._stop_children([child], why="restart_child")
            if owner._stopping.is_set():  # ... or while it stopped: not started again
                owner._require_running()
            child.call_off_restart()  # one due after a backoff: this is it, counted once
            child.restarts += 1
            owner._publish("restarting", child, detail="asked")
            await owner._start(child, initial=False, asked=True)

    async def _restart_due_now(self, token: object) -> None:
        """The restart *token* stands for, due after a backoff, now (holding the lock).

        All of its group (a strategy's siblings) start, in start order, as
        they would have after the delay: restarting one of them alone would
        start it ahead of the earlier ones it may depend on.
        """
        group = [c for c in self._children.values() if c.pending_restart is token]
        for member in group:
            member.call_off_restart()
            member.restarts += 1  # counted once: the one announced, now
            self._publish("restarting", member, detail="asked")
        for member in group:
            self._require_running()  # a stop meanwhile: the rest are not started
            await self._start(member, initial=False, asked=True)

    async def wait_ready(self, path: str) -> Any:
        """Wait until the child at *path* is ready; its ready value.

        Returns at once when the child is ready now. A child between a crash
        and its restart (or a child of a nested supervisor that its parent
        restarts) is waited for: the value is that of the restarted run,
        once it is ready. Nothing is polled: the waiter wakes when the child
        publishes its ``ready`` event, or ends for good. The value is what
        the child passed to ``child_context().ready(value)``, what a
        program's ready kind found, or, for a program with ``ports``, its
        ports (``{"api": 40123}``; on the Ray backend with the address of
        its node: ``{"host": "10.0.0.5", "api": 40123}``).

        Args:
            path: The child's name, or its path from this supervisor
                (``"agents/agent-1"``), as for :meth:`child_info`: slashes
                at either end are ignored, and ``"agents/"`` is the nested
                supervisor ``agents`` itself, ready (value ``None``) once
                its children have started, as a later sibling sees it.

        Raises:
            KeyError: No child is at *path* (a :class:`LookupError`).
            ChildEndedError: The child ended for good before it was ready,
                or while the caller waited: its supervisor gave up or
                stopped, it is not restarted after its end (a temporary
                child), or it was stopped with :meth:`terminate_child`.
        """
        while True:
            # Looked up anew each time: a restarted nested group has new records.
            owner, child = self._find(path)
            if child.ended is None and child.was_ready and child.state == "running":
                return child.ready_value
            await first_of(*owner._until_ready_or_gone(path.strip("/"), child))

    @property
    def _ending(self) -> bool:
        """This run of the supervisor is over or ending: none of its children runs again."""
        return self._phase in ("idle", "shutting_down") or self._done.is_set()

    def _until_ready_or_gone(self, path: str, child: _Child) -> list[anyio.Event]:
        """The events after which our *child* (at *path*) may be ready; raise if it never is.

        A child that ended for good comes back only when a supervisor it is
        in is restarted by its parent: looked for up the tree.
        """
        if child.ended is None:
            # Its next run may come with new records (our own start, a restart
            # of our group): those would not set the old record's event.
            return [child.changed, self._renewed]
        group: Supervisor = self
        while group._ending and group._parent is not None:
            record = group._parent._children.get(group.name)
            if record is None:
                break
            if record.ended is None:  # due for a restart: new records come with it
                return [record.changed, group._renewed]
            group = group._parent
        last = child.last_exit
        error = ChildEndedError(
            f"child {path!r} will not be ready: {child.ended}",
            child=path,
            exitcode=None if last is None else last.exitcode,
            signum=None if last is None else last.signum,
            restarts=child.restarts,
        )
        # The supervisor's error where it gave up, else what the child raised, if it did.
        error.__cause__ = group._error or self._error or (None if last is None else last.error)
        raise error


def _shield_once_started(scope: anyio.CancelScope | None) -> None:
    """Shield a helper task's scope from the caller's cancellation, now that it has started.

    Not before: a start that is cancelled (a signal, a cancel scope around
    the supervisor) cancels the task it was starting and waits for it to
    end; shielded from the beginning, it would never end, and the start
    would hang.
    """
    if scope is not None:
        scope.shield = True


def _is_directory(path: str) -> bool:
    # One stat, at a program's launch: a missing cwd is a clear start failure here
    # rather than an exec failure in the child.
    return os.path.isdir(path)


def _what_it_has(value: Any) -> str:
    """What a ready value offers a FromReady key that did not fit it."""
    if isinstance(value, Mapping):
        keys = ", ".join(repr(key) for key in value)
        return f"its keys are {keys}" if keys else "it is an empty mapping"
    if isinstance(value, list | tuple):
        return f"it is a {type(value).__name__} of {len(value)} item(s)"
    shown = repr(value)
    return f"it is {shown[:80] + '...' if len(shown) > 80 else shown}"


def _ended_before_ready(name: str, status: ExitStatus) -> InitializationFailedError:
    """The error for a child whose first run ended before it was ready, with its last words."""
    if status.start_error is not None:  # a program that could not be exec'd
        status.start_error.output = status.output
        return status.start_error
    failure = InitializationFailedError(
        f"child {name!r} ended before it was ready: {status.describe()}"
        + (f"\n{name} said last:\n{status.output}" if status.output else "")
    )
    failure.output = status.output
    failure.__cause__ = status.error
    return failure


#: Seconds a program with a ready kind has to show it, where its ready_timeout is not given.
PROGRAM_READY_TIMEOUT = 30.0
_PATIENCE = 1.0  # seconds of a silent wait for a child to stop, before saying so
_SAME_PRESS = 0.5  # seconds within which a second SIGINT is the same Ctrl-C
_NESTED_MARGIN = 1.0  # seconds a nested supervisor is granted beyond its children's graces


def _current_async_backend() -> str:
    """The anyio backend running the current task: ``"trio"`` or ``"asyncio"``."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass  # imported, but not what runs us
        else:
            return "trio"
    return "asyncio"


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in a (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
