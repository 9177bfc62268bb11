"""A child's stdout and stderr, captured line by line into the parent's logging.

The parent makes two pipes per run; the child puts their write ends on its
file descriptors 1 and 2 before anything else runs, so even a child that
dies while importing its target is heard. Each line becomes a record of the
logger ``gymnasiarch.child.<name>`` (stdout at INFO, stderr at WARNING), and
the last lines of stderr are kept for the error report of that child.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import sys
from multiprocessing import reduction
from typing import Any

import anyio

TAIL_LINES = 20
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
        return _rebuild_inherited, (reduction.DupFd(self.fd),)


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

    def __init__(self, name: str) -> None:
        self.logger = output_logger(name)
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._read_fds: dict[str, int] = {}
        self._write_fds: list[int] = []
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
        if stream == "stderr":
            self.tail.append(line)
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

    def tail_text(self) -> str | None:
        """The last lines of stderr, or None if there were none."""
        return "\n".join(self.tail) if self.tail else None

    def close(self) -> None:
        """Close every pipe end we hold."""
        for fd in [*self._read_fds.values(), *self._write_fds]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fds.clear()
        self._write_fds.clear()
