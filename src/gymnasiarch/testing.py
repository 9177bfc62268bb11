"""A pytest plugin for testing your own supervision trees, and fault-injection helpers.

Installed with gymnasiarch and registered through the ``pytest11`` entry
point, so its fixtures are there in every test session:

``gymnasiarch_supervise``
    A factory of supervisors for the test: ``async with
    gymnasiarch_supervise([...], **options) as sup:`` runs one. When the
    test ends, the fixture fails it if any process started during the test
    (a child, a grandchild, a zombie) is still around.
``gymnasiarch_no_leftovers``
    Just the check: fail the test if a process it started outlives it.

The fault-injection helpers work on a running supervisor's children, so you
can test your own restart policies::

    async with gymnasiarch_supervise([ChildSpec("env", "sim:env")]) as sup:
        await kill_child(sup, "env")                  # SIGKILL, as the OOM killer would
        await wait_for(sup, "ready", child="env")     # restarted and ready again
        freeze_child(sup, "env")                      # SIGSTOP: alive but silent
        thaw_child(sup, "env")

    stubborn(ChildSpec("env", "sim:env"))             # the child ignores SIGTERM

This module imports pytest; import it only in tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from gymnasiarch import ChildSpec, Event, Supervisor
from gymnasiarch.dynaloader import resolve

__all__ = [
    "freeze_child",
    "gymnasiarch_no_leftovers",
    "gymnasiarch_supervise",
    "kill_child",
    "stubborn",
    "thaw_child",
    "wait_for",
]

# multiprocessing's helpers and our fork server (with its spare child, see
# gymnasiarch._forkserver) live as long as the test process: not leftovers.
_LONG_LIVED = (
    "multiprocessing.resource_tracker",
    "multiprocessing.forkserver",
    "gymnasiarch._forkserver import main",  # the server, until it has its title
)
_LONG_LIVED_TITLES = ("gymnasiarch-forkserver", "gymnasiarch-forkserver spare")


def _descendants(pid: int) -> dict[int, str]:
    """Map pid -> command line for every descendant of *pid* (Linux /proc)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited while we looked
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
        commands[int(entry.name)] = command.strip() or stat.split(" ", 2)[1]
    found: dict[int, str] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier and p not in found}
        found.update({p: commands[p] for p in frontier})
    return found


@contextlib.contextmanager
def _no_leftovers() -> Iterator[None]:
    before = set(_descendants(os.getpid()))
    yield
    left = {
        pid: command
        for pid, command in _descendants(os.getpid()).items()
        if pid not in before
        and command not in _LONG_LIVED_TITLES
        and not any(helper in command for helper in _LONG_LIVED)
    }
    if left:
        pytest.fail(f"processes outlived the test: {left}", pytrace=False)


@pytest.fixture
def gymnasiarch_no_leftovers() -> Iterator[None]:
    """Fail the test if a process started during it is still around at its end."""
    with _no_leftovers():
        yield


@pytest.fixture
def gymnasiarch_supervise(
    gymnasiarch_no_leftovers: None,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Supervisor]]:
    """Make supervisors for the test, each an async context manager.

    Use it as ``async with gymnasiarch_supervise(children, **options) as
    sup:``. The options are :class:`~gymnasiarch.Supervisor`'s. Signal handling is
    off unless asked for (the test runner owns SIGINT). When the test ends,
    it fails if any process the test started outlived it.
    """

    @contextlib.asynccontextmanager
    async def supervise(
        children: Sequence[ChildSpec | Supervisor], **options: Any
    ) -> AsyncIterator[Supervisor]:
        options.setdefault("handle_signals", False)
        async with Supervisor(children, **options) as sup:
            yield sup

    return supervise


# -- fault injection ---------------------------------------------------------------


def _pid(sup: Supervisor, name: str) -> int:
    for child in sup.which_children():
        if child.name == name:
            if child.pid is None:
                raise LookupError(f"child {name!r} is not running ({child.state})")
            run = sup._children[name].run
            if not getattr(run, "on_this_machine", True):
                # Its pid is one on another node: here it names somebody else.
                raise LookupError(f"child {name!r} runs on another machine")
            return child.pid
    raise LookupError(f"supervisor {sup.name!r} has no child named {name!r}")


async def kill_child(sup: Supervisor, name: str, signum: int = signal.SIGKILL) -> None:
    """Send *signum* (SIGKILL by default) to one child, as a crash from outside would."""
    os.kill(_pid(sup, name), signum)


def freeze_child(sup: Supervisor, name: str) -> None:
    """Stop a child with SIGSTOP: alive, but it does nothing (a hung process)."""
    os.kill(_pid(sup, name), signal.SIGSTOP)


def thaw_child(sup: Supervisor, name: str) -> None:
    """Let a frozen child go on (SIGCONT)."""
    os.kill(_pid(sup, name), signal.SIGCONT)


def _ignoring_sigterm(target: Any, *args: Any, **kwargs: Any) -> Any:
    """Runs in the child: SIGTERM is ignored, then the real target runs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    function = resolve(target) if isinstance(target, str) else target
    return function(*args, **kwargs)


def stubborn(spec: ChildSpec) -> ChildSpec:
    """The same child, but it ignores SIGTERM: only its shutdown's SIGKILL stops it."""
    return dataclasses.replace(spec, target=_ignoring_sigterm, args=(spec.target, *spec.args))


async def wait_for(
    sup: Supervisor,
    kind: str,
    *,
    child: str | None = None,
    seconds: float = 10.0,
    events: MemoryObjectReceiveStream[Event] | None = None,
) -> Event:
    """Wait for the next event of *kind* (about *child*, if given) and return it.

    Pass *events* (from ``sup.events()``, subscribed before the action) to
    be sure not to miss an event that follows the action at once.

    Raises:
        TimeoutError: No such event within *seconds*.
    """
    with contextlib.ExitStack() as stack:
        stream = events if events is not None else stack.enter_context(sup.events())
        with anyio.fail_after(seconds):
            async for event in stream:
                if event.kind == kind and (child is None or event.child == child):
                    return event
    raise LookupError(f"supervisor {sup.name!r} stopped before a {kind!r} event")
