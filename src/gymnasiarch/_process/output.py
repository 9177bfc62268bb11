"""A child's stdout and stderr, captured line by line into the parent's logging.

The parent makes two pipes per run; the child puts their write ends on its
file descriptors 1 and 2 before anything else runs, so even a child that
dies while importing its target is heard. Each line becomes a record of the
logger ``gymnasiarch.child.<name>`` (stdout at INFO, stderr at WARNING, or
the spec's ``stdout_level`` and ``stderr_level``; with ``output="json"``, a
line that is a JSON object gives its record the level, message, time and
extras it holds: :class:`JsonLines`), and
the last lines of stderr are kept for the error report of that child; of a
``faulthandler`` dump (a native crash: every child has faulthandler on, see
:func:`enable_crash_dumps`), its header and the top frames of each thread are
kept too, however deep the stack, so the report names the crashing line.

The child's descriptors are also looked after here: :func:`seal_descriptors`
keeps every one of them from the programs the target executes.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import io
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import anyio

from gymnasiarch import _platform
from gymnasiarch._process import cpython
from gymnasiarch._spec import level_number
from gymnasiarch.exceptions import _THREAD_HEADER

TAIL_LINES = 20
#: At most this many lines of a faulthandler dump's start are kept besides the tail:
DUMP_LINES = 60
#: its header, and of each thread this many frames from the top (the crash site first).
DUMP_FRAMES = 10
_DUMP_HEADER = "Fatal Python error: "
#: A fatal error's dump of its one thread (``all_threads=False``) begins so.
_DUMP_STACK = "Stack (most recent call first):"
MAX_LINE = 64 * 1024  # bytes: a longer line is cut into records of this size
#: With output="json", a line that starts a JSON object may grow to this many
#: bytes before it is cut (a record with a long traceback or payload keeps its
#: level); the bound is per stream, what one child can make its parent hold.
#: A longer one is cut into pieces of MAX_LINE, as a plain line is. A Ray host
#: sets a lower bound (:data:`gymnasiarch._wire.logclient.RELAYED_LINE_BYTES`):
#: its records travel to the supervisor in frames of a limited size.
MAX_JSON_LINE = 1024 * 1024
_READ_SIZE = 65536


class InheritedFd:
    """A file descriptor that travels to a child started by multiprocessing."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Only while multiprocessing pickles a process: it duplicates the fd
        # into the child (through the fork server's fd passing, say).
        return _rebuild_inherited, (cpython.DupFd(self.fd),)


def _rebuild_inherited(duplicate: Any) -> InheritedFd:
    return InheritedFd(duplicate.detach())


def redirect_output(stdout: InheritedFd, stderr: InheritedFd) -> None:
    """In the child: make the pipes its stdout and stderr, line buffered."""
    for source, target in ((stdout, 1), (stderr, 2)):
        if source.fd != target:  # spawn passes an inherited fd 1 as fd 1
            os.dup2(source.fd, target)
            os.close(source.fd)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, io.UnsupportedOperation):
                stream.reconfigure(line_buffering=True)


def enable_crash_dumps() -> None:
    """In the child: have a native crash (SIGSEGV, SIGABRT...) print its Python stack to fd 2.

    fd 2 is the captured stderr, so the dump reaches the parent's report of
    the crash (see :class:`OutputCapture`). A target that does not want it
    calls ``faulthandler.disable()``.
    """
    with contextlib.suppress(ValueError, OSError, RuntimeError):  # no fd 2
        faulthandler.enable(file=2, all_threads=True)


#: The signal that asks a child with a watchdog for its threads' stacks (see
#: :func:`enable_stack_dumps`): SIGUSR2, which nothing else of ours uses.
DUMP_SIGNAL = signal.SIGUSR2
#: At most this many lines of a hung child's stack dump are kept in its
#: error's ``stack``: each thread's top and bottom frames, and always the
#: main thread and the one that dumped (see ``hung.with_source_lines``).
HUNG_DUMP_LINES = 1000
#: At most this many of its stderr lines are read for it. Why: faulthandler
#: writes up to 100 threads of up to 100 frames (~10,300 lines), the main
#: thread last; a cap at the head alone lost it.
HUNG_DUMP_RAW_LINES = 20_000
#: How a faulthandler dump's threads begin (``all_threads=True``): the whole line.
DUMP_THREAD = _THREAD_HEADER


def enable_stack_dumps() -> None:
    """In a child with a watchdog: :data:`DUMP_SIGNAL` dumps its threads' stacks, and ends it.

    The dump goes to fd 2, the captured stderr (the supervisor's own
    stderr under ``output="inherit"``).

    ``faulthandler`` writes the dump from its C signal handler, so it comes
    even from a child stuck in C code that holds the GIL. With
    ``chain=True`` the handler then calls the signal's previous action, its
    default (terminate): the child ends right after the last line of its
    dump, so the supervisor knows the dump is whole when the process is
    gone (an event it already awaits), without guessing at a quiet pipe.
    A target that installs its own SIGUSR2 handler gives the dump up (the
    supervisor kills a hung child all the same, a moment later).
    """
    with contextlib.suppress(ValueError, OSError, RuntimeError):  # no fd 2
        faulthandler.register(DUMP_SIGNAL, file=2, all_threads=True, chain=True)


def seal_descriptors() -> None:
    """In the child: make every descriptor above stderr close-on-exec.

    What the child was handed (its channel, the resource tracker's pipe, the
    data pipe, fds passed on by multiprocessing) arrives inheritable
    (``SCM_RIGHTS``, ``pass_fds``): a program the target executes (a daemon
    started with ``fork`` and ``exec``, ``os.system``, ``close_fds=False``)
    would hold them for as long as it runs, and with them the resource
    tracker, and the parent's readers that wait for their end (issue 14).
    The child itself keeps using them; only fds 0-2 pass to its programs,
    plus whatever the target marks inheritable from now on (see
    :func:`gymnasiarch._platform.cloexec_from`).
    """
    _platform.cloexec_from(3)


def flush_output() -> None:
    """In the child: push out what print() buffered, before the end."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()


def output_logger(name: str) -> logging.Logger:
    """The logger child *name*'s captured output goes to."""
    return logging.getLogger(f"gymnasiarch.child.{name}")


# What a record already has, or what a renderer shows from it (structlog's
# event, level, logger, timestamp...: the names the log wire keeps extras off
# too): a JSON field of such a name goes on the record as json_<name>.
_TAKEN = (
    frozenset(logging.makeLogRecord({}).__dict__)
    | frozenset(dir(logging.LogRecord))
    | {"message", "asctime", "child", "stream", "taskName"}
    | {"event", "level", "logger", "logger_name", "timestamp", "exception", "stack"}
)
_NOT_A_NAME = re.compile(r"\W")
_MISSING: Any = object()
# An epoch time above this is in milliseconds (pino's); in seconds it would be the year 5138.
_MILLISECONDS = 1e11


class JsonLine(NamedTuple):
    """What :meth:`JsonLines.read` found in a line: None where it found nothing usable."""

    level: int | None
    message: str | None
    created: float | None
    extra: dict[str, Any]


class JsonLines:
    """How ``output="json"`` reads a line: where its level, message, time and extras are.

    *keys* maps ``level``, ``message`` and ``time`` to key paths
    (``"record.level.name"``: dotted for nested objects), tried in turn: the
    first one whose value can be used wins. A path is first looked up as one
    key (a flat ``"log.level"``), then part by part. ``extra`` is the path of
    an object whose fields become the record's extras; without one (or where
    a line has no object there), the object's top-level fields other than
    those used for level, message and time are. A field whose name a
    record already has (``name``, ``msg``, ``created``, ``process``..., and
    ``child``, ``stream``, ``level``, ``event``, ``logger``, ``timestamp``,
    ``exception``), that starts with ``_`` or is not a Python name goes on
    the record as ``json_<name>`` (non-name characters as ``_``); should
    that name be taken by a field too, the field of that name wins.
    """

    def __init__(self, keys: Mapping[str, Sequence[str]]) -> None:
        self._level = tuple(keys.get("level", ()))
        self._message = tuple(keys.get("message", ()))
        self._time = tuple(keys.get("time", ()))
        extra = tuple(keys.get("extra", ()))
        self._extra = extra[0] if extra else None

    def read(self, line: str) -> JsonLine | None:
        """What *line* holds, or None if it is not a JSON object (a plain line, then)."""
        if not line.lstrip().startswith("{"):  # most plain lines, without a parse
            return None
        try:
            found = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read
            return None
        if not isinstance(found, dict):
            return None
        used: set[str] = set()  # top-level keys taken for the level, message or time
        level = _first(found, self._level, level_number, used)
        message = _first(found, self._message, _text, used)
        created = _first(found, self._time, _epoch, used)
        fields, _ = _lookup(found, self._extra) if self._extra is not None else (None, None)
        if not isinstance(fields, dict):  # no extra path, or a line of another shape
            fields = {key: value for key, value in found.items() if key not in used}
        extra: dict[str, Any] = {}
        for key, value in fields.items():
            if key.isidentifier() and not key.startswith("_") and key not in _TAKEN:
                extra[key] = value
            else:
                extra.setdefault("json_" + _NOT_A_NAME.sub("_", key), value)
        return JsonLine(level, message, created, extra)


def _lookup(found: dict[str, Any], path: str) -> tuple[Any, str | None]:
    """The value at *path* (or _MISSING), and its top-level key if it is one of *found*'s own."""
    if path in found:
        return found[path], path
    value: Any = found
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING, None
        value = value[part]
    return value, None


def _first(
    found: dict[str, Any], paths: Sequence[str], convert: Callable[[Any], Any], used: set[str]
) -> Any:
    """The first value at one of *paths* that *convert* makes something of (not None)."""
    for path in paths:
        value, key = _lookup(found, path)
        if value is _MISSING or (result := convert(value)) is None:
            continue
        if key is not None:
            used.add(key)
        return result
    return None


def _text(value: object) -> str | None:
    """A message: a string as it is, other values as JSON; None (null) is none."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _epoch(value: object) -> float | None:
    """Seconds since the epoch from a number (milliseconds where that large) or ISO 8601."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:  # a time without an offset is local time
                seconds = datetime.fromisoformat(text).timestamp()
            except (ValueError, OverflowError, OSError):  # not a time; year 1 in local time
                return None
            return seconds if _formattable(seconds) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    seconds = value / 1000 if value > _MILLISECONDS else float(value)
    return seconds if _formattable(seconds) else None


def _formattable(seconds: float) -> bool:
    """Whether a record created at *seconds* can be shown: a calendar time, local and UTC.

    Why: ``record.created`` goes to every formatter's ``asctime``
    (``time.localtime``, or ``time.gmtime``) and to handlers that use
    ``datetime.fromtimestamp``; one that raises for a time past year 9999,
    or past what the C library takes (``{"time": 1e20}``), makes ``logging``
    print "--- Logging error ---" instead of the line. Such a time is not
    taken: the record keeps its own, the raw value stays an extra.
    """
    try:
        time.localtime(seconds)
        time.gmtime(seconds)
        datetime.fromtimestamp(seconds)
        datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return False
    return True


def _piece_end(data: bytes, start: int) -> int:
    """Where the piece of *data* from *start* ends: at most MAX_LINE on, not inside a character.

    The cut moves back (at most 3 bytes) off UTF-8 continuation bytes, so
    that no character is split into two replacement characters.
    """
    end = start + MAX_LINE
    if end >= len(data):
        return len(data)
    for _ in range(3):
        if data[end] & 0xC0 != 0x80:
            break
        end -= 1
    return end


class OutputCapture:
    """The parent's ends of one child run's stdout and stderr pipes."""

    def __init__(
        self,
        name: str,
        path: str | None = None,
        *,
        stdout_level: int = logging.INFO,
        stderr_level: int = logging.WARNING,
        json_keys: Mapping[str, Sequence[str]] | None = None,
        max_json_line: int = MAX_JSON_LINE,
        json_record_fits: Callable[[logging.LogRecord], bool] | None = None,
    ) -> None:
        # By path, as the log server files the child's own gymnasiarch records:
        # one logger per child, whatever it wrote its lines with.
        self.logger = output_logger(path or name)
        #: How long a JSON line may grow and still be one record with its fields (see
        #: :data:`MAX_JSON_LINE`): less where the records travel on (a Ray host's relay).
        self.max_json_line = max_json_line
        #: Where set (a Ray host's relay), a JSON line longer than MAX_LINE is one
        #: record only if this says its record travels whole; else it is cut into
        #: plain pieces. No line length alone ensures that: encoding can grow a
        #: record to 6x its line (see gymnasiarch._wire.logclient.carried_whole).
        self.json_record_fits = json_record_fits
        self.name = path or name  # records are tagged with the child's path in the tree
        self._levels = {"stdout": stdout_level, "stderr": stderr_level}  # of a plain line
        self._json = JsonLines(json_keys) if json_keys is not None else None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lines = 0  # stderr lines so far
        self._dump: list[tuple[int, str]] = []  # (line number, line) of a dump's start
        self._dump_frames: int | None = None  # frames kept of the thread, while in a dump
        #: Once made a list: the stderr lines from then on (a hung child's stack dump).
        self.recorded: list[str] | None = None
        self._in_hung_dump = False  # its lines are the error's, not a WARNING record each
        #: Set at each line recorded (the supervisor waits while a dump keeps coming).
        self.dump_progress: anyio.Event | None = None
        self._read_fds: dict[str, int] = {}
        self._write_fds: list[int] = []
        #: Called with each line, stdout's and stderr's (a program's ready=Line).
        self.on_line: Callable[[str], object] | None = None
        try:
            for stream in ("stdout", "stderr"):
                read_fd, write_fd = os.pipe()
                self._read_fds[stream] = read_fd
                self._write_fds.append(write_fd)
                os.set_blocking(read_fd, False)
        except BaseException:
            self.close()
            raise

    def child_ends(self) -> tuple[InheritedFd, InheritedFd]:
        """The write ends, for the child's launch."""
        stdout, stderr = self._write_fds
        return InheritedFd(stdout), InheritedFd(stderr)

    def close_child_ends(self) -> None:
        """Close our copies of the write ends (the child has its own)."""
        for fd in self._write_fds:
            os.close(fd)
        self._write_fds.clear()

    @property
    def streams(self) -> list[str]:
        """``stdout`` and ``stderr``: what :meth:`pump` takes."""
        return list(self._read_fds)

    async def pump(self, stream: str) -> None:
        """Turn the lines of *stream* into records until its pipe is at its end."""
        fd = self._read_fds[stream]
        partial = b""
        cut = False  # partial is the rest of a line already cut into pieces
        try:
            while True:
                await anyio.wait_readable(fd)
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    break
                *lines, partial = (partial + data).split(b"\n")
                for line in lines:
                    self._emit_line(stream, line, cut)
                    cut = False
                if len(partial) > self._limit(partial, cut):  # a progress bar never ends its line
                    while len(partial) > MAX_LINE:
                        end = _piece_end(partial, 0)
                        self._emit(stream, partial[:end])
                        partial = partial[end:]
                    cut = True
        finally:  # at the end, or when the wait for the end was given up
            if partial:
                self._emit_line(stream, partial, cut)

    def _limit(self, partial: bytes, cut: bool) -> int:
        """How long the line begun in *partial* may grow before it is cut.

        Once cut, a line is cut into pieces of :data:`MAX_LINE` only, its
        JSON start included: no piece is larger than a plain line's, which
        every path a record takes carries whole (a Ray host's relay cuts a
        record of half a frame, and the message with it).
        """
        if not cut and self._json is not None and partial[:64].lstrip().startswith(b"{"):
            return self.max_json_line
        return MAX_LINE

    def _emit_line(self, stream: str, line: bytes, cut: bool) -> None:
        """Emit a whole *line* (or a cut line's end): one record if it fits, else in pieces."""
        if len(line) <= self._limit(line, cut) and self._fits(stream, line):
            self._emit(stream, line)
            return
        start = 0
        while start < len(line):
            end = _piece_end(line, start)
            self._emit(stream, line[start:end])
            start = end

    def _fits(self, stream: str, line: bytes) -> bool:
        """Whether *line*'s record travels whole where it goes (see :attr:`json_record_fits`)."""
        if self.json_record_fits is None or len(line) <= MAX_LINE:
            return True  # a piece's size: what every path carries whole
        record = self._record(stream, line.decode(errors="replace").rstrip("\r"))
        return record is None or self.json_record_fits(record)

    def _emit(self, stream: str, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        if self.on_line is not None:
            self.on_line(line)
        if stream == "stderr" and self.recorded is not None:
            if len(self.recorded) < HUNG_DUMP_RAW_LINES:
                self.recorded.append(line)
            # The stack dump of a hung child (from its first thread on: the
            # child ends right after it) is its error's stack, and one DEBUG
            # record (log_dump); not a WARNING record each (~35 a hang
            # flooded the app's log), nor its stderr's last words.
            self._in_hung_dump = self._in_hung_dump or bool(DUMP_THREAD.fullmatch(line))
            # Only a dump's lines are its progress: a chatty child's own
            # lines would keep it alive (DUMP_WAIT each) without a dump.
            if self._in_hung_dump and self.dump_progress is not None:
                self.dump_progress.set()
            if self._in_hung_dump:
                return
        if stream == "stderr":
            self.tail.append(line)
            self._note_dump(line)
            self._lines += 1
        record = self._record(stream, line)
        if record is not None:
            self.logger.handle(record)

    def _record(self, stream: str, line: str) -> logging.LogRecord | None:
        """The record of *line* (its fields, where JSON), or None if its level is not logged."""
        level, message, created = self._levels[stream], line, None
        extra = {"child": self.name, "stream": stream}
        if self._json is not None and (found := self._json.read(line)) is not None:
            level = level if found.level is None else found.level
            message = line if found.message is None else found.message
            created = found.created
            extra = {**found.extra, **extra}  # no field is named child or stream: see _TAKEN
        if not self.logger.isEnabledFor(level):
            return None
        record = self.logger.makeRecord(
            self.logger.name,
            level,
            "(child output)",
            0,
            message,
            (),
            None,
            extra=extra,
        )
        if created is not None:  # when the program says it logged the line
            record.relativeCreated += (created - record.created) * 1000
            record.created = created
            record.msecs = (created - int(created)) * 1000
        return record

    def log_dump(self, stack: str, message: str) -> None:
        """Log a hung child's stack dump as one DEBUG record: *message*, then *stack*."""
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(
                "%s\n%s", message, stack, extra={"child": self.name, "stream": "stderr"}
            )

    def _note_dump(self, line: str) -> None:
        """Keep the start of a faulthandler dump: the tail alone shows only its bottom."""
        if line.startswith(_DUMP_HEADER):
            self._dump_frames = 0
        elif self._dump_frames is None:
            return
        elif line == _DUMP_STACK or DUMP_THREAD.fullmatch(line):
            self._dump_frames = 0
        elif line.startswith("  File "):
            self._dump_frames += 1
            if self._dump_frames > DUMP_FRAMES:
                if self._dump_frames == DUMP_FRAMES + 1:
                    line = "  ..."  # as faulthandler itself marks frames left out
                else:
                    return
        elif line.strip() == "...":
            return
        elif line and self._dump and self._dump[-1][1].startswith("  "):
            self._dump_frames = None  # after the frames, not a dump's line: its end
            return
        if len(self._dump) < DUMP_LINES:
            self._dump.append((self._lines, line))

    def tail_text(self) -> str | None:
        """The last lines of stderr, or None if there were none.

        With a faulthandler dump's start before them, that start first
        (its header, each thread's top frames), then a line saying how many
        lines were left out, then the last lines.
        """
        if not self.tail:
            return None
        first = self._lines - len(self.tail)  # the line number of the tail's first line
        head = [(number, line) for number, line in self._dump if number < first]
        lines = [line for _, line in head]
        if head and head[-1][0] + 1 < first:
            lines.append(f"[{first - head[-1][0] - 1} lines of stderr left out]")
        return "\n".join([*lines, *self.tail])

    def close(self) -> None:
        """Close every pipe end we hold."""
        for fd in [*self._read_fds.values(), *self._write_fds]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fds.clear()
        self._write_fds.clear()
