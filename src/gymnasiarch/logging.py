"""One log stream for the supervisor and all its children, rendered by structlog.

:func:`configure` installs a single root handler whose structlog
``ProcessorFormatter`` renders every record the same way: the parent's own
(stdlib or structlog), and those its children sent, which carry a ``child``
field. On a terminal the output is structlog's colourful console format;
otherwise one JSON object per line, for machines. Control characters in
what a child sent cannot forge a line on the console: they are escaped, and
the lines of a traceback are indented.

Children filter their records by the parent's levels, logger by logger, so
that what the parent would drop is not even sent. Python's logging has no
hook for a change of level: after changing levels while children run, call
:func:`update_child_levels`, or change a level with :func:`set_level`,
which does both.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any, Literal

import structlog

from gymnasiarch.logserver import push_levels

__all__ = ["add_child_exception", "configure", "set_level", "update_child_levels"]

Renderer = Literal["auto", "console", "json"]

# C0 controls, DEL and C1 controls, escaped as \xNN (newline and tab too).
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


def add_child_exception(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    """A structlog processor: a child's traceback as the event's ``exception``.

    A child's exception arrives as text (the record's ``exc_text``), not as
    ``exc_info``, which structlog's ``ProcessorFormatter`` reads: without
    this, a parent that sets up its own ``ProcessorFormatter`` renders a
    child's ``log.exception()`` without its traceback. Put it in the
    formatter's ``foreign_pre_chain`` (:func:`configure` does).
    """
    record = event_dict.get("_record")
    text = getattr(record, "exc_text", None)
    if text and "exception" not in event_dict:
        event_dict["exception"] = text
    return event_dict


def _escape_for_console(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    """No text a child sent, key or value, may start a line of its own on the console."""
    escaped: dict[str, Any] = {}
    for key, value in event_dict.items():
        shown = value
        if key == "exception" and isinstance(value, str):
            shown = "\n".join("    " + _escape(line) for line in value.splitlines())
        elif isinstance(value, str):
            shown = _escape(value)
        escaped[_escape(key) if isinstance(key, str) else key] = shown
    return escaped


_FORMATTER_META = frozenset({"_record", "_from_structlog"})


def _drop_private(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Leave out attributes private by name that libraries stamp on every record.

    Ray's driver, for one, adds ``_ray_timestamp_ns`` to all of them.
    """
    for key in [k for k in event_dict if k.startswith("_") and k not in _FORMATTER_META]:
        del event_dict[key]
    return event_dict


def _pre_chain() -> list[Any]:
    """What every record gets before rendering, whatever its origin."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_private,
        structlog.processors.TimeStamper(fmt="iso"),
    ]


def configure(
    level: int | str = logging.INFO,
    *,
    renderer: Renderer = "auto",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Render all records, the parent's and its children's, through structlog.

    Replaces the root logger's handlers with one handler on *stream*, and
    configures structlog so that the parent's structlog calls go through it
    too.

    Args:
        level: The root logger's level.
        renderer: ``"console"`` (coloured when *stream* is a terminal),
            ``"json"`` (one object per line), or ``"auto"``: console on a
            terminal, JSON otherwise.
        stream: Where to write; standard error by default.

    Returns:
        The installed handler.

    Raises:
        ValueError: An unknown renderer.
    """
    if renderer not in ("auto", "console", "json"):
        raise ValueError(f"renderer: expected one of auto, console, json, got {renderer!r}")
    stream = stream if stream is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    console = renderer == "console" or (renderer == "auto" and tty)
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if console:
        final += [_escape_for_console, structlog.dev.ConsoleRenderer(colors=tty)]
    else:
        final += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_pre_chain(), add_child_exception],
        processors=final,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(
        processors=[
            *_pre_chain(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler


def update_child_levels() -> None:
    """Send the parent's current logging configuration to every running child.

    Call it after changing a level (``logger.setLevel``), a handler's level,
    ``logging.disable`` or a logger's ``disabled`` while children run:
    stdlib logging tells nobody of such a change. Every log server of this
    process (each supervisor runs one) sends the new levels to each child
    connected to it; the children apply them within milliseconds, without
    a restart, and send from then on what the parent now handles.

    Returns at once; safe from any thread and from a signal handler.
    """
    push_levels()


def set_level(logger: str | logging.Logger | None, level: int | str) -> None:
    """Set a logger's level, in this process and in every running child.

    ``set_level("sim", "DEBUG")`` is ``logging.getLogger("sim").setLevel("DEBUG")``
    followed by :func:`update_child_levels`.

    Args:
        logger: A logger, or its name (``None`` or ``""``: the root logger).
        level: A level, as a number or a name (``"DEBUG"``).

    Raises:
        ValueError: An unknown level name.
        TypeError: A level that is neither a number nor a name.
    """
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger or None)
    target.setLevel(level)
    update_child_levels()
