"""The server's side of authenticated conversations in frames (log server, control socket).

The server (anyio) sends a challenge, reads the client's hello and checks
its MAC against the key of the ticket it names; it cuts frames exactly from
what it receives, with a cap on their size and a deadline once a frame has
begun. The client's side, blocking sockets that a child's sender thread and
a short command-line call can use without an event loop, is
:func:`gymnasiarch._wire.frames.connect`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteStream, SocketAttribute, TaskGroup

from gymnasiarch import _platform
from gymnasiarch._wire import frames
from gymnasiarch._wire.frames import WireError

logger = logging.getLogger("gymnasiarch.channel")

#: accept(2)'s errors that say this process or the system is out of a
#: resource for now (descriptors, memory, buffers): the server pauses and
#: tries again, as trio's ``serve_listeners`` does. Any other error ends it.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# accept(2)'s errors about one connection that died while it queued (or a
# firewall refused): that one is skipped, the next accepted at once, as
# trio's SocketListener.accept does (anyio's asyncio listener passes them on).
_GONE_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
# Seconds of the first pause after a capacity error; each error in a row
# doubles it, up to the bound: descriptors come back when connections end,
# which no event tells us, and a full table must not get a warning a tick.
_ACCEPT_PAUSE = 0.1
_ACCEPT_PAUSE_MAX = 1.0
_HELLO_BYTES = 4096  # a hello is small: a stranger may not make us buffer a MiB
_CHUNK_BYTES = 256 * 1024  # the most one receive takes: a client's whole frame, often

# -- the server's side ------------------------------------------------------------


async def accept_forever(
    listener: Any, handle: Callable[[Any], Coroutine[Any, Any, None]], group: TaskGroup, what: str
) -> None:
    """Accept connections on *listener* (and the listeners of a multi-listener) for ever.

    Unlike ``Listener.serve``, an accept that fails for want of a resource
    (:data:`CAPACITY_ERRNOS`: out of file descriptors, say) is logged and
    retried after a pause that grows, bounded, while the errors go on: it
    must not end the server, and with it the supervisor whose task group
    it runs in. Any other error (a closed or broken listener) is raised:
    retrying it would spin for ever.
    """
    async with anyio.create_task_group() as accepting:
        for one in getattr(listener, "listeners", [listener]):
            accepting.start_soon(_accept_on, one, handle, group, what)


async def _accept_on(
    listener: Any, handle: Callable[[Any], Coroutine[Any, Any, None]], group: TaskGroup, what: str
) -> None:
    pause = _ACCEPT_PAUSE
    while True:
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as error:
            cause = _os_error(error)
            code = None if cause is None else cause.errno
            if code in _GONE_ERRNOS:
                continue
            if code not in CAPACITY_ERRNOS:
                raise
            logger.warning(
                "%s: accepting a connection failed (%s); trying again in %.2g s", what, cause, pause
            )
            await anyio.sleep(pause)  # a pause for resources to come back, not a poll
            pause = min(2 * pause, _ACCEPT_PAUSE_MAX)
            continue
        pause = _ACCEPT_PAUSE
        group.start_soon(handle, stream)


def _os_error(error: BaseException) -> OSError | None:
    """The system's error behind a failed accept (anyio wraps it in BrokenResourceError)."""
    if isinstance(error, OSError):
        return error
    if isinstance(error.__cause__, OSError):
        return error.__cause__
    return None


class FrameReceiver:
    """The receiving side of one connection, cut into frames.

    anyio's ``BufferedByteReceiveStream`` asks the socket for exactly the
    bytes a read still misses, so each frame takes at least two receives
    (its header, then its payload), each a trip through the event loop.
    Here a receive takes whatever has arrived, up to a limit: often a whole
    frame, or several.
    """

    def __init__(self, stream: ByteReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    def __bool__(self) -> bool:
        """True while bytes of the next frame are buffered."""
        return bool(self._buffer)

    async def fill(self, limit: int) -> None:
        """Receive what has arrived, at most *limit* bytes (``anyio.EndOfStream`` at the end)."""
        self._buffer += await self._stream.receive(limit)

    def whole_frame(self, max_size: int) -> bytes | None:
        """The next frame's payload if all of it is buffered already, else None.

        Raises:
            WireError: Its header announces more than *max_size* bytes.
        """
        buffered = len(self._buffer)
        if buffered < frames.HEADER.size:
            return None
        length = frames.frame_length(self._buffer[: frames.HEADER.size])
        if length > max_size:
            raise WireError(f"frame of {length} bytes announced, the cap here is {max_size}")
        end = frames.HEADER.size + length
        if buffered < end:
            return None
        payload = bytes(self._buffer[frames.HEADER.size : end])
        del self._buffer[:end]
        return payload

    async def take(self, count: int, limit: int) -> bytes:
        """The next *count* bytes, receiving at most *limit* bytes at a time.

        Raises:
            anyio.IncompleteRead: The stream ended first.
        """
        while len(self._buffer) < count:
            try:
                await self.fill(limit)
            except anyio.EndOfStream:
                raise anyio.IncompleteRead from None
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken


async def read_message(
    received: FrameReceiver,
    *,
    frame_timeout: float,
    idle_ok: bool = False,
    max_size: int = frames.MAX_FRAME,
) -> dict[str, Any] | None:
    """The next message; ``None`` at a clean end of stream between frames (if *idle_ok*).

    Raises:
        WireError: A malformed or oversized frame, or an end of stream
            where a message was due.
        TimeoutError: A frame begun but not finished within *frame_timeout*.
        anyio.IncompleteRead: The stream ended inside a frame.
    """
    # A stranger may make us hold at most two receives beyond its frame's cap.
    limit = min(_CHUNK_BYTES, frames.HEADER.size + max_size)
    if not received:
        try:
            await received.fill(limit)
        except anyio.EndOfStream:
            if idle_ok:
                return None
            raise WireError("the client hung up") from None
    payload = received.whole_frame(max_size)
    if payload is not None:  # the usual case: no wait, so no deadline to set
        return frames.decode(payload)
    with anyio.fail_after(frame_timeout):
        length = frames.frame_length(await received.take(frames.HEADER.size, limit))
        if length > max_size:
            raise WireError(f"frame of {length} bytes announced, the cap here is {max_size}")
        payload = await received.take(length, limit) if length else b""
    return frames.decode(payload)


async def authenticate(
    stream: ByteStream,
    key_of: Callable[[str], bytes | None],
    *,
    handshake_timeout: float,
    frame_timeout: float,
) -> tuple[str, FrameReceiver]:
    """Challenge the client; return the ticket it proved it holds, and its stream.

    Raises:
        WireError: The peer is another user, or the handshake failed.
        TimeoutError: The client did not answer within *handshake_timeout*.
    """
    ticket, received, _ = await authenticate_hello(
        stream, key_of, handshake_timeout=handshake_timeout, frame_timeout=frame_timeout
    )
    return ticket, received


async def authenticate_hello(
    stream: ByteStream,
    key_of: Callable[[str], bytes | None],
    *,
    handshake_timeout: float,
    frame_timeout: float,
) -> tuple[str, FrameReceiver, dict[str, Any]]:
    """:func:`authenticate`, which also returns the client's hello (what it asked for).

    Raises:
        WireError: The peer is another user, or the handshake failed.
        TimeoutError: The client did not answer within *handshake_timeout*.
    """
    check_peer_user(stream)
    nonce = frames.new_nonce()
    await stream.send(frames.encode({"t": "challenge", "nonce": nonce}))
    received = FrameReceiver(stream)
    with anyio.fail_after(handshake_timeout):
        hello = await read_message(received, frame_timeout=frame_timeout, max_size=_HELLO_BYTES)
    if hello is None or hello["t"] != "hello":
        raise WireError("the handshake failed")
    ticket = str(hello.get("ticket"))
    key = key_of(ticket)
    if key is None or not frames.verify(key, nonce, hello.get("mac")):
        raise WireError("the handshake failed")
    return ticket, received, hello


def describe_peer(stream: ByteStream) -> str:
    """``host:port`` of a TCP peer, ``pid N`` of a Unix one, for warnings."""
    with contextlib.suppress(Exception):
        remote = stream.extra(SocketAttribute.remote_address)
        if isinstance(remote, tuple):
            return f"{remote[0]}:{remote[1]}"
    with contextlib.suppress(Exception):
        credentials = _platform.peer_credentials(stream.extra(SocketAttribute.raw_socket))
        if credentials is not None:
            return f"pid {credentials[0]}"
    return "a local client"


def check_peer_user(stream: ByteStream) -> None:
    """On a Unix socket, only our own user may talk to us.

    Raises:
        WireError: The peer runs as another user.
    """
    if stream.extra(SocketAttribute.family, None) != socket.AF_UNIX:
        return
    uid = _platform.peer_is_other_user(stream.extra(SocketAttribute.raw_socket))
    if uid is not None:
        raise WireError(f"peer runs as user {uid}, not as us")
