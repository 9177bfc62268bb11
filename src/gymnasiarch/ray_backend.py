"""Run a supervision tree's children on a Ray cluster (``pip install 'gymnasiarch[ray]'``).

``Supervisor(children, backend=RayBackend())`` runs the same tree as on one
machine, with the same strategies, failure mapping and log path; only
where the children run changes. Each child has one Ray actor (created with
``max_restarts=0`` and ``max_task_retries=0``: restarting is the
supervisor's decision, under its strategy), which hosts the child as a
real subprocess through the same process layer as :class:`LocalBackend
<gymnasiarch.LocalBackend>` (see :mod:`gymnasiarch._backends.ray_host`). A restart
runs the child again in the same actor, on the same node, in milliseconds;
only a run whose actor was lost gets a new actor, placed anew by Ray. The
actor ends when the supervisor will not run its child again.

- The actor's death (its node lost, out of memory, ``ray.kill``) ends the
  run with :attr:`ExitStatus.lost <gymnasiarch.ExitStatus.lost>`
  set to the reason Ray gave; the supervisor treats it as a crash.
- The children's records reach the supervisor's log server over TCP,
  authenticated by their tickets, in order (sequence numbers), never
  pickled; the supervisor's log server listens on the address of this
  node as Ray knows it.
- Ray's futures are bridged to anyio without a blocking call in the event
  loop (a socket pair rings when one completes), under asyncio and trio.

Cluster ownership: with no address (and Ray not initialised yet), the
backend starts a local cluster of its own (``ray.init(address="local")``),
bound to loopback only, and shuts it down when the last supervisor using it
ends: never a cluster that happens to run on the machine, nor the one
``RAY_ADDRESS`` names, which a bare ``ray.init()`` would join. With an
address, or when Ray is initialised already, it attaches and never shuts
down a cluster it did not start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import anyio
from anyio.abc import TaskStatus

from gymnasiarch._backends.base import DRAIN_TIMEOUT, ChildRun, ExitStatus, Launch, rebuild_error
from gymnasiarch._backends.ray_host import ChildHost, by_value_if_needed
from gymnasiarch._backends.wakeup import Wakeup
from gymnasiarch.exceptions import InitializationFailedError
from gymnasiarch.logserver import LogServer, LogTicket
from gymnasiarch.ready import Notify

__all__ = ["RayBackend", "RayChildRun"]

logger = logging.getLogger("gymnasiarch.ray")

#: The run's reply last: a run that ended at once still has its pid, and
#: whether it had started, when its status is made.
_HANDLING_ORDER = ("spawned", "started", "ready", "run")
#: Seconds to wait for a cluster's address to answer before giving up.
_CONNECT_TIMEOUT = 5.0
#: Seconds a child may wait for Ray to place its actor before we say so.
_PLACEMENT_PATIENCE = 10.0
#: Seconds a child's memory and CPU time (``ChildInfo.memory``,
#: ``cpu_seconds``), read on its node, are shown before a row asks its
#: actor for new ones (in the background: :meth:`RayChildRun.usage`).
USAGE_REFRESH = 1.0
#: Seconds after which a figure fetched from the node is not shown any
#: more (None): nobody asked for a row in that time.
USAGE_SHOWN_FOR = 30.0

# Ray binds its daemons to the node address it finds; with this set before
# Ray is imported, a local cluster uses (and listens on) loopback only.
_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _import_ray(local_only: bool) -> Any:
    """Import Ray; the first import decides whether a cluster we start is loopback-only."""
    if "ray" in sys.modules or not local_only:
        import ray  # noqa: PLC0415 - an optional dependency

        return ray
    before = os.environ.get(_LOCAL_ONLY)
    os.environ[_LOCAL_ONLY] = "0"
    try:
        import ray  # noqa: PLC0415

        return ray
    finally:
        if before is None:
            del os.environ[_LOCAL_ONLY]
        else:
            os.environ[_LOCAL_ONLY] = before


class _Connection:
    """This process's one connection to Ray, shared by every RayBackend, counted."""

    def __init__(self) -> None:
        self.users = 0
        self.ray: Any = None
        self.initialised_by_us = False
        self.started_cluster = False
        self._host_class: Any = None

    def host_class(self) -> Any:
        """ChildHost as a Ray actor class: one per connection, so Ray exports it once."""
        if self._host_class is None:
            self._host_class = self.ray.remote(max_restarts=0, max_task_retries=0)(ChildHost)
        return self._host_class

    def open(self, backend: RayBackend) -> None:
        try:
            ray = _import_ray(local_only=backend.address is None)
        except ImportError as error:
            raise InitializationFailedError(
                "RayBackend needs Ray: install it with pip install 'gymnasiarch[ray]'"
            ) from error
        self.ray = ray
        if ray.is_initialized():
            return  # someone else's connection: attach, never shut it down
        options = {"include_dashboard": False, **backend.init_options}
        if backend.address is None:
            # Ray ties its daemons to the thread that started them.
            if threading.current_thread() is not threading.main_thread():
                raise InitializationFailedError(
                    "RayBackend starts a local Ray cluster from the main thread only: "
                    "run the supervisor there, or start Ray (or give an address) first"
                )
            if backend.num_cpus is not None:
                options["num_cpus"] = backend.num_cpus
            # A cluster of our own: ray.init() with no address would join the
            # one RAY_ADDRESS names, or the last one started on this machine.
            options["address"] = "local"
        else:
            options["address"] = backend.address
        where = "a local Ray cluster" if backend.address is None else repr(backend.address)
        try:
            ray.init(**options)
        except Exception as error:  # Ray raises many kinds; all mean the same here
            raise InitializationFailedError(
                f"RayBackend could not start or reach {where}: {error}"
            ) from error
        self.initialised_by_us = True
        self.started_cluster = backend.address is None

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.initialised_by_us:
            self.initialised_by_us = self.started_cluster = False
            self._host_class = None
            self.ray.shutdown()  # on the thread that started it


_CONNECTION = _Connection()


async def _check_reachable(address: str) -> None:
    """Fail at once for a ``host:port`` nobody answers at (ray.init would retry for minutes)."""
    host, colon, port = address.rpartition(":")
    if "://" in address or not colon or not port.isdigit():
        return  # "auto", "ray://...": Ray's own client has its own timeouts
    try:
        with anyio.fail_after(_CONNECT_TIMEOUT):
            stream = await anyio.connect_tcp(host.strip("[]"), int(port))
    except (OSError, TimeoutError) as error:
        raise InitializationFailedError(
            f"RayBackend cannot reach the Ray cluster at {address!r}: {error or 'timed out'}"
        ) from None
    await stream.aclose()


class RayBackend:
    """Children as Ray actors, each hosting the child as a subprocess on its node.

    Args:
        address: The cluster to attach to (``"auto"``, ``"ray://..."``,
            ``"host:port"``), as ``ray.init`` takes it. ``None`` attaches to
            Ray if it is initialised already, else starts a local cluster
            of its own (loopback only; never one already running on the
            machine, nor ``RAY_ADDRESS``'s) and shuts it down at the end.
        num_cpus: For a local cluster we start: the CPUs it offers.
        log_host: The address the supervisor's log server listens on; by
            default this node's address as Ray knows it (loopback for a
            local cluster). The children's nodes must reach it.
        init_options: More keyword arguments for ``ray.init`` (a
            ``runtime_env`` that puts your code on the workers, say); not
            ``address``, which is the argument above.

    Raises:
        InitializationFailedError: (when the supervisor starts) Ray is not
            installed, the cluster cannot be started or reached, or a local
            cluster would have to be started from a thread other than the
            main one.
    """

    prepare_before_signals = True  # ray.init replaces the SIGTERM handler
    resolves_targets_here = False  # the workers may have code we have not
    #: Runs command children (programs) too, under their actors, and
    #: checks their readiness on their nodes (:meth:`RayChildRun.program_ready`).
    runs_programs = True
    checks_program_ready = True
    #: A program's ``ports=`` are picked by its actor, free on its node (not
    #: on the driver's machine), at its first start, and asked for again at
    #: its restarts (:func:`~gymnasiarch._ports.pick_ports`).
    picks_program_ports = True

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        log_host: str | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise ValueError(f"address: expected a Ray address or None, got {address!r}")
        if num_cpus is not None and (
            isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 0
        ):
            raise ValueError(f"num_cpus: expected an int >= 0 or None, got {num_cpus!r}")
        if init_options is not None and "address" in init_options:
            raise ValueError("init_options: give the cluster as RayBackend(address=...)")
        self.address = address
        self.num_cpus = num_cpus
        self.log_host = log_host
        self.init_options = dict(init_options or {})
        self._ray: Any = None
        self._host: Any = None  # ChildHost as a Ray actor class

    def __repr__(self) -> str:
        return f"<RayBackend address={self.address!r}>"

    # -- the cluster --------------------------------------------------------------

    def preload(self, module: str) -> None:
        """Nothing to preload: each child is a fresh interpreter on its node."""

    async def prepare(self) -> None:
        """Attach to the cluster, or start a local one (on the main thread; it blocks).

        One connection serves every backend of this process (Ray's driver
        is per process): it is counted, and ended when the last user ends.
        """
        if _CONNECTION.users == 0:
            ray = sys.modules.get("ray")
            if self.address is not None and not (ray and ray.is_initialized()):
                await _check_reachable(self.address)
            _CONNECTION.open(self)
        _CONNECTION.users += 1
        self._ray = _CONNECTION.ray
        self._host = _CONNECTION.host_class()

    def log_server(self) -> LogServer:
        """A TCP log server on this node's address, which the children's nodes reach."""
        if self._ray is None:
            raise RuntimeError("RayBackend.log_server() before prepare()")
        host = self.log_host or self._ray.util.get_node_ip_address()
        return LogServer(host, 0)

    async def aclose(self) -> None:
        """Detach when the last user is done; stop the cluster if we started it."""
        _CONNECTION.release()

    @property
    def owns_cluster(self) -> bool:
        """True while a local cluster started by gymnasiarch in this process runs."""
        return _CONNECTION.started_cluster

    # -- children -----------------------------------------------------------------

    async def start(
        self,
        launch: Launch,
        *,
        ticket: LogTicket | None,
        capture_output: bool,
        placement: Mapping[str, Any] | None = None,
        previous: ChildRun | None = None,
    ) -> RayChildRun:
        """Have the child's actor start the child: *previous*'s actor if it lives, else a new one.

        Raises:
            InitializationFailedError: The log server is out of the
                cluster's reach, Ray is gone, or Ray refused the actor.
        """
        if self._host is None or not self._ray.is_initialized():
            raise InitializationFailedError(
                f"child {launch.name!r}: RayBackend is not attached to a cluster"
            )
        if ticket is not None and not isinstance(ticket.server.client_address, list):
            ticket.revoke()
            raise InitializationFailedError(
                f"child {launch.name!r}: a child on a Ray cluster cannot reach a log "
                "server on a Unix socket; give the supervisor a TCP LogServer, or none"
            )
        # The spec refuses a port named "host" (the ready value's key for the node address).
        assert launch.node_ports is None or "host" not in launch.node_ports
        relay = None
        try:
            if ticket is not None and capture_output:
                relay = ticket.server.admit(launch.name)
            return self._create(launch, ticket, relay, placement or {}, previous)
        except BaseException as error:
            for issued in (ticket, relay):
                if issued is not None:
                    issued.revoke()
            if isinstance(error, Exception) and not isinstance(error, InitializationFailedError):
                raise InitializationFailedError(
                    f"child {launch.name!r}: Ray refused its actor: {error}"
                ) from error
            raise

    def _create(
        self,
        launch: Launch,
        ticket: LogTicket | None,
        relay: LogTicket | None,
        placement: Mapping[str, Any],
        previous: ChildRun | None,
    ) -> RayChildRun:
        launch = by_value_if_needed(launch, self._ray.cloudpickle.dumps)
        kept = previous.hand_over(placement) if isinstance(previous, RayChildRun) else None
        if kept is not None:
            actor, number = kept
        else:
            actor, number = self._host.options(**actor_options(self._ray, placement)).remote(), 0
        try:
            run = RayChildRun(
                launch.name,
                actor,
                self._ray,
                ticket=ticket,
                relay=relay,
                placement=placement,
                number=number,
            )
            run.submit(launch, relay.client_config() if relay is not None else None)
        except BaseException:
            self._ray.kill(actor, no_restart=True)
            raise
        return run


def actor_options(ray: Any, placement: Mapping[str, Any]) -> dict[str, Any]:
    """Ray actor options for a child's ``placement`` (see ``ChildSpec.placement``)."""
    options = {key: value for key, value in placement.items() if key != "node_affinity"}
    for key in ("resources", "runtime_env"):
        if key in options:
            options[key] = dict(options[key])
    affinity = placement.get("node_affinity")
    if affinity is not None:
        strategies = ray.util.scheduling_strategies
        options["scheduling_strategy"] = strategies.NodeAffinitySchedulingStrategy(
            node_id=affinity["node_id"], soft=bool(affinity.get("soft", False))
        )
    return options


class RayChildRun(ChildRun):
    """One run of one child in a Ray actor, as the supervisor sees it.

    When the run ends and its actor lives, the actor is kept for the
    child's next run (:meth:`hand_over`) until the supervisor says there
    will be none (:meth:`retire`).

    Attributes:
        pid: The child's process id on its node, once known.
        host_pid: The process id of its actor's worker on that node, once known.
        node: The id of the Ray node the child runs on, once known.
        on_this_machine: Whether that node is this machine (its pid is one
            this machine's signals reach).
        placement: The placement it asked Ray for.
        number: Which run of its actor this is (0 for a new actor's first).
        node_ip: The address of that node, once known.
        ports: The ports its actor picked on that node for a program's
            ``ports=`` (empty for none), once known.
    """

    #: A program's readiness is checked by its actor, on its node.
    checks_program_ready = True

    def __init__(
        self,
        name: str,
        actor: Any,
        ray: Any,
        *,
        ticket: LogTicket | None = None,
        relay: LogTicket | None = None,
        placement: Mapping[str, Any] | None = None,
        number: int = 0,
    ) -> None:
        super().__init__(name)
        self.placement = dict(placement or {})
        self.number = number
        self.pid: int | None = None
        self.host_pid: int | None = None
        self.node: str | None = None
        self.node_ip: str | None = None
        self.on_this_machine = False
        self.ports: dict[str, int] = {}
        # The last usage figure fetched from the node: (when, figure), and
        # whether a fetch is under way (see usage()); set from Ray's thread.
        self._usage: tuple[float, tuple[int, float] | None] | None = None
        self._usage_asked = False
        self._usage_fetched = threading.Event()  # each fetch's end (for tests)
        self._follows_notify = False  # a program with ready=Notify: its STATUS is followed
        self._actor = actor
        self._ray = ray
        self._ticket = ticket
        self._relay = relay
        self._refs: dict[str, Any] = {}
        self._spawned = False  # the host has started the child (or failed to)
        self._spawned_future: Future[Any] | None = None
        self._payload: dict[str, Any] | None = None
        self._watch_scope: anyio.CancelScope | None = None
        self._kept = False  # the run is over, its actor lives and waits for the next run
        # Nothing more to do with the actor: killed by us, dead by Ray's
        # word, or handed on to the child's next run.
        self._actor_ended = False
        self._retired = False  # the supervisor said no run follows this one

    def submit(self, launch: Launch, relay_config: dict[str, Any] | None) -> None:
        """Ask the actor to run the child, and to tell when it has spawned, started, is ready."""
        actor, number = self._actor, self.number
        self._follows_notify = launch.command is not None and isinstance(launch.ready, Notify)
        self._refs = {
            "run": actor.run.remote(number, launch, relay_config, relay_config is not None),
            "spawned": actor.spawned.remote(number),
            "started": actor.started.remote(number),
            "ready": actor.ready.remote(number),
        }

    # -- watching -----------------------------------------------------------------

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the run to its end (shielded, like a local child's watcher)."""
        with anyio.CancelScope(shield=True) as self._watch_scope:
            task_status.started()
            try:
                async with anyio.create_task_group() as group:
                    if self._follows_notify:
                        group.start_soon(self._follow_notify_status)
                    await self._follow()
                    group.cancel_scope.cancel()
                await self._wait_for_the_last_words()
            finally:
                self._release()
                self.exited.set()

    async def _follow(self) -> None:
        with Wakeup() as wakeup:
            futures: dict[str, Future[Any]] = {}
            for key, ref in self._refs.items():
                futures[key] = future = ref.future()
                future.add_done_callback(wakeup.ring)
            self._spawned_future = futures["spawned"]
            patience: float | None = _PLACEMENT_PATIENCE
            while futures:
                for key in [k for k in _HANDLING_ORDER if k in futures and futures[k].done()]:
                    if key in ("started", "ready") and "spawned" in futures:
                        # Ray may deliver the replies out of order: the pid,
                        # the node and the ports are known before the start.
                        continue
                    self._handle(key, futures.pop(key))
                if "run" not in futures:
                    return
                if "spawned" not in futures or patience is None:
                    await wakeup.wait()
                    continue
                # Ray waits silently for a node that fits the child's placement.
                with anyio.move_on_after(patience) as waiting:
                    await wakeup.wait()
                if waiting.cancelled_caught:
                    patience = None  # said once
                    logger.warning(
                        "child %r: Ray has not placed it after %g s (placement %s): %s",
                        self.name,
                        _PLACEMENT_PATIENCE,
                        self.placement or "Ray's default, 1 CPU",
                        _why_unplaced(self._ray, self.placement),
                    )

    def _handle(self, key: str, future: Future[Any]) -> None:
        error = future.exception()
        if key == "run":
            payload = future.result() if error is None else None
            if payload is not None:
                # The run's reply may be handled before the others': it
                # says as much as they would have.
                if payload.get("started"):
                    self.started.set()
                if payload.get("ready") and not self.ready.is_set():
                    self.ready_value = payload.get("ready_value")
                    self.ready.set()
                if self._follows_notify and self.on_notify_status is not None:
                    self.on_notify_status(payload.get("notify_status"))  # its last word
            self.status = self._status(payload, error)
        elif error is not None:
            return  # the run's own future says what happened
        elif key == "spawned":
            self.pid, self.host_pid, self.node, node_ip, ports = future.result()
            self.node_ip = node_ip
            self.on_this_machine = node_ip == self._ray.util.get_node_ip_address()
            self._spawned = True
            if ports:
                self.ports = ports
                if self.on_ports is not None:
                    self.on_ports(ports)
        elif key == "started" and future.result():
            self.started.set()
        elif key == "ready":
            ok, value = future.result()
            if ok:
                self.ready_value = value
                self.ready.set()

    def _status(self, payload: dict[str, Any] | None, error: BaseException | None) -> ExitStatus:
        if payload is not None:
            self._payload = payload
            return _status_from_payload(payload)
        assert error is not None
        if isinstance(error, self._ray.exceptions.RayTaskError):
            # The host itself failed (it could not start the child, say).
            cause = getattr(error, "cause", None)
            failure = cause if isinstance(cause, BaseException) else error
            return ExitStatus(None, None, error=failure, pid=self.pid)
        if isinstance(error, self._ray.exceptions.RayError):
            # Ray says the actor is dead: no need to end it (a call to Ray
            # that would delay the exit's report by ~0.5 ms).
            died = getattr(self._ray.exceptions, "ActorDiedError", ())
            if isinstance(error, died):
                self._actor_ended = True
            return ExitStatus(None, None, error=error, pid=self.pid, lost=_reason(error))
        return ExitStatus(None, None, error=error, pid=self.pid)

    async def _wait_for_the_last_words(self) -> None:
        """Let the log server take the child's last records before the exit is reported."""
        payload = self._payload or {}
        waits = []
        if payload.get("log_connected") and self._ticket is not None:
            waits.append(self._ticket.finished)
        if payload.get("relayed") and self._relay is not None:
            waits.append(self._relay.finished)
        with anyio.move_on_after(DRAIN_TIMEOUT) as scope:
            for finished in waits:
                await finished.wait()
        if scope.cancelled_caught:
            logger.warning(
                "child %r exited, but its last records did not arrive within %g s",
                self.name,
                DRAIN_TIMEOUT,
            )

    def _release(self) -> None:
        for ticket in (self._ticket, self._relay):
            if ticket is not None:
                ticket.revoke()
        if self._actor_ended:
            return  # abandoned, or Ray said it died
        if self._payload is not None and not self._retired:
            # The host said how the child ended, so the actor lives: it is
            # kept for the child's next run, or ended by retire().
            self._kept = True
        else:
            self._end_actor()

    def _end_actor(self) -> None:
        self._kept = False
        self._actor_ended = True
        if self._ray.is_initialized():
            with contextlib.suppress(Exception):  # Ray may be shutting down already
                self._ray.kill(self._actor, no_restart=True)

    # -- a program's readiness, on its node -------------------------------------------

    async def program_ready(self, kind: Any) -> Any:
        """Have the actor wait, on the program's node, until the program shows *kind*.

        The actor makes the program's notify socket, watches its group's
        listening sockets, the path, or its output lines, there. The value
        is what was found, as on one machine, but for a ``Port``:
        ``{"host": address, "port": port}``, with the address the driver
        reaches it at (the node's, for a socket bound to the wildcard).

        Should the check itself fail on the node (it cannot read the
        node's socket tables, say), that is logged, and the wait goes on
        until the child's ``ready_timeout`` ends it, as a miss.

        Raises:
            ProcessLookupError: The program ended before it was ready, or
                its actor is gone (the run's exit says how).
        """
        try:
            ok, value = await _result_of(self._actor.program_ready.remote(self.number, kind))
        except self._ray.exceptions.RayTaskError as error:
            # Its traceback, from the node, is in Ray's text of the error.
            logger.warning(
                "child %r: its readiness check (%r) failed on its node: %s",
                self.name,
                kind,
                getattr(error, "cause", None) or error,
            )
            await anyio.sleep_forever()
        except self._ray.exceptions.RayError as error:
            raise ProcessLookupError(f"child {self.name!r}: its actor is gone") from error
        if not ok:
            raise ProcessLookupError(f"child {self.name!r} ended before it was ready")
        return value

    def published_ports(self, ports: Mapping[str, int]) -> dict[str, Any]:
        """``{"host": node address, <name>: port, ...}``: where the driver reaches the program.

        The address is the node's as Ray knows it, as for a ``ready.Port``
        bound to the wildcard: the program is to listen there (or on the
        wildcard) to be reached from other machines.
        """
        return {"host": self.node_ip, **ports}

    def usage(self) -> tuple[int, float] | None:
        """The last resident bytes and CPU seconds of the child's group fetched from its node.

        Never a blocking call (rows are made synchronously): it returns the
        last figure fetched, and when that is older than :data:`USAGE_REFRESH`
        seconds, asks the actor for a new one in the background, for the next
        row. None before the first fetch has answered, once the figure is older
        than :data:`USAGE_SHOWN_FOR` seconds, and once the run is over. So
        the actor is asked only while someone looks (``gymnasiarch status``,
        its live view), at most once per :data:`USAGE_REFRESH` seconds.
        """
        if self.exited.is_set() or not self._spawned or self.pid is None:
            return None
        now = time.monotonic()
        last = self._usage
        if (last is None or now - last[0] >= USAGE_REFRESH) and not self._usage_asked:
            self._fetch_usage()
        if last is None or now - last[0] > USAGE_SHOWN_FOR:
            return None
        return last[1]

    def _fetch_usage(self) -> None:
        if not self._ray.is_initialized():
            return  # a call now would make Ray start a new cluster of its own
        self._usage_asked = True
        self._usage_fetched.clear()
        try:
            future = self._actor.usage.remote(self.number).future()
        except Exception:  # the actor is gone: the run's end says so
            self._usage_asked = False
            return

        def took(done: Future[Any]) -> None:  # in Ray's thread
            figure = done.result() if done.exception() is None else None
            self._usage = (time.monotonic(), figure)
            self._usage_asked = False
            self._usage_fetched.set()

        future.add_done_callback(took)

    async def _follow_notify_status(self) -> None:
        """Hand each STATUS the program sends on to :attr:`on_notify_status`, while it runs."""
        known: str | None = None
        running = True
        while running:
            try:
                status, running = await _result_of(
                    self._actor.notify_status.remote(self.number, known)
                )
            except Exception:
                return  # the actor is gone: the run's own end says so
            if status != known:
                known = status
                if self.on_notify_status is not None:
                    self.on_notify_status(status)

    # -- the actor, across runs -------------------------------------------------------

    def hand_over(self, placement: Mapping[str, Any]) -> tuple[Any, int] | None:
        """The actor and the next run's number, for the child's next run, if it is kept for it.

        It is not when this run's actor was lost (or ended), or when the
        next run asks for another placement.
        """
        if not self._kept or dict(placement) != self.placement:
            self.retire()
            return None
        self._kept = False
        self._actor_ended = True  # it is the next run's now
        return self._actor, self.number + 1

    def retire(self) -> None:
        """The supervisor will not run the child again after this run: end its actor.

        Said before the run has ended (while a shutdown stops it), the actor
        ends with the run.
        """
        self._retired = True
        if self._kept:
            self._end_actor()

    # -- stopping -----------------------------------------------------------------

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM to its process group, on its node)."""
        self._tell("terminate")

    def kill(self) -> None:
        """Stop the child now (SIGKILL to its process group, on its node)."""
        self._tell("kill")

    def _tell(self, what: str) -> None:
        if self.exited.is_set():
            return
        if not self._ray.is_initialized():
            return  # a call now would make Ray start a new cluster of its own
        with contextlib.suppress(Exception):  # the actor is gone: the run ends anyway
            spawned = self._spawned_future
            if self._spawned or self.number > 0 or (spawned is not None and spawned.done()):
                # (A kept actor is placed: it signals the child once it has one.)
                getattr(self._actor, what).remote(self.number)
            else:
                # Not placed yet (or still starting the child): there is no
                # child to signal, and the actor would take the call only
                # once placed. Ending the actor ends the run now.
                self._end_actor()

    def abandon(self) -> None:
        """Give up on a child that does not go away: kill its actor, stop following."""
        self._end_actor()
        if self._watch_scope is not None:
            self._watch_scope.cancel()


def _why_unplaced(ray: Any, placement: Mapping[str, Any]) -> str:
    """Whether any node of the cluster could ever hold *placement*, in words."""
    wanted = {str(k): float(v) for k, v in placement.get("resources", {}).items()}
    for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
        if key in placement:
            wanted[name] = float(placement[key])
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    except Exception:
        return "it waits for room on a node"
    if any(all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in nodes):
        return "it waits for room on a node (the others hold it)"
    return "no node of the cluster has that much; it waits until one joins"


def _status_from_payload(payload: dict[str, Any]) -> ExitStatus:
    error: BaseException | None = None
    if payload["error_type"] is not None:
        try:
            loaded = _load(payload["error"])
        except Exception:
            loaded = None  # its class is not importable here: a RemoteError stands in
        # The same rebuilding as for a local child's exception.
        error, _ = rebuild_error(
            (loaded, payload["error_type"], payload["error_text"], payload["traceback"] or "")
        )
    return ExitStatus(
        payload["exitcode"],
        payload["signum"],
        result=payload["result"],
        error=error,
        traceback=payload["traceback"],
        pid=payload["pid"],
        output=payload["output"],
        result_error=_load(payload.get("result_error")),
        start_error=_load(payload.get("start_error")),
        over_limit=_load(payload.get("over_limit")),
        signal_cause=payload.get("signal_cause"),
    )


async def _result_of(ref: Any) -> Any:
    """The result of a Ray call, awaited without blocking the event loop (it raises Ray's error)."""
    future = ref.future()
    with Wakeup() as wakeup:
        future.add_done_callback(wakeup.ring)
        while not future.done():
            await wakeup.wait()
    return future.result()


def _load(blob: bytes | None) -> Any:
    # From our own host actor, through Ray (which pickles everything anyway).
    return None if blob is None else pickle.loads(blob)  # noqa: S301  # trusted-pipe


def _reason(error: BaseException) -> str:
    """The gist of why Ray says an actor died, on one line."""
    text = str(error)
    reasons = re.findall(r"(The actor is dead because[^\n]*|The actor died[^\n]*)", text)
    gist = " ".join(reasons) if reasons else text
    return " ".join(gist.split())[:500]
