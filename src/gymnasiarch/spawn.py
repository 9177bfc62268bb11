"""Runs inside a child: the caretaking every spawned process needs.

:func:`spawn_wrapper` keeps the signature of ``palaestrai.util.spawn``: it
sets the process title, restores the runtime configuration, rewires logging
to the parent, leaves SIGINT to the parent, and runs the target. The
supervisor calls it (through its child bootstrap) in every child it starts;
it can also be used on its own as a process target.
"""

from __future__ import annotations

import inspect
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

from setproctitle import setproctitle, setthreadtitle

from gymnasiarch._runtime_config import RuntimeConfig
from gymnasiarch.dynaloader import resolve

__all__ = ["spawn_wrapper"]

_log_rewire: Callable[[], None] | None = None


def set_process_title(name: str) -> None:
    """Set ``gymnasiarch[name]`` as the process title, and *name* as its short name.

    ``top`` and ``ps -o comm`` show 15 characters of the short name, so the
    distinguishing part, the child's name, goes there first.
    """
    setproctitle(f"gymnasiarch[{name}]")
    setthreadtitle(name[:15])


def set_log_rewire(rewire: Callable[[], None]) -> None:
    """Register how this child's logging reaches its parent (set by the bootstrap)."""
    global _log_rewire  # noqa: PLW0603 - one log channel per process
    _log_rewire = rewire


def prepare_child(name: str, runtime_config: Mapping[str, Any]) -> None:
    """Everything :func:`spawn_wrapper` does before it runs the target."""
    set_process_title(name)
    RuntimeConfig.from_dict(runtime_config).make_current()
    if _log_rewire is not None:
        _log_rewire()
    if threading.current_thread() is threading.main_thread():
        # A terminal's Ctrl-C reaches the whole foreground process group:
        # the supervisor handles it and stops the children in order.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


async def spawn_wrapper(
    name: str,
    runtime_config: dict[str, Any],
    callee: Callable[..., Any] | str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Wraps a target for fork/spawn and takes care of initialization.

    Whenever a new subprocess is created, some caretaking needs to be done:

    - a proctitle is set: ``gymnasiarch[name]``;
    - the runtime configuration is restored (``RuntimeConfig.current()``);
    - logging is rewired to send records to the parent process (in a child
      started by a :class:`~gymnasiarch.Supervisor`; elsewhere logging is
      left as it is);
    - SIGINT is ignored: the parent decides how its children stop.

    Args:
        name: Name of the process; leads to a proctitle ``gymnasiarch[name]``.
        runtime_config: Runtime configuration dict, normally obtained from
            :meth:`RuntimeConfig.to_dict`.
        callee: The target: a callable, sync or async, or a dotted path
            ``"package.module:function"``.
        args: Positional arguments of *callee*.
        kwargs: Keyword arguments of *callee*.

    Returns:
        Whatever the target returns (awaited, if it is a coroutine).
    """
    prepare_child(name, runtime_config)
    target = resolve(callee) if isinstance(callee, str) else callee
    result = target(*(args or ()), **(kwargs or {}))
    if inspect.isawaitable(result):
        result = await result
    return result


def reset_logging_to(handler: logging.Handler, level: int) -> None:
    """Replace every root handler with *handler* (what the seed's wrapper did)."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
