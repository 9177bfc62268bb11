"""A child's stdout and stderr, captured line by line into the parent's logging.

The parent makes two pipes per run; the child puts their write ends on its
file descriptors 1 and 2 before anything else runs, so even a child that
dies while importing its target is heard. Each line becomes a record of the
logger ``gymnasiarch.child.<name>`` (stdout at INFO, stderr at WARNING), and
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
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio

from gymnasiarch import _platform
from gymnasiarch._process import cpython

TAIL_LINES = 20
#: At most this many lines of a faulthandler dump's start are kept besides the tail:
DUMP_LINES = 60
#: its header, and of each thread this many frames from the top (the crash site first).
DUMP_FRAMES = 10
_DUMP_HEADER = "Fatal Python error: "
_DUMP_THREADS = ("Current thread ", "Thread ", "Stack (most recent call first)")
MAX_LINE = 64 * 1024  # bytes: a longer line is cut into records of this size
_READ_SIZE = 65536
_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}


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


class OutputCapture:
    """The parent's ends of one child run's stdout and stderr pipes."""

    def __init__(self, name: str, path: str | None = None) -> None:
        self.logger = output_logger(name)
        self.name = path or name  # records are tagged with the child's path in the tree
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lines = 0  # stderr lines so far
        self._dump: list[tuple[int, str]] = []  # (line number, line) of a dump's start
        self._dump_frames: int | None = None  # frames kept of the thread, while in a dump
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
                    self._emit(stream, line)
                while len(partial) > MAX_LINE:  # a progress bar never ends its line
                    self._emit(stream, partial[:MAX_LINE])
                    partial = partial[MAX_LINE:]
        finally:  # at the end, or when the wait for the end was given up
            if partial:
                self._emit(stream, partial)

    def _emit(self, stream: str, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        if self.on_line is not None:
            self.on_line(line)
        if stream == "stderr":
            self.tail.append(line)
            self._note_dump(line)
            self._lines += 1
        level = _LEVELS[stream]
        if self.logger.isEnabledFor(level):
            record = self.logger.makeRecord(
                self.logger.name,
                level,
                "(child output)",
                0,
                line,
                (),
                None,
                extra={"child": self.name, "stream": stream},
            )
            self.logger.handle(record)

    def _note_dump(self, line: str) -> None:
        """Keep the start of a faulthandler dump: the tail alone shows only its bottom."""
        if line.startswith(_DUMP_HEADER):
            self._dump_frames = 0
        elif self._dump_frames is None:
            return
        elif line.startswith(_DUMP_THREADS):
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
