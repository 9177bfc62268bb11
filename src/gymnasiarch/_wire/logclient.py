"""The child's side of the log pipeline: a handler that sends records to a log server.

:class:`LogClientHandler` talks to a :class:`~gymnasiarch.logserver.LogServer`.

Separate from the server so that a child, which needs only this, does not
import the server's event-loop machinery (a child start imports it; ~25 ms
of a spawned child's boot on the machines we measure).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from gymnasiarch._platform import signals_blocked
from gymnasiarch._wire import frames
from gymnasiarch._wire.frames import WireError
from gymnasiarch._wire.levels import apply_levels
from gymnasiarch._wire.records import ROW, record_to_row

#: The runtime-config key under which a child finds its log client config.
LOG_CONFIG_KEY = "gymnasiarch.logserver"
# Made once: json.dumps with options builds a new encoder on every call.
_RECORD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=repr)
_BATCH_BYTES = 256 * 1024  # a sender's frames stay well under the cap
_RECORD_BYTES = frames.MAX_FRAME // 2  # a bigger record has its message cut
#: The longest captured JSON line a Ray host keeps whole (with its fields), if
#: its record fits (:func:`carried_whole`): no size of line is enough alone, as
#: a record holds the line's text up to twice (a line without a message field
#: is the message, its fields the extras) and encoding grows it (escaped
#: quotes: 3x the line in JSON; bytes that are not UTF-8: 6x).
RELAYED_LINE_BYTES = _RECORD_BYTES // 2 - 16 * 1024
_MAX_QUEUED_BYTES = 16 * 2**20  # ~150,000 typical records waiting to be sent
# Seconds a handler that follows the parent's levels waits before it
# connects without a record to send (see _send_forever).
_CONNECT_DELAY = 0.05


class LogClientHandler(logging.Handler):
    """Send records to a :class:`LogServer`, batched, from a background thread.

    :meth:`emit` only queues; the thread (started by the first record, or
    at once where it follows the parent's levels) connects, answers the
    challenge and sends whatever has queued up as one frame. :meth:`flush`
    waits until everything emitted so far is sent; :meth:`close` also says
    goodbye and stops the thread. If the server cannot be reached, records
    go to stderr instead, so none is lost silently. A process forked from
    the client (without exec) writes its records to stderr: the connection
    belongs to its parent.

    The queue is bounded: a child that logs faster than the server takes
    its records waits in :meth:`emit` (at most ``close_timeout`` at a time)
    rather than holding an ever larger backlog; a server that takes nothing
    for that long is given up, and the records go to stderr.

    A handler that follows the parent's levels (*follow_levels*) connects
    50 ms after it is made (at once if a record comes first), not only on
    its first record, so that the levels the server pushes
    (:meth:`LogServer.push_levels`) reach a child that has sent nothing yet;
    a second thread reads them from the connection and gives this process's
    loggers those levels. (Not the sender thread: waiting on the socket and
    an eventfd instead of the condition made its batches smaller and cost
    the parent ~1.6x the CPU per record, ``benchmarks/bench_logging.py`` L5.)

    Args:
        config: What :meth:`LogTicket.client_config` returned.
        on_connect: Called (in the sender thread) once the connection is
            made, before anything is sent on it.
        close_timeout: Seconds :meth:`close` waits for the last records to
            go, and :meth:`emit` for room in a full queue.
        max_queued_bytes: How many bytes of encoded records may wait to be sent.
        follow_levels: Apply the levels the server pushes to this process's
            loggers (the handler on a child's root logger does).
        outlives_close: :meth:`close` only flushes, and :meth:`finish` ends
            the connection. For the handler of a supervised child, whose
            code may configure logging itself: ``dictConfig`` and
            ``basicConfig(force=True)`` close every handler there is, and
            the child's records must still reach the parent afterwards
            (while the handler stays on the root logger).
        errors_sent_at_once: :meth:`emit` of a record at ERROR or above
            returns once it is sent (see there). Off for a relay that emits
            from an event loop (a Ray host's), which must never wait.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        on_connect: Callable[[], None] | None = None,
        close_timeout: float = 10.0,
        max_queued_bytes: int = _MAX_QUEUED_BYTES,
        *,
        follow_levels: bool = False,
        outlives_close: bool = False,
        errors_sent_at_once: bool = True,
    ) -> None:
        super().__init__()
        self._address = config["address"]
        self._ticket = str(config["ticket"])
        self._key = bytes.fromhex(config["key"])
        self._on_connect = on_connect
        self._close_timeout = close_timeout
        # msgpack where both sides read it: the parent decodes it 3-4x faster.
        packs = bool(config.get("msgpack")) and frames.reads_msgpack()
        self._encode = _pack_record if packs else _encode_record
        self._packs = packs
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._max_queued_bytes = max_queued_bytes
        self._cond = threading.Condition()
        self._queued = 0
        self._done = 0  # sent, or written to stderr
        self._thread: threading.Thread | None = None
        self._closing = False
        self._sender_waits = False  # the sender thread waits for records: notify it
        self._stderr_only = False
        self._follow_levels = follow_levels
        self._outlives_close = outlives_close
        self._errors_at_once = errors_sent_at_once
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(reference))
        if follow_levels:
            with self._cond:
                self._start_sender()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue *record*; the sender thread sends it soon.

        A record at ERROR or above is on the socket when this returns (or
        after ``close_timeout`` at most): the last words of a child that
        then dies without running its exit code (``os._exit``, SIGKILL, a
        crash in C) still arrive. The others go in batches.
        """
        try:
            item = self._encode(record)
        except Exception:
            self.handleError(record)
            return
        level = record.levelno
        self._queue(
            item, wait=self._errors_at_once and type(level) is int and level >= logging.ERROR
        )

    def _queue(self, item: bytes, wait: bool = False) -> None:
        with self._cond:
            if self._pending_bytes > self._max_queued_bytes and self._thread is not None:
                self._wait_for_room()
            if self._stderr_only or self._closing:
                _to_stderr([item])
                return
            self._pending.append(item)
            self._pending_bytes += len(item)
            self._queued += 1
            if self._thread is None:
                self._start_sender()
            if self._sender_waits:  # else it takes this record with its next batch
                self._cond.notify()
            if wait and threading.current_thread() is not self._thread:
                target = self._queued
                self._cond.wait_for(lambda: self._done >= target, timeout=self._close_timeout)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """A record that cannot be sent (a bad ``%`` format, say): one record that says so.

        Not logging's traceback on stderr, which would reach the parent as
        one line of output per line of the traceback. Silent where
        ``logging.raiseExceptions`` is false, as logging's own is.
        """
        if not logging.raiseExceptions:
            return
        error = sys.exc_info()[1]
        note = logging.LogRecord(
            str(getattr(record, "name", "root")),
            logging.WARNING,
            str(getattr(record, "pathname", "")),
            int(getattr(record, "lineno", 0) or 0),
            "a record of this logger could not be sent (%s: %s): msg=%.200r args=%.200r",
            (
                type(error).__name__,
                error,
                getattr(record, "msg", None),
                getattr(record, "args", None),
            ),
            None,
        )
        note.exc_text = "".join(traceback.format_exception(error)).rstrip() if error else None
        try:
            self._queue(self._encode(note))
        except Exception:  # not even that: logging's own report, as a last resort
            super().handleError(record)

    def _start_sender(self) -> None:
        """Start the sender thread (holding the condition)."""
        self._thread = threading.Thread(
            target=self._send_forever, name="gymnasiarch-log-sender", daemon=True
        )
        # Neither it nor the level follower it starts may take the child's
        # SIGTERM: the main thread's handler would wait for its sleep to end.
        with signals_blocked():
            self._thread.start()

    def _wait_for_room(self) -> None:
        """Wait (holding the condition) until the sender took a batch, or give up on it."""
        if threading.current_thread() is self._thread:
            return  # the sender logging (a library inside sendall, say) cannot wait for itself
        if not self._cond.wait_for(
            lambda: self._pending_bytes <= self._max_queued_bytes or self._stderr_only,
            timeout=self._close_timeout,
        ):
            # (The condition's lock is re-entrant: _give_up may take it again.)
            self._give_up("the log server takes no records; logging to stderr", [])

    @property
    def idle(self) -> bool:
        """True while nothing was emitted yet: :meth:`close` then returns at once."""
        return self._thread is None

    def flush(self) -> None:
        """Wait until every record emitted so far is sent (at most ``close_timeout``)."""
        with self._cond:
            target = self._queued
            self._cond.wait_for(lambda: self._done >= target, timeout=self._close_timeout)

    def close(self) -> None:
        """Send what is left, say goodbye, stop the thread (see *outlives_close*)."""
        if self._outlives_close:
            self.flush()
            super().close()  # out of logging's list of handlers to close at exit
            return
        self.finish()

    def finish(self) -> None:
        """Send what is left, say goodbye, stop the thread.

        Waits while the server takes records, however long that is; gives
        up on it (what is left goes to stderr) once it has taken nothing for
        ``close_timeout``.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            with self._cond:
                while self._done < self._queued:
                    moved = lambda done=self._done: self._done != done  # noqa: E731
                    if not self._cond.wait_for(moved, timeout=self._close_timeout):
                        break  # nothing taken for close_timeout
            thread.join(self._close_timeout)  # the goodbye
            if thread.is_alive():  # the server does not read: what is left goes to stderr
                self._give_up("the log server stopped reading; logging to stderr", [])
        super().close()

    # -- the sender thread ------------------------------------------------------

    def _send_forever(self) -> None:
        if self._follow_levels:
            with self._cond:
                # Not while the child starts: its first line runs sooner. A
                # push meanwhile is sent on connecting (the server knows the
                # levels the ticket was given), a record connects at once.
                self._cond.wait_for(lambda: self._pending or self._closing, _CONNECT_DELAY)
                if self._closing and not self._pending:
                    return  # ended before it said anything: nothing to connect for
        try:
            sock = self._connect()
        except (OSError, WireError, ValueError) as error:
            self._give_up(f"cannot reach the log server ({error}); logging to stderr", [])
            return
        follower = None
        if self._follow_levels:
            follower = threading.Thread(
                target=_follow_levels, args=(sock,), name="gymnasiarch-log-levels", daemon=True
            )
            follower.start()
        batch: list[bytes] = []
        sent = 0  # records sent on this connection: the next batch's sequence number
        try:
            while True:
                with self._cond:
                    if not (self._pending or self._closing):
                        self._sender_waits = True
                        self._cond.wait_for(lambda: self._pending or self._closing)
                        self._sender_waits = False
                    batch = self._take_batch()
                if not batch:
                    break  # closing, and nothing is left
                sock.sendall(frames.records_frame(batch, sent, packed=self._packs))
                sent += len(batch)
                with self._cond:
                    self._done += len(batch)
                    self._cond.notify_all()
                batch = []
            sock.sendall(frames.encode({"t": "bye"}))
        except OSError as error:
            # The batch in flight may not have arrived: it goes to stderr too.
            self._give_up(f"lost the log server ({error}); logging to stderr", batch)
        finally:
            if follower is not None:
                # Closing the socket would not wake a recv() in another
                # thread; shutting it down does (what was sent still goes).
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                follower.join(self._close_timeout)
            sock.close()

    def _take_batch(self) -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        while self._pending and size < _BATCH_BYTES:
            item = self._pending.popleft()
            batch.append(item)
            size += len(item)
        self._pending_bytes -= size
        self._cond.notify_all()  # a full queue has room again
        return batch

    def _connect(self) -> socket.socket:
        return frames.connect(
            self._address,
            self._ticket,
            self._key,
            timeout=self._close_timeout,
            on_connect=self._on_connect,
            hello={"levels": True} if self._follow_levels else None,
        )

    def _give_up(self, why: str, in_flight: list[bytes]) -> None:
        with self._cond:
            self._stderr_only = True
            left = [*in_flight, *self._pending]
            self._pending.clear()
            self._pending_bytes = 0
            self._done += len(left)
            self._cond.notify_all()
        _to_stderr([f"gymnasiarch: {why}".encode(), *left])


def _follow_levels(sock: socket.socket) -> None:
    """Apply the levels the server sends, until the connection ends (a thread of its own)."""
    try:
        while True:
            message = frames.decode(frames.receive_frame(sock))
            if message["t"] == "levels":
                apply_levels(message)
    except (OSError, WireError):
        return  # the connection's end; the sender thread says so if it matters
    except ValueError as error:  # a malformed snapshot: keep the levels we have
        _to_stderr([f"gymnasiarch: ignoring the log server's levels from now on: {error}".encode()])


def _after_fork(reference: weakref.ref[LogClientHandler]) -> None:
    handler = reference()
    if handler is not None:
        # The connection and the thread are the parent's; our records go to stderr.
        handler._cond = threading.Condition()
        handler._pending.clear()
        handler._pending_bytes = 0
        handler._done = handler._queued  # nothing of ours is in flight: flush() returns
        handler._stderr_only = True


_MSG, _EXC_TEXT, _STACK_INFO, _EXTRA = (
    ROW.index(name) for name in ("msg", "exc_text", "stack_info", "extra")
)


_BIG_EXTRA = 4096  # bytes: an extra this big is cut from a record too big to send
_KEPT_TRACEBACK = 64 * 1024  # characters of a cut record's traceback kept (its end)


def _json(row: list[Any]) -> bytes:
    r"""*row* as JSON; a lone surrogate (a file name that is not UTF-8) as text, not an error.

    It arrives as its escape's text (``data-\udcff.csv``), whichever the
    encoding: any handler of the parent's can write that.
    """
    try:
        return _RECORD_ENCODER.encode(row).encode()
    except UnicodeEncodeError:
        return _RECORD_ENCODER.encode(_without_surrogates(row)).encode()


def _shortened(row: list[Any], encode: Callable[[list[Any]], bytes]) -> list[Any]:
    """*row*, too big once encoded by *encode*, cut down to fit well inside a frame.

    What is big goes first: the extras over a few KiB each (the small ones,
    an ``episode`` number, stay; all of them if even the small ones are too
    many), then the beginnings of the traceback and the stack (their ends,
    where the error is, stay), then the message's end, cut by bytes, not
    characters (a character may take 4 bytes, an escaped one 6).
    """

    def over() -> int:
        return len(encode(row)) - _RECORD_BYTES + 1024

    extra = row[_EXTRA]
    if extra:
        sizes = {key: len(_RECORD_ENCODER.encode(value)) for key, value in extra.items()}
        row[_EXTRA] = {
            key: value if sizes[key] <= _BIG_EXTRA else f"[{sizes[key]} bytes cut]"
            for key, value in extra.items()
        }
        if over() > 0:
            row[_EXTRA] = {"extra_cut": f"[{len(extra)} fields, {sum(sizes.values())} bytes cut]"}
    for kept in (_KEPT_TRACEBACK, 4096):  # the second round for text of many escapes
        for index in (_EXC_TEXT, _STACK_INFO):
            text = row[index]
            if text and len(text) > kept:
                row[index] = f"[{len(text) - kept} characters cut]...{text[-kept:]}"
        message = row[_MSG]
        while (excess := over()) > 0 and message:
            data = message.encode("utf-8", "surrogatepass")
            # Escapes make the encoded text longer than the UTF-8: cut more each round.
            keep = max(0, len(data) - excess - len(data) // 8)
            message = data[:keep].decode("utf-8", "ignore")
            row[_MSG] = f"{message}... [{len(data) - keep} bytes cut]"
        if over() <= 0:
            break
    return row


def _encode_record(record: logging.LogRecord) -> bytes:
    row = record_to_row(record)
    item = _json(row)
    if len(item) > _RECORD_BYTES:
        item = _json(_shortened(row, _json))
    return item


def carried_whole(record: logging.LogRecord) -> bool:
    """Whether this handler sends *record* whole, its message uncut and its extras kept.

    True only if it fits in JSON and, where msgpack is installed, in
    msgpack too (whichever the connection uses). A Ray host asks this of a
    long JSON output line's record before it sends it: one that does not
    fit goes as plain pieces of the line instead, nothing cut off.
    """
    if len(_RECORD_ENCODER.encode(record_to_row(record)).encode()) > _RECORD_BYTES:
        return False
    if not frames.reads_msgpack():
        return True
    try:
        return len(_pack_row(record_to_row(record))) <= _RECORD_BYTES
    except (OverflowError, TypeError, ValueError):
        return False


def _pack_row(row: list[Any]) -> bytes:
    try:
        packed = frames.msgpack_pack(row)
    except UnicodeEncodeError:  # a lone surrogate: msgpack's text is UTF-8 only
        packed = frames.msgpack_pack(_without_surrogates(row))
    except (OverflowError, TypeError, ValueError):
        # An int beyond 64 bits, say, where JSON would have taken it: the
        # extras go as text rather than the record not at all.
        extra = row[_EXTRA]
        if not extra:
            raise
        row[_EXTRA] = {
            key: value if type(value) is str else repr(value) for key, value in extra.items()
        }
        packed = frames.msgpack_pack(row)
    return packed


def _without_surrogates(value: Any) -> Any:
    """*value* (a row, or part of one) with each lone surrogate as its escape's text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def _pack_record(record: logging.LogRecord) -> bytes:
    row = record_to_row(record)
    item = _pack_row(row)
    if len(item) > _RECORD_BYTES:
        item = _pack_row(_shortened(row, _pack_row))
    return item


def _to_stderr(items: list[bytes]) -> None:
    stream = sys.__stderr__
    if stream is None:
        return
    with contextlib.suppress(Exception):
        for item in items:
            stream.write(_stderr_line(item) + "\n")
        stream.flush()


def _stderr_line(item: bytes) -> str:
    try:
        if item[:1] in (b"[", b"{") or not frames.reads_msgpack():
            data = json.loads(item)
        else:
            data = frames.msgpack_unpack(item)
    except Exception:  # not a record: a line of our own, say
        return item.decode(errors="replace")
    if isinstance(data, list) and len(data) == len(ROW):
        data = dict(zip(ROW, data, strict=True))
    if not isinstance(data, dict):
        return item.decode(errors="replace")
    level = logging.getLevelName(data.get("levelno", logging.INFO))
    line = f"{level} {data.get('name')}: {data.get('msg')}"
    if data.get("exc_text"):
        line += "\n" + str(data["exc_text"])
    return line
