"""A logging server that re-injects its clients' records, and the handler clients use.

Each child of a supervisor lives in its own process; its log records must
arrive in the parent's logging system, tagged with the child they came from.
:class:`LogServer` keeps the seed's signature ``LogServer(listen_host,
listen_port)`` (TCP) and gains a Unix-socket form, :meth:`LogServer.unix`,
which the supervisor uses: a socket in a private 0700 directory, removed on
stop. It re-injects every record with
``logging.getLogger(record.name).handle(record)``, so the parent's own
logging configuration decides levels, handlers and format. Its clients
follow that configuration: each is given the parent's per-logger levels
and sends only what the parent would hand to a handler; after a change,
:meth:`LogServer.push_levels` (or :func:`push_levels`, for every server of
the process) sends the new levels to the connected clients.

Unlike the original it never unpickles: records are length-prefixed frames
of plain data, msgpack where both sides have it and JSON otherwise (see
:mod:`gymnasiarch._wire.frames`), checked field by field. A client
must answer a challenge with the key of a ticket the server issued
(:meth:`LogServer.admit`) before a single record is accepted, and the
record's child is the ticket's, never what the payload claims. On the Unix
socket the peer's user id must be ours too. Whatever a client does wrong
closes that one connection with one warning; the others are served on.

:class:`LogClientHandler` is the child's side: it batches records and sends
them from a background thread, and :meth:`LogClientHandler.close` (called at
every exit of a supervised child) sends what is left and says goodbye, so a
record logged right before the end is never lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import (
    ByteStream,
    Listener,
    SocketAttribute,
    TaskGroup,
    TaskStatus,
)

from gymnasiarch._wire import frames
from gymnasiarch._wire.frames import WireError
from gymnasiarch._wire.levels import Configured
from gymnasiarch._wire.logclient import LOG_CONFIG_KEY, LogClientHandler
from gymnasiarch._wire.records import LoggerCache, ReinjectFailures, make_record, reinject
from gymnasiarch._wire.serving import (
    FrameReceiver,
    accept_forever,
    authenticate_hello,
    describe_peer,
    read_message,
)

__all__ = ["LOG_CONFIG_KEY", "LogClientHandler", "LogServer", "LogTicket", "push_levels"]

logger = logging.getLogger("gymnasiarch.logserver")

# Every server that serves now, for push_levels(); from any thread.
_serving: set[LogServer] = set()
_serving_lock = threading.RLock()  # re-entrant: a signal handler may push


def push_levels() -> None:
    """Send this process's logging configuration to the children of every log server.

    What :meth:`LogServer.push_levels` does, for each server that serves now
    (each supervisor's own, and any other). Safe to call from any thread,
    and from a signal handler.
    """
    with _serving_lock:
        servers = list(_serving)
    for server in servers:
        server.push_levels()


_UNIX_PATH_ROOM = 90  # bytes of directory that leave room for "/log.sock" in sun_path


class LogTicket:
    """Credentials for one client (one run of one child) and what became of them.

    Get one from :meth:`LogServer.admit`; hand :meth:`client_config` to the
    client (through its runtime configuration).

    Attributes:
        name: The child the ticket is for; its records are tagged with it.
        server: The server that issued it.
        finished: Set when the ticket's connection said goodbye or closed.
    """

    def __init__(self, server: LogServer, name: str) -> None:
        self.name = name
        self.id = frames.new_nonce()[:32]
        self._key = frames.ticket_key(server._secret, self.id)
        self.server = server
        self.connected = False
        self.finished = anyio.Event()
        self._generation = server._generation  # of the levels the client was given

    def client_config(self, level: int | None = None) -> dict[str, Any]:
        """Plain data a :class:`LogClientHandler` connects with (keep it private).

        Without *level*, the client follows this process's logging
        configuration: it is given the levels of the parent's loggers as
        they are now, so that it sends every record the parent would hand
        to a handler and no other, and (unless the server was made with
        ``live_levels=False``) it applies what :meth:`LogServer.push_levels`
        sends later. A supervisor's children are configured so.

        Args:
            level: Set the client's root logger to this level instead, and
                follow nothing (the seed's form).
        """
        config: dict[str, Any] = {
            "address": self.server.client_address,
            "ticket": self.id,
            "key": self._key.hex(),
            "level": level,
            "msgpack": self.server._reads_msgpack,
        }
        if level is None:
            self._generation = self.server._generation
            config["levels"] = Configured.now().for_child(self.name)
            config["live"] = self.server.live_levels
        return config

    def revoke(self) -> None:
        """Refuse any further connection with this ticket."""
        self.server._tickets.pop(self.id, None)


class LogServer:
    """A simple, internal logging server that re-injects remote log messages.

    ``LogServer(listen_host, listen_port)`` listens on TCP (port 0 picks a
    free one; :attr:`listen_port` tells the bound port after start);
    :meth:`LogServer.unix` on a Unix socket in a private directory. Use it
    as ``async with LogServer(...) as server:``, with :meth:`start` and
    :meth:`stop` (from the same task), or as a task:
    ``await task_group.start(server.serve)``.

    Args:
        listen_host: The address to listen on; use a loopback address unless
            clients on other machines must reach it.
        listen_port: The TCP port; 0 picks a free one.
        handshake_timeout: Seconds a client has to answer the challenge.
        frame_timeout: Seconds a client may take to send the rest of a frame
            it has begun.
        drain_timeout: Seconds :meth:`stop` waits for open connections to
            say goodbye before it closes them.
        live_levels: Whether clients follow the level changes
            :meth:`push_levels` sends. They connect when they start for
            that (a thread and a connection per child, about 0.5 MiB);
            with ``False`` they apply the parent's levels of their start
            only, and connect on their first record.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        *,
        handshake_timeout: float = 5.0,
        frame_timeout: float = 10.0,
        drain_timeout: float = 5.0,
        live_levels: bool = True,
    ) -> None:
        if not isinstance(listen_port, int) or not 0 <= listen_port <= 65535:
            raise ValueError(f"listen_port: expected a port number 0..65535, got {listen_port!r}")
        if not isinstance(live_levels, bool):
            raise TypeError(f"live_levels: expected True or False, got {live_levels!r}")
        self.live_levels = live_levels
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self.drain_timeout = drain_timeout
        self._unix_path: Path | None = None
        self._secret = frames.new_secret()
        # Told to clients: they send records as msgpack only if we read it.
        self._reads_msgpack = frames.reads_msgpack()
        self._tickets: dict[str, LogTicket] = {}
        self._accepting: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._task_group: TaskGroup | None = None
        self._connections: TaskGroup | None = None
        # Level pushes: push_levels() (any thread) writes a byte to a pipe,
        # whose reader task counts a new generation and wakes the followers.
        self._generation = 0
        self._levels_changed: anyio.Event | None = None
        self._configured: tuple[int, Configured] | None = None  # of a generation
        self._wake: int | None = None  # the pipe's write end
        self._wake_lock = threading.RLock()  # re-entrant: a signal handler may push

    @classmethod
    def unix(cls, **options: Any) -> LogServer:
        """A server on a Unix socket in a fresh private (0700) directory.

        The directory and socket are removed when the server stops.
        """
        server = cls("localhost", 0, **options)
        folder = tempfile.mkdtemp(prefix="gymnasiarch-")
        if len(folder) > _UNIX_PATH_ROOM:  # a long $TMPDIR: a socket path has ~107 bytes
            os.rmdir(folder)
            folder = tempfile.mkdtemp(prefix="gymnasiarch-", dir="/tmp")
        server._unix_path = Path(folder) / "log.sock"
        return server

    @property
    def client_address(self) -> str | list[Any]:
        """Where clients connect: a socket path, or ``[host, port]``."""
        if self._unix_path is not None:
            return str(self._unix_path)
        return [self.listen_host, self.listen_port]

    def admit(self, name: str) -> LogTicket:
        """Issue a ticket for one client whose records will be tagged *name*."""
        ticket = LogTicket(self, name)
        self._tickets[ticket.id] = ticket
        return ticket

    def push_levels(self) -> None:
        """Send this process's logging configuration to every connected child that follows it.

        Python's logging has no hook for a change of level: call this after
        changing levels, handlers, ``logging.disable`` or ``disabled`` while
        children run (:func:`gymnasiarch.logging.set_level` does both), and
        each child's loggers take the new levels within milliseconds, without
        a restart. A child started later gets the configuration of its start.
        Children follow it when their ticket's :meth:`LogTicket.client_config`
        was made without a level, as a supervisor's are.

        Returns at once, from any thread (and from a signal handler): the
        server's own task sends the levels. Does nothing while the server
        does not serve.
        """
        with self._wake_lock:
            if self._wake is not None:
                with contextlib.suppress(BlockingIOError):  # full: a push is pending anyway
                    os.write(self._wake, b"\0")

    # -- running --------------------------------------------------------------

    async def __aenter__(self) -> LogServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start listening; returns once clients can connect."""
        group = anyio.create_task_group()
        await group.__aenter__()
        try:
            await group.start(self.serve)
        except BaseException:
            await group.__aexit__(*sys.exc_info())
            raise
        self._task_group = group

    async def stop(self) -> None:
        """Stop accepting, let open connections finish (bounded), and clean up."""
        if self._accepting is not None:
            self._accepting.cancel()
        if self._task_group is not None:
            group, self._task_group = self._task_group, None
            await group.__aexit__(None, None, None)
        elif self._stopped is not None:
            await self._stopped.wait()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`stop` or cancellation."""
        self._stopped = anyio.Event()
        wake_read = -1
        try:
            listener = await self._listen()
            wake_read, self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._levels_changed = anyio.Event()
            with _serving_lock:
                _serving.add(self)
            async with anyio.create_task_group() as connections:
                self._connections = connections
                try:
                    with anyio.CancelScope() as self._accepting:
                        task_status.started()
                        handle = self._serve_connection
                        async with anyio.create_task_group() as serving:
                            serving.start_soon(self._count_pushes, wake_read)
                            await accept_forever(listener, handle, connections, "log server")
                finally:
                    with anyio.CancelScope(shield=True):
                        await listener.aclose()
                # Stopped: give open connections a moment to say goodbye.
                connections.cancel_scope.deadline = anyio.current_time() + self.drain_timeout
        finally:
            with _serving_lock:
                _serving.discard(self)
            with self._wake_lock:
                if self._wake is not None:
                    wake_write, self._wake = self._wake, None
                    os.close(wake_write)
            if wake_read >= 0:
                os.close(wake_read)
            self._connections = None
            self._remove_socket_dir()
            self._stopped.set()

    async def _count_pushes(self, wake_read: int) -> None:
        """Each push_levels() (a byte on the pipe) is a new generation of levels."""
        while True:
            await anyio.wait_readable(wake_read)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)  # pushes made meanwhile are one
            self._generation += 1
            changed, self._levels_changed = self._levels_changed, anyio.Event()
            if changed is not None:
                changed.set()

    def _levels_for(self, child: str) -> dict[str, Any]:
        """The current generation's levels for *child*: the loggers looked at once a push."""
        if self._configured is None or self._configured[0] != self._generation:
            self._configured = (self._generation, Configured.now())
        return self._configured[1].for_child(child)

    async def _listen(self) -> Listener[Any]:
        if self._unix_path is not None:
            return await anyio.create_unix_listener(self._unix_path, mode=0o600)
        listener = await anyio.create_tcp_listener(
            local_host=self.listen_host, local_port=self.listen_port
        )
        self.listen_port = listener.listeners[0].extra(SocketAttribute.local_port)
        return listener

    def _remove_socket_dir(self) -> None:
        if self._unix_path is not None:
            shutil.rmtree(self._unix_path.parent, ignore_errors=True)

    # -- one connection -------------------------------------------------------

    async def _serve_connection(self, stream: ByteStream) -> None:
        peer = describe_peer(stream)
        async with stream:
            try:
                await self._converse(stream)
            except WireError as error:
                logger.warning("log connection from %s closed: %s", peer, error)
            except TimeoutError:
                logger.warning("log connection from %s closed: it stalled", peer)
            except anyio.IncompleteRead:
                logger.warning("log connection from %s closed: it ended inside a frame", peer)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
                # anyio's errors say nothing in their text: their name does.
                logger.warning(
                    "log connection from %s failed: %s", peer, str(error) or type(error).__name__
                )
            except Exception:  # a filter or handler of the parent's raised, say
                # One connection's trouble must not take the server down.
                logger.exception("log connection from %s closed: handling it failed", peer)

    async def _converse(self, stream: ByteStream) -> None:
        ticket_id, received, hello = await authenticate_hello(
            stream,
            lambda ticket: ticket_of._key if (ticket_of := self._tickets.get(ticket)) else None,
            handshake_timeout=self.handshake_timeout,
            frame_timeout=self.frame_timeout,
        )
        ticket = self._tickets[ticket_id]
        if ticket.connected:
            raise WireError(f"ticket of {ticket.name!r} is in use already")
        ticket.connected = True
        following = anyio.CancelScope()
        if hello.get("levels") is True and self._connections is not None:
            # Its own task: a send must never hold up the records' reading.
            self._connections.start_soon(self._send_levels, stream, ticket, following)
        try:
            await self._receive_records(received, ticket)
        finally:
            following.cancel()
            ticket.finished.set()

    async def _send_levels(
        self, stream: ByteStream, ticket: LogTicket, scope: anyio.CancelScope
    ) -> None:
        """Send the client each new generation of levels, until its connection ends."""
        with scope:
            known = ticket._generation
            try:
                while True:
                    if known != self._generation:
                        known = self._generation
                        levels = self._levels_for(ticket.name)
                        await stream.send(frames.encode({"t": "levels", **levels}))
                    changed = self._levels_changed
                    assert changed is not None  # set while serving
                    await changed.wait()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return  # the connection ended: its reader says how, if it matters
            except Exception:  # a snapshot over the frame cap, say: the records go on
                logger.exception("cannot send logging levels to child %r", ticket.name)

    async def _receive_records(self, received: FrameReceiver, ticket: LogTicket) -> None:
        expected = 0  # the sequence number of the next record
        logger_named = LoggerCache()
        with ReinjectFailures(ticket.name) as failures:
            while True:
                message = await read_message(
                    received, frame_timeout=self.frame_timeout, idle_ok=True
                )
                if message is None or message["t"] == "bye":
                    return
                if message["t"] != "records" or not isinstance(message.get("r"), list):
                    raise WireError(f"unexpected message {message['t']!r}")
                first = message.get("s", expected)
                if type(first) is not int or first < expected:
                    raise WireError(f"records out of order: {first!r}, expected {expected}")
                if first > expected:
                    logger.warning(
                        "%d records of child %r were lost on the way", first - expected, ticket.name
                    )
                expected = first + len(message["r"])
                # One record at a time: a malformed one closes the connection
                # after the records before it were handled.
                child = ticket.name
                for data in message["r"]:
                    record = make_record(data, child)
                    try:
                        reinject(record, logger_named(record.name))
                    except Exception as error:  # a filter or handler of the parent's raised
                        # That record's loss, as in the parent's own logging
                        # call, not the connection's: the others go on.
                        failures.note(record, error)
