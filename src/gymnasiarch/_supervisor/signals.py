"""Catch shutdown signals for the supervisor, and give the application its handlers back.

anyio's ``open_signal_receiver`` would do, but on asyncio its end leaves the
signals at their default action (asyncio's ``remove_signal_handler`` sets
``SIG_DFL``), not at what the application had installed: a SIGTERM that
arrives after the supervisor is done then kills the embedding process,
measured 10 times in 10 under a storm of signals. Here the handler is ours
from ``signal.signal`` to ``signal.signal``: the swap back to the
application's handler is one system call, so there is no moment in which a
signal meets the default action. Works alike under asyncio and trio; the
handler only writes the signal's number to a socket the event loop waits on.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Iterable
from types import FrameType, TracebackType
from typing import Any

import anyio


class SignalCatcher:
    """While entered, *signals* are caught and handed to :meth:`received`.

    Must be entered in the main thread (only it may set signal handlers).
    On exit, each signal's handler is exactly what it was before entering.
    """

    def __init__(self, signals: Iterable[int]) -> None:
        self._signals = tuple(signals)
        self._saved: dict[int, Any] = {}
        self._closed = False
        # Like _wakeup.Wakeup's doorbell, but the bytes carry the signals'
        # numbers, and the handler takes no lock (it may interrupt its owner).
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def __enter__(self) -> SignalCatcher:
        try:
            for signum in self._signals:
                self._saved[signum] = signal.signal(signum, self._handle)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, saved in self._saved.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, _behind_closed_catchers(signum, saved))
            # Else another catcher went in after us and is still there (two
            # supervisors whose lives overlap): it will put back what it
            # found, our handler, which from now on passes signals on to
            # what we found (see _handle).
        self._closed = True
        self._reader.close()
        self._writer.close()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes.
        if self._closed:
            _pass_on(signum, frame, self._saved.get(signum))
            return
        # Only a write here, the decision is made by the event loop's task.
        with contextlib.suppress(OSError):  # full (a storm): dropped
            self._writer.send(bytes([signum]))
        # A supervisor whose life overlaps ours went in before us: the
        # signal is for the whole process (a systemd stop, a Ctrl-C), so it
        # stops that tree too. What it found itself is not called: while a
        # catcher is open, the signal is the supervisors', not the application's.
        found = _behind_closed_catchers(signum, self._saved.get(signum))
        if isinstance(owner := getattr(found, "__self__", None), SignalCatcher):
            owner._handle(signum, frame)

    async def received(self) -> AsyncIterator[int]:
        """Each caught signal's number, in the order they arrived."""
        while True:
            await anyio.wait_readable(self._reader)
            try:
                data = self._reader.recv(256)
            except BlockingIOError:
                continue
            for signum in data:
                yield signum


def _behind_closed_catchers(signum: int, handler: Any) -> Any:
    """*handler*, or, if it is a closed catcher's, what that one found (and so on)."""
    owner = getattr(handler, "__self__", None)
    while isinstance(owner, SignalCatcher) and owner._closed:
        handler = owner._saved.get(signum, signal.SIG_DFL)
        owner = getattr(handler, "__self__", None)
    # None: a handler not installed from Python; the default is the closest.
    return signal.SIG_DFL if handler is None else handler


def _pass_on(signum: int, frame: FrameType | None, handler: Any) -> None:
    """Do what *handler* (what a closed catcher had found) would do with the signal."""
    handler = _behind_closed_catchers(signum, handler)
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)  # its default action, as if we had never been here
