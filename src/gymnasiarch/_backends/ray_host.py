"""The Ray actor that hosts a child's runs, one after the other, on whichever node Ray chose.

It runs the child as a real subprocess through the same process layer as
on one machine (:class:`~gymnasiarch._process.run.ChildProcess`), so exit
codes, signals, the child's own SIGTERM handling and its traceback come
back as they would locally. A Ray worker has threads, so it never forks
itself: the child comes from the node's shared fork server
(:class:`~gymnasiarch._process.forkserver.SharedForkServer`, one per node, job
and ``sys.path``, started by the first actor that needs it), and runs in
its actor's environment, not the server's. Should that server not be
usable, the child is spawned: a fresh interpreter, ~100 ms more.

The child's records go straight to the supervisor's log server; the lines
it writes to stdout and stderr are turned into records here and sent there
on a second ticket.

This module is imported in Ray workers and, for :class:`ByValue`, in the
children; it never imports Ray itself.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import ipaddress
import logging
import os
import pickle
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from gymnasiarch import _ports
from gymnasiarch._backends.base import ExitStatus, Launch, first_of, target_module

if TYPE_CHECKING:
    from gymnasiarch._process.forkserver import SharedForkServer
    from gymnasiarch._process.run import ChildProcess
    from gymnasiarch._wire.logclient import LogClientHandler
    from gymnasiarch.ready import LineMatcher, NotifyMessage, NotifySocket

# What hosting a child takes (~8 ms of imports), imported in a thread from
# the actor's creation on: its first call needs them, as soon as Ray
# unpickles that call's Launch.
_HOSTING_MODULES = (
    "gymnasiarch._process.run",
    "gymnasiarch._wire.logclient",
    "gymnasiarch._process.forkserver",
)


def _import_hosting_modules() -> None:
    for module in _HOSTING_MODULES:
        importlib.import_module(module)


logger = logging.getLogger("gymnasiarch.ray")


class ByValue:
    """A target (with its arguments) that only cloudpickle can carry.

    A function defined in the driver's ``__main__`` or in a closure reaches
    the Ray worker by value; the child, started with spawn, gets it the same
    way (it imports Ray's cloudpickle to unpickle it, which costs a moment).
    """

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __call__(self) -> Any:
        target, args, kwargs = pickle.loads(self.blob)  # noqa: S301  # trusted-pipe: our launch, via Ray
        return target(*args, **kwargs)


def by_value_if_needed(launch: Launch, dumps: Callable[[Any], bytes]) -> Launch:
    """*launch*, with its target wrapped in :class:`ByValue` if pickle cannot name it."""
    call = (launch.target, launch.args, launch.kwargs)
    try:
        if b"__main__" not in pickle.dumps(call):
            return launch
    except Exception:  # noqa: S110 - a closure or a dynamic function: by value, then
        pass
    return dataclasses.replace(launch, target=ByValue(dumps(call)), args=(), kwargs={})


def _status_payload(status: ExitStatus, log_connected: bool) -> dict[str, Any]:
    """The run's status as data any Python can load (the error as its own pickle)."""
    try:
        error_blob = pickle.dumps(status.error) if status.error is not None else None
    except Exception:
        error_blob = None
    return {
        "exitcode": status.exitcode,
        "signum": status.signum,
        "result": status.result,
        "error": error_blob,
        "error_type": type(status.error).__qualname__ if status.error is not None else None,
        "error_text": str(status.error) if status.error is not None else None,
        "traceback": status.traceback,
        "pid": status.pid,
        "output": status.output,
        "log_connected": log_connected,
        # ResultNotSentError pickles (it carries only names and text).
        "result_error": pickle.dumps(status.result_error) if status.result_error else None,
        # A program that could not be exec'd on its node (InitializationFailedError pickles).
        "start_error": pickle.dumps(status.start_error) if status.start_error else None,
        # A ChildOverLimitError (max_memory, sampled here on the child's node) pickles too.
        "over_limit": pickle.dumps(status.over_limit) if status.over_limit else None,
        "signal_cause": status.signal_cause,  # a SIGXCPU of limits.cpu_seconds, say
    }


class _HostedRun:
    """What the host knows of one run of its child."""

    def __init__(self) -> None:
        self.child: ChildProcess | None = None
        self.spawned = anyio.Event()  # the child was started (or could not be)
        self.relayed = False  # whether the output relay connected to the log server
        # A program's readiness, checked here, on its node: its ready=Line
        # matcher (fed by the output pump), and for ready=Notify, READY=1
        # (with the STATUS as it came) and the last STATUS, which
        # notify_status() reports as it changes.
        self.line_matcher: LineMatcher | None = None
        self.notify_ready = anyio.Event()
        self.notify_ready_status: str | None = None
        self.notify_status: str | None = None
        self.notify_changed = anyio.Event()
        # A program's ports=, picked on this node (Launch.node_ports).
        self.ports: dict[str, int] = {}

    def note(self, message: NotifyMessage, status: str | None) -> None:
        """Take one sd_notify message of the program (*status*: its socket's last STATUS)."""
        if (message.watchdog or message.ready) and self.child is not None:
            # Its watchdog's deadline, kept here on its node, from when it was sent.
            self.child.beat(message.received_at)
        if message.watchdog_trigger and self.child is not None:
            self.child.trigger_watchdog()
        if message.ready and not self.notify_ready.is_set():
            self.notify_ready_status = status
            self.notify_ready.set()
        if status != self.notify_status:
            self.notify_status = status
            self.notify_changed.set()
            self.notify_changed = anyio.Event()


class ChildHost:
    """One child's runs, one after the other, in a Ray actor (made remote by the backend).

    The supervisor keeps a child's actor across its restarts: a restart is
    one more :meth:`run` on the same actor (a few milliseconds, where a new
    actor waits for a Ray worker, ~0.3 s). Every call names its run by the
    number the backend gave it; :meth:`run` starts the child and returns
    when it has ended; the other methods may be called while it runs (an
    async actor runs them concurrently, all on its one event-loop thread),
    and before it, in any order.
    """

    def __init__(self) -> None:
        threading.Thread(
            target=_import_hosting_modules, name="gymnasiarch-host-imports", daemon=True
        ).start()
        self._runs: dict[int, _HostedRun] = {}
        self._current = -1  # the number of the latest run begun

    def _run(self, number: int) -> _HostedRun | None:
        """Run *number*'s state, made by whichever call comes first; None for one long over."""
        if number < self._current:
            return self._runs.get(number)
        return self._runs.setdefault(number, _HostedRun())

    async def run(
        self, number: int, launch: Launch, relay: dict[str, Any] | None, capture_output: bool
    ) -> dict[str, Any]:
        """Start run *number* of the child, follow it to its end, and say how it ended."""
        self._current = number
        for old in [n for n in self._runs if n < number]:
            del self._runs[old]  # the supervisor starts a run once the one before has ended
        hosted = self._run(number)
        assert hosted is not None
        handler = None
        propagates: dict[str, bool] = {}
        if capture_output and relay:

            def connected() -> None:  # in the relay's sender thread, before its first frame
                hosted.relayed = True

            handler, propagates = _relay_output(
                launch.path or launch.name, relay, on_connect=connected
            )
        notify = None
        try:
            try:
                if launch.node_ports is not None:
                    hosted.ports = _ports.pick_ports(launch.node_ports)  # free on this node
                    launch = with_ports(launch, hosted.ports)
                if launch.command is not None:
                    launch, notify = _with_notify_socket(launch)
                child = await _start_child(launch, capture_output)
            finally:
                hosted.spawned.set()
            hosted.child = child
            if launch.command is not None:
                hosted.line_matcher = _line_matcher(launch, child)
            if notify is None:
                await child.watch()
            else:
                await _watch_notifying(child, notify, hosted)
            assert child.status is not None
        finally:
            if notify is not None:
                notify.close()
            if handler is not None:
                await _end_relay(launch.path or launch.name, handler, propagates)
        return {
            **_status_payload(child.status, child.log_connected),
            "relayed": hosted.relayed,
            "started": child.started.is_set(),
            "ready": child.ready.is_set(),
            "ready_value": child.ready_value,
            "notify_status": hosted.notify_status,
        }

    async def spawned(self, number: int) -> tuple[int | None, int, str, str, dict[str, int]]:
        """The child's pid (None if it could not be started), ours, this node's id and address.

        Then the ports picked here for its program (``{}`` for none).
        """
        child = await self._spawned_child(number)
        hosted = self._run(number)
        node_id, node_ip = _node()
        ports = dict(hosted.ports) if hosted is not None else {}
        return (child.pid if child else None), os.getpid(), node_id, node_ip, ports

    async def usage(self, number: int) -> tuple[int, float] | None:
        """Resident bytes and CPU seconds of run *number*'s process group, read now (or None)."""
        hosted = self._run(number)
        child = hosted.child if hosted is not None else None
        return child.usage() if child is not None else None

    async def started(self, number: int) -> bool:
        """Wait until the child's target runs; False if it ended first."""
        return await self._first(number, lambda child: child.started) is not None

    async def ready(self, number: int) -> tuple[bool, Any]:
        """Wait until the child said it is ready, and with what; (False, None) if it ended."""
        child = await self._first(number, lambda child: child.ready)
        return (True, child.ready_value) if child is not None else (False, None)

    async def program_ready(self, number: int, kind: Any) -> tuple[bool, Any]:
        """Wait until run *number*'s program shows *kind* here; (True, what was found).

        (False, None) if the program ended first, or could not be started.
        *kind* is a ``gymnasiarch.ready`` value, its placeholders
        substituted. What is found is as on one machine (the path, the
        matching text, the STATUS sent with READY=1), but for a port:
        ``{"host": address, "port": port}``, the address at which the driver
        reaches it (this node's, for a socket bound to the wildcard).
        """
        child = await self._spawned_child(number)
        hosted = self._run(number)
        if child is None or hosted is None:
            return False, None
        kind = _ports.fill_ready(
            kind, hosted.ports
        )  # the driver did not know the ports picked here
        found: list[Any] = []
        seen = anyio.Event()

        async def look() -> None:
            try:
                found.append(await _look_for(kind, child, hosted))
            except ProcessLookupError:
                return  # the leader exited before it listened: child.exited follows
            seen.set()

        if _already_seen(kind, hosted):
            # Its READY=1 (or its line) came before it exited, perhaps before
            # this question reached the actor: it was ready, whatever followed.
            return True, await _look_for(kind, child, hosted)
        async with anyio.create_task_group() as group:
            group.start_soon(look)
            await first_of(seen, child.exited)
            group.cancel_scope.cancel()
        return (True, found[0]) if seen.is_set() else (False, None)

    async def notify_status(self, number: int, known: str | None) -> tuple[str | None, bool]:
        """Run *number*'s program's last sd_notify STATUS, once it differs from *known*.

        Returns at once if it does, else when it changes or the program
        ends; the flag says whether the program still runs (whether to ask again).
        """
        child = await self._spawned_child(number)
        hosted = self._run(number)
        if child is None or hosted is None:
            return known, False
        if hosted.notify_status == known and not child.exited.is_set():
            await first_of(hosted.notify_changed, child.exited)
        return hosted.notify_status, not child.exited.is_set()

    async def terminate(self, number: int) -> None:
        """SIGTERM the child's process group."""
        child = await self._spawned_child(number)
        if child is not None:
            child.terminate()

    async def kill(self, number: int) -> None:
        """SIGKILL the child's process group."""
        child = await self._spawned_child(number)
        if child is not None:
            child.kill()

    async def _spawned_child(self, number: int) -> ChildProcess | None:
        """Run *number*'s child once it was started; None if it could not be, or is long over."""
        hosted = self._run(number)
        if hosted is None:
            return None
        await hosted.spawned.wait()
        return hosted.child

    async def _first(
        self, number: int, event_of: Callable[[ChildProcess], anyio.Event]
    ) -> ChildProcess | None:
        """Run *number*'s child once its event is set; None if the child ended first."""
        child = await self._spawned_child(number)
        if child is None:
            return None
        wanted = event_of(child)
        await first_of(wanted, child.exited)
        return child if wanted.is_set() else None


@functools.cache
def node_fork_server() -> SharedForkServer:
    """This node's fork server for this job and ``sys.path`` (made on first use)."""
    import ray  # noqa: PLC0415 - only ever called inside a Ray actor

    context: Any = ray.get_runtime_context()
    # Servers are not shared across jobs or code paths: a server's
    # preloaded modules are one job's code.
    key = hashlib.sha256(repr((sys.executable, sys.path)).encode()).hexdigest()[:12]
    name = f"ray-{context.get_job_id()}-{str(context.get_node_id())[:12]}-{key}"
    directory = os.path.join(tempfile.gettempdir(), f"gymnasiarch-{os.getuid()}", name)
    from gymnasiarch._process.forkserver import SharedForkServer  # noqa: PLC0415 - see _HOSTING_MODULES

    # It ends with the raylet, our worker's parent, if it has not idled out before.
    return SharedForkServer(directory, anchor_pid=os.getppid())


async def _start_child(launch: Launch, capture_output: bool) -> ChildProcess:
    """Start the child through the node's fork server, or with spawn if that fails.

    Its captured output travels to the supervisor as records of a bounded
    size: a JSON line longer than what one carries whole (its length, or its
    record's once encoded) is cut into plain pieces here, rather than arrive
    without its fields, its message cut.
    """
    from gymnasiarch._process.run import ChildProcess  # noqa: PLC0415 - see _HOSTING_MODULES
    from gymnasiarch._wire.logclient import (  # noqa: PLC0415 - see _HOSTING_MODULES
        RELAYED_LINE_BYTES,
        carried_whole,
    )

    module = target_module(launch.target)
    preload = [module] if module else []
    try:
        # The request starts the node's server if it finds none (blocking
        # for a moment, once per node and job).
        return await ChildProcess.start(
            dataclasses.replace(launch, environ=dict(os.environ)),
            "forkserver",
            preload,
            capture_output=capture_output,
            fork_server=node_fork_server(),
            max_json_line=RELAYED_LINE_BYTES,
            json_record_fits=carried_whole,
        )
    except OSError as error:
        logger.warning(
            "child %r: this node's fork server failed (%s); starting it with spawn",
            launch.name,
            error,
        )
    if launch.command is not None:
        # A program runs in this actor's environment, not the driver's.
        launch = dataclasses.replace(launch, environ=dict(os.environ))
    return await ChildProcess.start(
        launch,
        "spawn",
        capture_output=capture_output,
        main_module=False,
        max_json_line=RELAYED_LINE_BYTES,
        json_record_fits=carried_whole,
    )


def _with_notify_socket(launch: Launch) -> tuple[Launch, NotifySocket | None]:
    """A program's launch with ``NOTIFY_SOCKET`` set to a socket of this node, where it has one.

    For ``ready=Notify()`` only: the socket is made before the program
    starts (it may send READY=1 from its first instruction on), in a private
    directory of this node, and is the run's until it ends.
    """
    from gymnasiarch import ready  # noqa: PLC0415 - a leaf; only programs need it

    if not isinstance(launch.ready, ready.Notify):
        return launch, None
    notify = ready.NotifySocket()
    env = {**(launch.env or {}), "NOTIFY_SOCKET": notify.path}
    return dataclasses.replace(launch, env=env), notify


def _line_matcher(launch: Launch, child: ChildProcess) -> LineMatcher | None:
    """For ``ready=Line``: a matcher fed each line of the program's output (set before watch)."""
    from gymnasiarch import ready  # noqa: PLC0415 - a leaf; only programs need it

    if not isinstance(launch.ready, ready.Line):
        return None
    matcher = ready.LineMatcher(launch.ready)
    child.on_output_line = matcher.feed
    return matcher


async def _watch_notifying(child: ChildProcess, notify: NotifySocket, hosted: _HostedRun) -> None:
    """Follow *child* to its end, reading its sd_notify messages meanwhile."""
    assert child.pid is not None
    notify.believe(child.pid)  # the program leads its own group

    async def listen() -> None:
        async for message in notify:
            hosted.note(message, notify.status)

    def take_pending() -> None:  # at its watchdog's deadline: what it sent in time
        for message in notify.pending():
            hosted.note(message, notify.status)

    child.on_watchdog_expiry = take_pending
    async with anyio.create_task_group() as group:
        group.start_soon(listen)
        await child.watch()
        group.cancel_scope.cancel()
    # What it said just before its end (a last STATUS) is queued still:
    # read it without waiting for more.
    with anyio.move_on_after(0):
        while True:
            hosted.note(await notify.receive(), notify.status)


def _already_seen(kind: Any, hosted: _HostedRun) -> bool:
    """Whether *hosted*'s program already said it was ready, by *kind* (Notify or Line)."""
    from gymnasiarch import ready  # noqa: PLC0415 - a leaf; only programs need it

    if isinstance(kind, ready.Notify):
        return hosted.notify_ready.is_set()
    if isinstance(kind, ready.Line):
        return hosted.line_matcher is not None and hosted.line_matcher.match is not None
    return False


async def _look_for(kind: Any, child: ChildProcess, hosted: _HostedRun) -> Any:
    """What *kind* finds for *child*'s program on this node (see ChildHost.program_ready).

    Raises:
        ProcessLookupError: The program's leader exited before it listened.
    """
    from gymnasiarch import ready  # noqa: PLC0415 - a leaf; only programs need it

    if isinstance(kind, ready.Port):
        assert child.pid is not None
        listener = await ready.wait_port(kind, child.pid)
        return {"host": published_host(listener.host, _node()[1]), "port": listener.port}
    if isinstance(kind, ready.Path):
        return await ready.wait_path(kind)
    if isinstance(kind, ready.Line):
        if hosted.line_matcher is None:
            # Its matcher is made with the launch, to be fed from the first line.
            raise ValueError(f"ready={kind!r} was not in the program's launch")
        return (await hosted.line_matcher.wait()).group(0)
    if isinstance(kind, ready.Notify):
        await hosted.notify_ready.wait()
        return hosted.notify_ready_status
    raise TypeError(f"not a ready kind: {kind!r}")


def with_ports(launch: Launch, ports: dict[str, int]) -> Launch:
    """*launch* with the ports picked on this node filled into its command, env and ready."""
    command = None if launch.command is None else _ports.fill_command(launch.command, ports)
    return dataclasses.replace(
        launch,
        command=command,
        env=_ports.fill_env(launch.env, ports),
        ready=_ports.fill_ready(launch.ready, ports),
        node_ports=None,
    )


def published_host(bound: str, node_ip: str) -> str:
    """The address to publish for a socket bound to *bound*, on the node at *node_ip*.

    A socket bound to the wildcard (``0.0.0.0``, ``::``) is reached at the
    node's address, which the driver and the other nodes reach; one bound
    to a given address at that address (``::ffff:10.0.0.5`` as ``10.0.0.5``).
    """
    address = ipaddress.ip_address(bound)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return node_ip if address.is_unspecified else str(address)


#: The loggers the host itself says things about its child on (the process
#: layer's: "over max_memory: stopping it", escapees...; the host's own): while
#: a run's output is relayed, their records go the same way, to the
#: supervisor's logging, not to the Ray worker's log (the driver shows that as
#: Ray's coloured stdout). An actor hosts one child, so they are about it.
HOST_LOGGERS = ("gymnasiarch.process", "gymnasiarch.ray")


def _relay_output(
    name: str, config: dict[str, Any], on_connect: Callable[[], None]
) -> tuple[LogClientHandler, dict[str, bool]]:
    """Send the records of the child's captured output to the supervisor's log server.

    The host's own records about the child (:data:`HOST_LOGGERS`) too: the
    log server takes them as the child's (``gymnasiarch.child.<name>``), as
    it takes no ``gymnasiarch.*`` name from a client. Returns the handler,
    and whether each of those loggers propagated before (for :func:`_end_relay`).
    """
    from gymnasiarch._process.output import output_logger  # noqa: PLC0415 - see _HOSTING_MODULES
    from gymnasiarch._wire.logclient import LogClientHandler  # noqa: PLC0415 - see _HOSTING_MODULES

    # From the actor's event loop: an ERROR line must not wait to be sent.
    handler = LogClientHandler(config, on_connect=on_connect, errors_sent_at_once=False)
    logger = output_logger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # not into the Ray worker's own log
    propagates: dict[str, bool] = {}
    for host_name in HOST_LOGGERS:
        host_logger = logging.getLogger(host_name)
        host_logger.addHandler(handler)
        propagates[host_name] = host_logger.propagate
        host_logger.propagate = False
    return handler, propagates


async def _end_relay(name: str, handler: LogClientHandler, propagates: dict[str, bool]) -> None:
    """Send what is left of the run's output; take the relay off (the actor hosts more runs).

    *propagates* is what :func:`_relay_output` found: each host logger
    propagates again as it did before the run (one the worker's own logging
    set up not to is left so).
    """
    from gymnasiarch._process.output import output_logger  # noqa: PLC0415 - see _HOSTING_MODULES

    # The last output lines are out before the exit is reported (a child
    # that printed nothing leaves nothing to wait for).
    if handler.idle:
        handler.close()
    else:
        await anyio.to_thread.run_sync(handler.close)
    output_logger(name).removeHandler(handler)
    for host_name in HOST_LOGGERS:
        host_logger = logging.getLogger(host_name)
        host_logger.removeHandler(handler)
        host_logger.propagate = propagates.get(host_name, True)  # between runs: as before


def _node() -> tuple[str, str]:
    import ray  # noqa: PLC0415 - only ever called inside a Ray actor

    context: Any = ray.get_runtime_context()
    util: Any = ray.util
    return str(context.get_node_id()), str(util.get_node_ip_address())
