"""Lifecycle events a supervisor publishes, and the fan-out to subscribers."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

EventKind = Literal[
    "started",
    "ready",
    "stopping",
    "exited",
    "restarting",
    "gave_up",
    "shutting_down",
    "stopped",
]


@dataclass(frozen=True)
class Event:
    """Something that happened in a supervision tree.

    Attributes:
        kind: ``started``, ``ready``, ``stopping`` (the supervisor asks the
            child to stop: *detail* says why), ``exited``, ``restarting``,
            ``gave_up``, ``shutting_down`` or ``stopped``.
        child: The child it is about (``None`` for the supervisor itself).
        path: Where that child is in the tree: ``"agents/agent-1"`` for a
            child of the nested supervisor ``agents``, the child's name for a
            child of the root. For ``shutting_down`` and ``stopped`` of a
            nested supervisor, the supervisor's own path; ``None`` for the
            root's.
        pid: The child's process id, where there is one.
        restarts: The child's restart count at the time.
        exitcode: For ``exited``: the exit code, if the child exited.
        signum: For ``exited``: the signal that ended the child, if any.
        detail: A short human description (``"exit code 3"``, a delay...).
        value: For ``ready``: the value the child passed to
            ``child_context().ready(value)``.
        requested: For ``exited``: the supervisor had asked the child to
            stop (a shutdown, a strategy's restart of siblings, a
            ``terminate_child``), so the end is no crash.
        time: When it happened (``time.time()``).
    """

    kind: EventKind
    child: str | None = None
    path: str | None = None
    pid: int | None = None
    restarts: int = 0
    exitcode: int | None = None
    signum: int | None = None
    detail: str = ""
    value: Any = None
    requested: bool = False
    time: float = field(default_factory=time.time)


class EventHub:
    """Fan events out to every subscriber; each gets its own unbounded stream."""

    def __init__(self) -> None:
        self._subscribers: list[MemoryObjectSendStream[Event]] = []

    def subscribe(self, first: Iterable[Event] = ()) -> MemoryObjectReceiveStream[Event]:
        """A stream of *first*, then every event from now on; it ends when the hub closes."""
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        for event in first:
            send.send_nowait(event)
        self._subscribers.append(send)
        return receive

    def publish(self, kind: EventKind, **fields: Any) -> Event:
        """Deliver an event to every live subscriber (never blocks); return it."""
        event = Event(kind, **fields)
        self.deliver(event)
        return event

    def deliver(self, event: Event) -> None:
        """Deliver an event made elsewhere (a nested supervisor's) to every subscriber."""
        for send in self._subscribers[:]:
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.close()  # the subscriber stopped listening
                self._subscribers.remove(send)

    def close(self) -> None:
        """End every subscriber's stream."""
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()
