"""A backend for tests: scripted runs, no process (httpcore's ``MockBackend`` is the model).

The supervisor cannot tell a :class:`FakeBackend` from a real one: it gets a
:class:`FakeRun` per start and follows its events. What each run does is
written down beforehand, one :class:`Script` per run of a child::

    backend = FakeBackend({"worker": [Script.crash(), Script()]})
    # worker's first run crashes at once; its second runs until stopped

so the supervisor's decisions (restart whom, in which order, when to give
up) can be tested in milliseconds, without a fork, a signal or a timing
race. :attr:`FakeBackend.log` records what the supervisor asked for, in
order. What only real processes can show (signals, output, orphans) stays
with the end-to-end tests.

It implements the seam (:mod:`gymnasiarch._backends.base`) and imports nothing of
the process layer.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus

from gymnasiarch._backends.base import ChildRun, ExitStatus, Launch, RemoteTraceback
from gymnasiarch.logserver import LogServer, LogTicket

__all__ = ["FakeBackend", "FakeRun", "Script"]


@dataclass(frozen=True)
class Script:
    """What one run of a child does.

    Attributes:
        ready: Whether it says it is ready as soon as its target runs
            (``ready_value`` is what it says); a run that never does meets
            its ``ready_timeout``.
        ready_value: What it passes to ``ready()``.
        ends: How it ends on its own, right after it started (and said it is
            ready); None: it runs until it is stopped or :meth:`FakeRun.end`
            ends it.
        stubborn: It ignores :meth:`FakeRun.terminate`: only a kill ends it.
    """

    ready: bool = True
    ready_value: Any = None
    ends: ExitStatus | None = None
    stubborn: bool = False

    @classmethod
    def crash(cls, exitcode: int = 1) -> Script:
        """A run that ends at once with *exitcode* (an abnormal end, for a non-zero code)."""
        return cls(ends=ExitStatus(exitcode, None))

    @classmethod
    def raises(cls, error: BaseException) -> Script:
        """A run whose target raises *error* at once (with a traceback text as its cause)."""
        text = f"Traceback (scripted):\n{type(error).__name__}: {error}"
        error.__cause__ = RemoteTraceback(text)
        return cls(ends=ExitStatus(1, None, error=error, traceback=text))

    @classmethod
    def returns(cls, result: Any = None) -> Script:
        """A run whose target returns *result* at once (a normal end)."""
        return cls(ends=ExitStatus(0, None, result=result))


class FakeRun(ChildRun):
    """One scripted run of a child; :meth:`end` ends it from the test.

    Attributes:
        script: What it does.
        launch: What the supervisor asked to start.
        number: Which run of its child this is (0 for the first).
    """

    def __init__(
        self,
        backend: FakeBackend,
        launch: Launch,
        script: Script,
        number: int,
        ticket: LogTicket | None,
    ) -> None:
        super().__init__(launch.name)
        self.script = script
        self.launch = launch
        self.number = number
        self._backend = backend
        self._ticket = ticket
        self._ending: ExitStatus | None = None
        self._end = anyio.Event()

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Play the script: started, ready, then the scripted end or the one asked for."""
        task_status.started()
        try:
            if not self._end.is_set():
                self.started.set()
                if self.script.ready:
                    self.ready_value = self.script.ready_value
                    self.ready.set()
                if self.script.ends is not None:
                    self.end(self.script.ends)
            await self._end.wait()
            self.status = self._ending
        finally:
            if self._ticket is not None:
                self._ticket.revoke()
            self._backend.log.append(("exited", self.name))
            self.exited.set()

    def end(self, status: ExitStatus) -> None:
        """End the run with *status*, now (a crash or a return from outside the script)."""
        if self._ending is None:
            self._ending = status
            self._end.set()

    def terminate(self) -> None:
        """Note the request; end by SIGTERM unless the script is stubborn."""
        self._backend.log.append(("terminate", self.name))
        if not self.script.stubborn:
            self.end(ExitStatus(None, signal.SIGTERM))

    def kill(self) -> None:
        """Note the request; end by SIGKILL."""
        self._backend.log.append(("kill", self.name))
        self.end(ExitStatus(None, signal.SIGKILL))

    def abandon(self) -> None:
        """Note the request; the run is left without a status (a zombie)."""
        self._backend.log.append(("abandon", self.name))
        self._end.set()

    def retire(self) -> None:
        """Note that no run of this child follows from this one."""
        self._backend.log.append(("retire", self.name))


class FakeBackend:
    """A backend whose runs follow scripts (see the module doc).

    Args:
        scripts: For each child's name, the scripts of its runs in order;
            the last one is played again for every later run. A child not
            named runs :class:`Script()` (ready at once, until stopped).

    Attributes:
        log: What happened, in order: ``("start" | "terminate" | "kill" |
            "abandon" | "retire" | "exited", name)``, and ``("prepare", "")``
            / ``("aclose", "")``.
        runs: Each child's runs, in the order they were started.
    """

    prepare_before_signals = False
    resolves_targets_here = False  # a fake target need not be importable

    def __init__(self, scripts: Mapping[str, Sequence[Script]] | None = None) -> None:
        self.scripts = {name: list(runs) for name, runs in (scripts or {}).items()}
        for name, runs in self.scripts.items():
            if not runs:
                raise ValueError(f"scripts[{name!r}]: expected at least one Script, got none")
        self.log: list[tuple[str, str]] = []
        self.runs: dict[str, list[FakeRun]] = {}
        self._started: dict[tuple[str, int], anyio.Event] = {}

    def preload(self, module: str) -> None:
        """Nothing to load: no process is started."""

    async def prepare(self) -> None:
        """Note the call."""
        self.log.append(("prepare", ""))

    def log_server(self) -> LogServer:
        """A real log server (a private Unix socket): the supervisor's log path is real."""
        return LogServer.unix()

    async def start(
        self,
        launch: Launch,
        *,
        ticket: LogTicket | None,
        capture_output: bool,
        placement: Mapping[str, Any] | None = None,
        previous: ChildRun | None = None,
    ) -> FakeRun:
        """Start the child's next scripted run."""
        runs = self.runs.setdefault(launch.name, [])
        scripts = self.scripts.get(launch.name) or [Script()]
        script = scripts[min(len(runs), len(scripts) - 1)]
        run = FakeRun(self, launch, script, len(runs), ticket)
        runs.append(run)
        self.log.append(("start", launch.name))
        self._started_event(launch.name, len(runs)).set()
        return run

    async def aclose(self) -> None:
        """Note the call."""
        self.log.append(("aclose", ""))

    async def wait_started(self, name: str, runs: int = 1) -> FakeRun:
        """Wait until child *name* has been started *runs* times; its latest run."""
        await self._started_event(name, runs).wait()
        return self.runs[name][runs - 1]

    def _started_event(self, name: str, runs: int) -> anyio.Event:
        return self._started.setdefault((name, runs), anyio.Event())

    def calls(self, *kinds: str) -> list[tuple[str, str]]:
        """The log's entries of the given kinds (all of them by default), in order."""
        return [entry for entry in self.log if not kinds or entry[0] in kinds]
