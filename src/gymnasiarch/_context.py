"""What a supervised child knows about itself: ``child_context()``."""

from __future__ import annotations

import threading
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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        self._send(("ready", value))


_current: ChildContext | None = None


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
