"""Log records between a child and its parent, as plain data.

A child's handler turns each record into a dict of allowlisted plain fields;
the parent turns it back into a :class:`logging.LogRecord` and hands it to
the logger of the same name, so the parent's configuration decides levels,
handlers and format. The child's identity is stamped by the parent from the
channel the record came on, never taken from the payload.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

# Fields of a LogRecord that travel. Everything else (args, exc_info) is
# resolved in the child: args are merged into msg, exc_info becomes text.
_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "thread",
    "threadName",
    "process",
    "processName",
    "stack_info",
)
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_PLAIN = (str, int, float, bool, type(None))


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """Flatten *record* into plain data; ``extra=`` fields travel when plain."""
    data = {name: getattr(record, name, None) for name in _FIELDS}
    data["msg"] = record.getMessage()
    if record.exc_info:
        data["exc_text"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    elif record.exc_text:
        data["exc_text"] = record.exc_text
    extra = {
        key: value if isinstance(value, _PLAIN) else repr(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }
    if extra:
        data["extra"] = extra
    return data


def reinject(data: dict[str, Any], child: str) -> None:
    """Hand a record a child sent to the parent's logger of the same name."""
    fields = {key: data.get(key) for key in _FIELDS if key in data}
    fields.update(data.get("extra") or {})
    fields["msg"] = str(data.get("msg", ""))
    fields["args"] = None
    fields["exc_text"] = data.get("exc_text")
    fields["child"] = child  # from the channel, not the payload
    levelno = fields.get("levelno")
    if not isinstance(levelno, int):
        levelno = fields["levelno"] = logging.INFO
    fields["levelname"] = logging.getLevelName(levelno)
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(str(fields.get("name") or "root"))
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class ChannelHandler(logging.Handler):
    """Send each record to the parent through *send* (a child's channel)."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        """Send *record* as plain data; a failure is reported like any handler's."""
        try:
            self._send(("log", record_to_dict(record)))
        except Exception:
            self.handleError(record)
