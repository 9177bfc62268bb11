"""The server's side of authenticated conversations in frames (log server, control socket).

The server (anyio) sends a challenge, reads the client's hello and checks
its MAC against the key of the ticket it names; it cuts frames exactly from
what it receives, with a cap on their size and a deadline once a frame has
begun. The client's side, blocking sockets that a child's sender thread and
a short command-line call can use without an event loop, is
:func:`gymnasiarch._wire.connect`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteStream, SocketAttribute, TaskGroup

from gymnasiarch import _wire
from gymnasiarch._wire import WireError

logger = logging.getLogger("gymnasiarch.channel")

_ACCEPT_PAUSE = 0.1  # seconds to wait after a failed accept before the next
_HELLO_BYTES = 4096  # a hello is small: a stranger may not make us buffer a MiB
_CHUNK_BYTES = 256 * 1024  # the most one receive takes: a client's whole frame, often

# -- the server's side ------------------------------------------------------------


async def accept_forever(
    listener: Any, handle: Callable[[Any], Coroutine[Any, Any, None]], group: TaskGroup, what: str
) -> None:
    """Accept connections on *listener* (and the listeners of a multi-listener) for ever.

    Unlike ``Listener.serve``, a failed accept (out of file descriptors,
    say) is logged and retried after a pause: it must not end the server,
    and with it the supervisor whose task group it runs in.
    """
    async with anyio.create_task_group() as accepting:
        for one in getattr(listener, "listeners", [listener]):
            accepting.start_soon(_accept_on, one, handle, group, what)


async def _accept_on(
    listener: Any, handle: Callable[[Any], Coroutine[Any, Any, None]], group: TaskGroup, what: str
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as error:
            logger.warning("%s: accepting a connection failed (%s); trying again", what, error)
            await anyio.sleep(_ACCEPT_PAUSE)  # a pause after an error, not a poll
            continue
        group.start_soon(handle, stream)


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
        if buffered < _wire.HEADER.size:
            return None
        length = _wire.frame_length(self._buffer[: _wire.HEADER.size])
        if length > max_size:
            raise WireError(f"frame of {length} bytes announced, the cap here is {max_size}")
        end = _wire.HEADER.size + length
        if buffered < end:
            return None
        payload = bytes(self._buffer[_wire.HEADER.size : end])
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
    max_size: int = _wire.MAX_FRAME,
) -> dict[str, Any] | None:
    """The next message; ``None`` at a clean end of stream between frames (if *idle_ok*).

    Raises:
        WireError: A malformed or oversized frame, or an end of stream
            where a message was due.
        TimeoutError: A frame begun but not finished within *frame_timeout*.
        anyio.IncompleteRead: The stream ended inside a frame.
    """
    # A stranger may make us hold at most two receives beyond its frame's cap.
    limit = min(_CHUNK_BYTES, _wire.HEADER.size + max_size)
    if not received:
        try:
            await received.fill(limit)
        except anyio.EndOfStream:
            if idle_ok:
                return None
            raise WireError("the client hung up") from None
    payload = received.whole_frame(max_size)
    if payload is not None:  # the usual case: no wait, so no deadline to set
        return _wire.decode(payload)
    with anyio.fail_after(frame_timeout):
        length = _wire.frame_length(await received.take(_wire.HEADER.size, limit))
        if length > max_size:
            raise WireError(f"frame of {length} bytes announced, the cap here is {max_size}")
        payload = await received.take(length, limit) if length else b""
    return _wire.decode(payload)


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
    nonce = _wire.new_nonce()
    await stream.send(_wire.encode({"t": "challenge", "nonce": nonce}))
    received = FrameReceiver(stream)
    with anyio.fail_after(handshake_timeout):
        hello = await read_message(received, frame_timeout=frame_timeout, max_size=_HELLO_BYTES)
    if hello is None or hello["t"] != "hello":
        raise WireError("the handshake failed")
    ticket = str(hello.get("ticket"))
    key = key_of(ticket)
    if key is None or not _wire.verify(key, nonce, hello.get("mac")):
        raise WireError("the handshake failed")
    return ticket, received, hello


def describe_peer(stream: ByteStream) -> str:
    """``host:port`` of a TCP peer, ``pid N`` of a Unix one, for warnings."""
    with contextlib.suppress(Exception):
        remote = stream.extra(SocketAttribute.remote_address)
        if isinstance(remote, tuple):
            return f"{remote[0]}:{remote[1]}"
    with contextlib.suppress(Exception):
        pid, _, _ = _peer_credentials(stream)
        return f"pid {pid}"
    return "a local client"


def _peer_credentials(stream: ByteStream) -> tuple[int, int, int]:
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
    data = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def check_peer_user(stream: ByteStream) -> None:
    """On a Unix socket, only our own user may talk to us.

    Raises:
        WireError: The peer runs as another user.
    """
    if stream.extra(SocketAttribute.family, None) != socket.AF_UNIX:
        return
    if not hasattr(socket, "SO_PEERCRED"):  # pragma: no cover - Linux has it
        return
    _, uid, _ = _peer_credentials(stream)
    if uid != os.getuid():
        raise WireError(f"peer runs as user {uid}, not as us")
