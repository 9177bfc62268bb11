"""What a supervised child knows about itself: ``child_context()``."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gymnasiarch._runtime_config import RuntimeConfig


@dataclass
class ChildContext:
    """The identity and settings of the supervised child this code runs in.

    Attributes:
        name: The child's name in its supervisor.
        seed: ``derive_seed(master_seed, name)`` if the supervisor was given a
            seed, else ``None``. The same across restarts.
        restarts: How often this child had been restarted before this run.
        runtime_config: The supervisor's runtime configuration.
    """

    name: str
    seed: int | None
    restarts: int
    runtime_config: RuntimeConfig
    _send: Callable[[tuple[Any, ...]], None] = field(repr=False)
    _ready_sent: bool = field(default=False, repr=False)
    # Re-entrant: a heartbeat() from a signal handler that interrupts a beat
    # of the same thread must not wait for itself.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # The watchdog: a beat moves the deadline (_expire_at(now + _watchdog +
    # _beat_every), a timer the supervisor awaits), at most every _beat_every
    # seconds; the next one is due at _next_beat: inf until armed (see _arm),
    # always without a watchdog, and again once the target has ended (see
    # _disarm, which stops the timer with _disarm_timer).
    _watchdog: float = field(default=math.inf, repr=False)
    _beat_every: float = field(default=math.inf, repr=False)
    _next_beat: float = field(default=math.inf, repr=False)
    _expire_at: Callable[[float], None] | None = field(default=None, repr=False)
    _disarm_timer: Callable[[], None] | None = field(default=None, repr=False)
    # The child's own process: a process forked from it (multiprocessing's
    # fork context) has a copy of this context, and its beats must not keep
    # a stuck child alive (see _beat).
    _pid: int = field(default_factory=os.getpid, repr=False)

    def ready(self, value: Any = None) -> None:
        """Tell the supervisor this child is really serving now.

        A supervisor that starts children in order starts the next one only
        after this call (for children whose spec sets ``ready_timeout``).
        *value* (anything picklable) is available to the parent as the
        child's ready value. Calls after the first are ignored.
        """
        with self._lock:
            if self._ready_sent:
                return
            self._ready_sent = True
        # Armed before it is told: the supervisor may stop (or freeze) the
        # child as soon as it hears, and a child stopped in between would
        # have no watchdog at all.
        self._arm()  # a child whose watchdog starts at its ready (or a beat more)
        self._send(("ready", value))

    def heartbeat(self) -> None:
        """Tell the supervisor this child is alive (for a child with a ``watchdog``).

        A plain ``def`` child whose spec sets ``watchdog=`` calls it at
        least that often once it is ready (an ``async def`` child beats by
        itself while its event loop turns): calls never more than a
        watchdog apart keep it alive, however irregular. Cheap enough for a
        hot loop: while the last beat is recent (less than a quarter of the
        watchdog ago) it reads the clock and returns, no system call; a
        beat itself moves the deadline of a kernel timer the supervisor
        awaits (one system call, which wakes nobody) to a watchdog and a
        quarter from now, so a call skipped as too recent still counts. A
        child that stops calling it is found hung within 1.25 watchdogs of
        its last call. Without a watchdog, before the child is ready, once
        its target has returned or raised, and in a process forked from the
        child (a ``multiprocessing`` worker), it does nothing more than read
        the clock. Any thread of the child may call it, but a beat proves
        only that the calling thread is alive: call it from the loop you
        want watched, not from a helper thread of its own.
        """
        if _monotonic() >= self._next_beat:
            self._beat()

    def _beat(self) -> None:
        """Beat now: the deadline moves to a watchdog and a beat spacing from now.

        The spacing: a heartbeat() call up to a spacing after this beat is
        skipped (see :meth:`heartbeat`), and its promise of a watchdog more
        must hold all the same. Under the lock: a thread's beat cannot
        re-arm the timer after :meth:`_disarm` (a beat is rare: at most
        every spacing).
        """
        if os.getpid() != self._pid:
            # A forked worker's copy: it never beats, and its heartbeat()
            # calls stay a clock read. Before the lock, which a thread of the
            # child may have held at the fork.
            self._next_beat = math.inf
            return
        with self._lock:
            if self._expire_at is None:
                return
            now = _monotonic()
            self._next_beat = now + self._beat_every
            self._expire_at(now + self._watchdog + self._beat_every)

    def _disarm(self) -> None:
        """Stop the watchdog for good: the target has returned or raised.

        What follows (sending the result, the interpreter's exit joining a
        non-daemon thread, atexit handlers) is not the target's work: a
        child is not found hung there, and heartbeat() does nothing.
        """
        with self._lock:
            self._next_beat = math.inf
            self._expire_at = None
            if self._disarm_timer is not None:
                self._disarm_timer()

    def _arm(self) -> None:
        """Start the watchdog (at the child's start, or its ready): beat now, and from now on."""
        if self._expire_at is not None:
            self._beat()

    def _beat_if_armed(self) -> None:
        """Beat now, if the watchdog has started (an ``async def`` child's beat task)."""
        if self._next_beat < math.inf:
            self._beat()


#: A target function with this attribute set true ignores SIGTERM from its
#: first line: the child ignores it before the supervisor hears "started"
#: (:func:`gymnasiarch.testing.stubborn`'s wrapper has it).
IGNORES_SIGTERM = "__gymnasiarch_ignores_sigterm__"

_current: ChildContext | None = None
_monotonic = time.monotonic  # a global's lookup, not a module attribute's, in heartbeat()
#: A beat is made at most every watchdog * BEAT_FRACTION seconds, and moves
#: the deadline to (1 + BEAT_FRACTION) watchdogs from then: an ``async def``
#: child's beat task has four more chances before it, for a loop slowed by a
#: busy machine, and a hang is found within 1.25 watchdogs.
BEAT_FRACTION = 0.25


def set_child_context(context: ChildContext) -> None:
    """Install the context of this child process (done by the child bootstrap)."""
    global _current  # noqa: PLW0603 - one context per process, by design
    _current = context


def child_context() -> ChildContext:
    """The :class:`ChildContext` of the supervised child this code runs in.

    Raises:
        RuntimeError: This process is not a child started by a supervisor.
    """
    if _current is None:
        raise RuntimeError("child_context() is only available inside a supervised child")
    return _current
