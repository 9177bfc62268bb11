"""Where a supervisor's children run: the seam between the supervisor and the process layer.

The supervisor decides (start, restart, stop, give up); a backend carries
it out. It knows only the two faces below. :class:`LocalBackend`, the
default, runs each child as a process of this machine through the fork
server (or spawn); a backend for a cluster would run the same
:class:`~gymnasiarch._child.Launch` somewhere else, and report back through
the same face (ARCHITECTURE.md, "Beyond one machine").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from gymnasiarch import _subreaper
from gymnasiarch._child import Launch
from gymnasiarch._forkserver import SERVER
from gymnasiarch._launcher import StartMethod
from gymnasiarch._process import PRELOAD, ChildProcess, ExitStatus, reap_our_strays
from gymnasiarch.logserver import LogServer, LogTicket


class ChildRun(Protocol):
    """One run of one child, as the supervisor sees it."""

    name: str
    started: anyio.Event
    ready: anyio.Event
    ready_value: Any
    exited: anyio.Event
    status: ExitStatus | None
    stop_requested: bool

    @property
    def pid(self) -> int | None:
        """The process id, where the child has one this machine can see."""

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the run to its end; set :attr:`exited` (and :attr:`status`) then."""

    def terminate(self) -> None:
        """Ask the child to stop."""

    def kill(self) -> None:
        """Stop the child now."""

    def abandon(self) -> None:
        """Stop following a child that would not go away."""

    def retire(self) -> None:
        """After the run: the supervisor will not start its child again from it.

        A backend that keeps something of a run for the child's next one
        (:meth:`Backend.start`'s *previous*) frees it now.
        """


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


class LocalBackend:
    """Children as processes of this machine, started through the fork server or spawn.

    Args:
        start_method: ``"forkserver"`` (fast; modules are loaded once in
            the server) or ``"spawn"`` (a fresh interpreter per child).
    """

    prepare_before_signals = False
    resolves_targets_here = True

    def __init__(self, start_method: StartMethod = "forkserver") -> None:
        self.start_method: StartMethod = start_method
        self._preload: list[str] = []

    def preload(self, module: str) -> None:
        """Load *module* in the fork server, if it is not running yet."""
        if module not in self._preload:
            self._preload.append(module)

    async def prepare(self) -> None:
        """Start the fork server (once per process) with our modules and the targets'.

        Until :meth:`aclose`, this process is a child subreaper (Linux): a
        child's subprocess that escapes its group (a ``setsid`` daemon) is
        reparented to us, and stopped and reaped with its child; so are the
        children of a fork server that died (see :mod:`gymnasiarch._subreaper`).
        """
        _subreaper.acquire()
        try:
            reap_our_strays()
            if self.start_method != "forkserver":
                return
            preload = PRELOAD + self._preload
            if SERVER.running() and SERVER.death() is None:
                SERVER.ensure_running(preload)  # alive: this only checks the resource tracker
            else:
                # Starting the fork server (or its successor, after it was
                # killed) imports our modules: do it off the loop.
                await anyio.to_thread.run_sync(SERVER.ensure_running, preload)
        except BaseException:
            _subreaper.release()
            raise

    def log_server(self) -> LogServer:
        """A server on a private Unix socket: our children are on this machine."""
        return LogServer.unix()

    async def start(
        self,
        launch: Launch,
        *,
        ticket: LogTicket | None,
        capture_output: bool,
        placement: Mapping[str, Any] | None = None,
        previous: ChildRun | None = None,
    ) -> ChildRun:
        """Start one child process (see :meth:`ChildProcess.start`).

        *placement* and *previous* are unused: every run is a new process
        of this machine.
        """
        if self.start_method == "forkserver" and SERVER.death() is not None:
            # The fork server was killed (its children live on): its
            # successor imports our modules, which must not block the loop.
            await anyio.to_thread.run_sync(SERVER.ensure_running, PRELOAD + self._preload)
        return await ChildProcess.start(
            launch,
            self.start_method,
            self._preload,
            ticket=ticket,
            capture_output=capture_output,
        )

    async def aclose(self) -> None:
        """Give back the subreaper flag (the fork server serves this process until it exits).

        A subclass that overrides it calls it too.
        """
        reap_our_strays()
        _subreaper.release()
