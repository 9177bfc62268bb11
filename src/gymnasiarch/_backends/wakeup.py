"""Wake an event-loop task from any thread, without blocking that thread.

A foreign library's callbacks (Ray's futures, say) run in its own threads.
Waking an anyio task from there with ``anyio.from_thread`` would block the
callback thread until the loop runs the call, and deadlock if the loop is
itself waiting for that library. A socket pair needs neither: the callback
writes one byte (never blocks: a full buffer already means "wake up"), and
the task waits for the other end to become readable, under asyncio and trio
alike.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

import anyio


class Wakeup:
    """A doorbell for one task: :meth:`ring` from anywhere, :meth:`wait` in the loop."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        # A ring racing close() must not write to a descriptor number that
        # has been reused for something else meanwhile.
        self._lock = threading.Lock()
        self._closed = False

    def ring(self, *_: object) -> None:
        """Wake the waiting task (thread-safe; any arguments are ignored)."""
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):  # full: it will wake anyway
                self._writer.send(b"\0")

    async def wait(self) -> None:
        """Return once :meth:`ring` was called since the last return."""
        while True:
            await anyio.wait_readable(self._reader)
            try:
                if self._reader.recv(4096):
                    return
            except BlockingIOError:
                continue

    def close(self) -> None:
        """Close both ends; later rings do nothing."""
        with self._lock:
            self._closed = True
            self._writer.close()
        self._reader.close()

    def __enter__(self) -> Wakeup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
