"""The log wire: length-prefixed frames, the handshake, and the client's side of both.

A frame is a 4-byte big-endian length and that many bytes of an object with
a type ``t``: UTF-8 JSON, or -- for records, where the server says it reads
it -- msgpack. msgpack decodes 3-4x faster (``benchmarks/bench_logging.py``,
figure L6), which is most of what the parent spends on a record beyond
handling it; it is an optional dependency (``gymnasiarch[msgpack]``), and
without it on both sides the records travel as JSON. The server tells the
two apart by the first byte: a message is a map, and no msgpack map starts
with a byte JSON text may start with.
Nothing on this wire is ever unpickled, and msgpack's extension types are
never turned into objects other than plain data.

The conversation, server first::

    server: {"t": "challenge", "nonce": <hex>}
    client: {"t": "hello", "ticket": <id>, "mac": <hex>, "levels": true}
    client: {"t": "records", "s": <n>, "r": [<record>, ...]}   (any number)
    server: {"t": "levels", "disable": <n>, "levels": {...}, "off": [...]}   (any number)
    client: {"t": "bye"}

A client whose hello says ``"levels": true`` follows the parent's logging
configuration: the server sends it a ``levels`` message (see
:mod:`gymnasiarch._wire.levels`) whenever the parent pushes a change, at any
time after the hello, and the client gives its loggers those levels. To
any other client the server sends nothing after the challenge.

``s`` (optional) is the sequence number of the frame's first record on this
connection, counting from 0: the server warns of a gap (records lost on the
way) and refuses a frame that goes back.

A record is an object of its fields, or (what gymnasiarch's own client
sends, to spare both sides the keys) a row of them in the order of
:data:`gymnasiarch._wire.records.ROW`; the parent checks either field by field.

``mac`` is HMAC-SHA256 over the nonce, keyed with the ticket's key, which is
itself derived from the server's per-run secret and the ticket id. A client
therefore proves it holds the key of one ticket, and the server knows from
the ticket alone which child it speaks to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

try:
    import msgpack
except ImportError:  # optional: records travel as JSON
    msgpack = None

HEADER = struct.Struct(">I")
#: The largest frame a server accepts, in bytes (a batch of records).
MAX_FRAME = 1 << 20
_NONCE_BYTES = 32


class WireError(Exception):
    """A peer broke the protocol; the message says how."""


def frame(payload: bytes) -> bytes:
    """The frame carrying *payload*: its length, then it (the one place a frame is made).

    The caller keeps *payload* within :data:`MAX_FRAME` (:func:`encode`
    checks; a batch of records is smaller by construction).
    """
    return HEADER.pack(len(payload)) + payload


def encode(message: dict[str, Any]) -> bytes:
    """One frame carrying *message*, in JSON.

    Raises:
        WireError: The encoded message is larger than :data:`MAX_FRAME`.
    """
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(payload) > MAX_FRAME:
        raise WireError(f"frame of {len(payload)} bytes exceeds the cap of {MAX_FRAME}")
    return frame(payload)


_R_KEY = b"\xa1r"  # msgpack's "r"


def records_frame(batch: list[bytes], first: int, *, packed: bool) -> bytes:
    """One ``records`` message of records encoded already, one by one, and *first*'s number.

    The records are JSON texts, or with *packed* msgpack values (only where
    :func:`reads_msgpack`); the message around them is built here without
    decoding them again: ``{"t":"records","s":<first>,"r":[...]}``. The
    sequence number lets the server tell a gap (or a replay) on the way.
    """
    if not packed:
        return frame(b'{"t":"records","s":%d,"r":[' % first + b",".join(batch) + b"]}")
    # The same message in msgpack: a map of three, whose records are an
    # array of the values as they were packed.
    count = len(batch)
    if count < 16:
        array = bytes((0x90 | count,))
    elif count < 1 << 16:
        array = b"\xdc" + count.to_bytes(2, "big")
    else:
        array = b"\xdd" + count.to_bytes(4, "big")
    head = msgpack_pack({"t": "records", "s": first})  # a fixmap of two: make it three
    return frame(bytes((head[0] + 1,)) + head[1:] + _R_KEY + array + b"".join(batch))


def frame_length(header: bytes | bytearray) -> int:
    """The payload length a header announces.

    Raises:
        WireError: It is over the cap.
    """
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise WireError(f"frame of {length} bytes announced, the cap is {MAX_FRAME}")
    return int(length)


_MSGPACK_MAPS = frozenset((*range(0x80, 0x90), 0xDE, 0xDF))  # fixmap, map 16, map 32


def reads_msgpack() -> bool:
    """True if this process can encode and decode msgpack (msgpack is installed)."""
    return msgpack is not None


def msgpack_pack(value: Any) -> bytes:
    """*value* in msgpack (only where :func:`reads_msgpack`)."""
    packed: bytes = msgpack.packb(value)
    return packed


def msgpack_unpack(data: bytes) -> Any:
    """The plain data in *data* (only where :func:`reads_msgpack`).

    Extension types stay inert ``ExtType`` tuples, which no field check accepts.
    """
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def decode(payload: bytes) -> dict[str, Any]:
    """The message in a frame's payload (JSON, or msgpack if installed).

    Raises:
        WireError: It is not an object with a string type ``t``.
    """
    if payload and payload[0] in _MSGPACK_MAPS and msgpack is not None:
        try:
            message = msgpack_unpack(payload)
        except Exception as error:  # its errors have no common base but Exception
            raise WireError(f"frame is not msgpack: {error}") from None
    else:
        try:
            message = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as error:
            raise WireError(f"frame is not JSON: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise WireError("frame is not an object with a type 't'")
    return message


def new_secret() -> bytes:
    """A fresh per-run secret."""
    return secrets.token_bytes(32)


def new_nonce() -> str:
    """A fresh challenge, as hex."""
    return secrets.token_hex(_NONCE_BYTES)


def ticket_key(secret: bytes, ticket: str) -> bytes:
    """The key of one ticket: only the server and that ticket's holder know it."""
    return hmac.new(secret, b"gymnasiarch-ticket\0" + ticket.encode(), hashlib.sha256).digest()


def answer(key: bytes, nonce: str) -> str:
    """The response to a challenge, as hex."""
    return hmac.new(key, b"gymnasiarch-log\0" + nonce.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, nonce: str, response: object) -> bool:
    """True if *response* answers *nonce* for *key* (compared in constant time)."""
    if not isinstance(response, str):
        return False
    return hmac.compare_digest(answer(key, nonce).encode(), response.encode())


# -- the client's side: blocking sockets, no event loop ----------------------------


def connect(
    address: str | list[Any] | tuple[str, int],
    ticket: str,
    key: bytes,
    *,
    timeout: float,
    on_connect: Callable[[], None] | None = None,
    hello: Mapping[str, Any] | None = None,
) -> socket.socket:
    """Connect to a server (a Unix path or ``[host, port]``) and answer its challenge.

    *on_connect* runs once the handshake is sent, before anything else is.
    *hello* adds fields to the hello (``{"levels": True}``, say).
    The returned socket is blocking, without a timeout.

    Raises:
        OSError: The server cannot be reached.
        WireError: The server did not speak the protocol.
    """
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    else:
        host, port = address
        sock = socket.create_connection((host, port), timeout=timeout)
    try:
        challenge = decode(receive_frame(sock))
        nonce = challenge.get("nonce")
        if challenge["t"] != "challenge" or not isinstance(nonce, str):
            raise WireError("the server did not send a challenge")  # noqa: TRY301
        mac = answer(key, nonce)
        sock.sendall(encode({**(hello or {}), "t": "hello", "ticket": ticket, "mac": mac}))
        sock.settimeout(None)
        if on_connect is not None:  # only now will the server hear us to the end
            on_connect()
    except BaseException:
        sock.close()
        raise
    return sock


def receive_frame(sock: socket.socket) -> bytes:
    """One frame's payload from a blocking socket.

    Raises:
        WireError: The server hung up or announced an oversized frame.
    """
    length = frame_length(_receive_exactly(sock, HEADER.size))
    return _receive_exactly(sock, length)


def _receive_exactly(sock: socket.socket, count: int) -> bytes:
    chunks: list[bytes] = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise WireError("the server hung up")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)
