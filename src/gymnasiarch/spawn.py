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
from gymnasiarch._wire.levels import apply_levels
from gymnasiarch._wire.logclient import LOG_CONFIG_KEY, LogClientHandler
from gymnasiarch.dynaloader import resolve

__all__ = ["spawn_wrapper"]

_on_log_connect: Callable[[], None] | None = None


def set_process_title(name: str) -> None:
    """Set ``gymnasiarch[name]`` as the process title, and *name* as its short name.

    ``top`` and ``ps -o comm`` show 15 characters of the short name, so the
    distinguishing part, the child's name, goes there first.
    """
    setproctitle(f"gymnasiarch[{name}]")
    setthreadtitle(name[:15])


def set_log_connect_hook(hook: Callable[[], None] | None) -> None:
    """Register what to call when this child's log connection is made (the bootstrap's)."""
    global _on_log_connect  # noqa: PLW0603 - one log connection per process
    _on_log_connect = hook


def forward_structlog() -> None:
    """Route structlog through stdlib logging, so its events travel to the parent.

    Only where nobody configured it: a child's own ``structlog.configure()``
    wins. Imported here if need be (a dependency of ours; the fork server
    preloads it): a target that imports it only inside its function, in a
    process of the caller's own, must find it routed already.
    """
    import structlog  # noqa: PLC0415 - preloaded where it matters; cheap after

    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def prepare_child(name: str, runtime_config: Mapping[str, Any]) -> LogClientHandler | None:
    """Everything :func:`spawn_wrapper` does before it runs the target.

    Returns the handler that sends this child's records to the log server,
    if the runtime configuration names one; ``finish()`` it when the child ends.
    """
    set_process_title(name)
    values = dict(runtime_config)
    log_config = values.pop(LOG_CONFIG_KEY, None)
    RuntimeConfig.from_dict(values).make_current()
    handler = None
    if log_config is not None:
        levels = log_config.get("levels")
        # A child that follows the parent's level changes connects soon
        # after it starts: a level the parent lowers later must reach it
        # before its first record.
        live = levels is not None and log_config.get("live", True) is True
        # It outlives a close(): the child's own logging setup (dictConfig,
        # basicConfig(force=True)) closes every handler, and the records
        # logged afterwards must still reach the parent (finish() ends it).
        handler = LogClientHandler(
            log_config, on_connect=_on_log_connect, follow_levels=live, outlives_close=True
        )
        reset_logging_to(handler, log_config.get("level"), levels)
        forward_structlog()
    if threading.current_thread() is threading.main_thread():
        # A terminal's Ctrl-C reaches the whole foreground process group:
        # the supervisor handles it and stops the children in order.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return handler


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
    - logging is rewired to send records to the parent's
      :class:`~gymnasiarch.logserver.LogServer`, when *runtime_config* holds
      a client configuration under
      :data:`~gymnasiarch.logserver.LOG_CONFIG_KEY` (a supervisor's children
      always do; see :meth:`~gymnasiarch.logserver.LogTicket.client_config`);
      the loggers get the parent's levels, so that what the parent would
      drop is not sent, and follow the changes the parent pushes; the
      records still queued are sent before it returns or raises;
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
    handler = prepare_child(name, runtime_config)
    try:
        target = resolve(callee) if isinstance(callee, str) else callee
        result = target(*(args or ()), **(kwargs or {}))
        if inspect.isawaitable(result):
            result = await result
        return result
    finally:
        if handler is not None:
            handler.finish()  # the last records go out before the child ends


def reset_logging_to(
    handler: logging.Handler, level: int | None, levels: Mapping[str, Any] | None = None
) -> None:
    """Replace every root handler with *handler* (what the seed's wrapper did).

    Args:
        handler: The new root handler.
        level: The root logger's level, if any.
        levels: The parent's levels to follow instead (see
            :meth:`~gymnasiarch.logserver.LogTicket.client_config`): each
            logger then sends what the parent would hand to a handler.

    Raises:
        ValueError: *levels* is malformed.
    """
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    if levels is not None:
        apply_levels(levels)
    elif level is not None:
        root.setLevel(level)
