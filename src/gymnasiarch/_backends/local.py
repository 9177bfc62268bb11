"""The local backend: children as processes of this machine.

It implements the seam (:mod:`gymnasiarch._backends.base`) over the process layer:
each run is a :class:`~gymnasiarch._process.run.ChildProcess`, started through
this process's fork server (or spawn), and while a tree runs this process is
a child subreaper, so that a child's escaped daemons stay ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from gymnasiarch._backends.base import ChildRun, Launch, StartMethod
from gymnasiarch._process import subreaper
from gymnasiarch._process.forkserver import SERVER
from gymnasiarch._process.run import PRELOAD, ChildProcess, reap_our_strays
from gymnasiarch.logserver import LogServer, LogTicket


class LocalBackend:
    """Children as processes of this machine, started through the fork server or spawn.

    Args:
        start_method: ``"forkserver"`` (fast; modules are loaded once in
            the server) or ``"spawn"`` (a fresh interpreter per child).
    """

    prepare_before_signals = False
    resolves_targets_here = True
    #: Runs command children (programs): their readiness is checked on this machine.
    runs_programs = True

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
        children of a fork server that died (see :mod:`gymnasiarch._process.subreaper`).
        """
        subreaper.acquire()
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
            subreaper.release()
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
        subreaper.release()
