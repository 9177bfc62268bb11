"""A pytest plugin for testing your own supervision trees, and fault-injection helpers.

Installed with gymnasiarch and registered through the ``pytest11`` entry
point, so its fixtures are there in every test session:

``gymnasiarch_supervise``
    A factory of supervisors for the test: ``async with
    gymnasiarch_supervise([...], **options) as sup:`` runs one. When the
    test ends, the fixture fails it if any process started during the test
    (a child, a grandchild, a zombie, a daemon that left the tree) is still
    around.
``gymnasiarch_no_leftovers``
    Just the check: fail the test if a process it started outlives it
    (see :func:`_no_leftovers` for what it sees).

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
import select
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from gymnasiarch import ChildSpec, Event, Supervisor, _platform
from gymnasiarch._context import IGNORES_SIGTERM
from gymnasiarch._process.run import library_helper_pids
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
# gymnasiarch._process.forkserver) live as long as the test process: not leftovers.
_LONG_LIVED = (
    "multiprocessing.resource_tracker",
    "multiprocessing.forkserver",
    "gymnasiarch._process.forkserver_main import main",  # the server, until it has its title
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


#: Set in the environment while a check runs: every process the test execs
#: (and every fork of one) carries it, even after it left the test's tree.
_CHECK_MARKER = "GYMNASIARCH_LEFTOVER_CHECK"
#: Seconds a process the test started may take to end after it (a pidfd wait).
_LEFTOVER_GRACE = 2.0


def _snapshot() -> dict[int, int]:
    """Map pid -> start time (clock ticks after boot) for every process now."""
    found: dict[int, int] = {}
    for pid in _platform.proc_pids():
        if (info := _platform.proc_stat(pid)) is not None:
            found[info.pid] = info.start
    return found


def _marked_since(before: dict[int, int], token: str) -> dict[int, str]:
    """Processes of this user, started since *before*, that carry the check's *token*.

    Such a process was exec'd by the test or by something it started, and may
    have left the test's tree (a ``setsid`` daemon, a fork server that
    outlived its starter): only its environment still says where it came from.
    Unrelated processes of the same user (another test run on the machine)
    carry no token. With ``SPT_NOENV`` set during the check, ``setproctitle``
    leaves the environment readable.
    """
    found: dict[int, str] = {}
    for pid, start in _snapshot().items():
        if before.get(pid) == start or _platform.proc_uid(pid) != os.getuid():
            continue  # there before, or not ours to read (or gone)
        if _platform.proc_environ(pid, _CHECK_MARKER) != token:
            continue
        found[pid] = _platform.proc_cmdline(pid)
    return found


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait on pidfds (no polling) until every one of *pids* has exited, or *timeout*.

    Returns the pids still alive then (sorted).
    """
    fds = {}
    for pid in set(pids):
        with contextlib.suppress(OSError):
            fds[pid] = _platform.pidfd_open(pid)
    deadline = time.monotonic() + timeout
    try:
        while fds:
            # At least one look, also with no time left (timeout 0): a pid
            # that has exited (a zombie not reaped yet) is not "alive".
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(list(fds.values()), [], [], remaining)
            for pid, fd in list(fds.items()):
                if fd in ready:
                    os.close(fds.pop(pid))
            if remaining == 0:
                break
        return sorted(fds)
    finally:
        for fd in fds.values():
            os.close(fd)


def _end(pids: Sequence[int]) -> None:
    """SIGKILL what outlived a test (so it does not fail the next one too), and reap it."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, _LEFTOVER_GRACE)
    for pid in pids:
        info = _platform.proc_stat(pid)
        if info is not None and info.ppid == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _leftovers(before: dict[int, int], token: str) -> dict[int, str]:
    """What the test started and is still around: descendants, and marked processes."""
    me = os.getpid()
    left = {
        pid: command
        for pid, command in _descendants(me).items()
        if before.get(pid) != _start_of(pid)
        and command not in _LONG_LIVED_TITLES
        and not any(helper in command for helper in _LONG_LIVED)
    }
    helpers = library_helper_pids()
    for pid, command in _marked_since(before, token).items():
        if pid not in helpers:
            left.setdefault(pid, command)
    return left


def _start_of(pid: int) -> int | None:
    info = _platform.proc_stat(pid)
    return info.start if info is not None else None


def _still_there(pids: dict[int, str]) -> dict[int, str]:
    """Those of *pids* alive, or zombies of ours (nobody reaped them), with their commands."""
    me = os.getpid()
    return {
        pid: command
        for pid, command in pids.items()
        if (info := _platform.proc_stat(pid)) is not None and (info.state != "Z" or info.ppid == me)
    }


@contextlib.contextmanager
def _no_leftovers() -> Iterator[None]:
    """Fail if a process started inside the block is still around at its end.

    Seen are the test process's descendants (with the process title, or the
    command line, of each) and every process that carries this check's mark
    in its environment, even one that left the tree; each gets
    :data:`_LEFTOVER_GRACE` seconds to end. What is reported is killed.
    """
    token = f"{os.getpid()}.{time.monotonic_ns()}"
    before = _snapshot()
    saved = {name: os.environ.get(name) for name in (_CHECK_MARKER, "SPT_NOENV")}
    os.environ[_CHECK_MARKER] = token
    os.environ.setdefault("SPT_NOENV", "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    left = _leftovers(before, token)
    if left:
        _wait_gone(list(left), _LEFTOVER_GRACE)
        left = _still_there(left)
    if left:
        _end(list(left))
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
    """The pid of the child at *name*, a name or a path (``"agents/agent-1"``)."""
    try:
        info = sup.child_info(name)
    except KeyError:
        raise LookupError(f"supervisor {sup.name!r} has no child at {name!r}") from None
    if info.nested:
        raise LookupError(f"{name!r} is a nested supervisor: it has no process of its own")
    if info.pid is None:
        raise LookupError(f"child {name!r} is not running ({info.state})")
    if not info.on_this_machine:
        # Its pid is one on another node: here it names somebody else.
        raise LookupError(f"child {name!r} runs on another machine")
    return info.pid


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
    """Runs in the child, SIGTERM ignored since before its start was reported: the real target."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already, see IGNORES_SIGTERM
    function = resolve(target) if isinstance(target, str) else target
    return function(*args, **kwargs)


setattr(_ignoring_sigterm, IGNORES_SIGTERM, True)


def stubborn(spec: ChildSpec) -> ChildSpec:
    """The same child, but it ignores its stop: only its shutdown's SIGKILL stops it.

    A Python child ignores SIGTERM from before the supervisor hears that it
    started, so a stop right after its start meets the ignore too. A
    program is sent SIGWINCH instead of its stop signal, which programs
    ignore by default (a SIGTERM sent to it some other way still ends it).
    """
    if spec.command is not None:
        return dataclasses.replace(spec, stop_signal="SIGWINCH")
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

    *child* is a child's path in the tree (``"agents/agent-1"``) or its name.

    Pass *events* (from ``sup.events()``, subscribed before the action) to
    be sure not to miss an event that follows the action at once.

    Raises:
        TimeoutError: No such event within *seconds*.
    """
    with contextlib.ExitStack() as stack:
        stream = events if events is not None else stack.enter_context(sup.events())
        with anyio.fail_after(seconds):
            async for event in stream:
                if event.kind == kind and (child is None or child in (event.path, event.child)):
                    return event
    raise LookupError(f"supervisor {sup.name!r} stopped before a {kind!r} event")
