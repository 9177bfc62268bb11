"""Log records between a child and its parent, as plain data.

A child's handler turns each record into a dict of allowlisted plain fields;
the parent checks every field's type, turns the dict back into a
:class:`logging.LogRecord` and hands it to the logger of the same name, so
the parent's configuration decides levels, handlers and format. The child's
identity is stamped by the parent from the authenticated connection the
record came on, never taken from the payload, and a child cannot log as
one of gymnasiarch's own loggers.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from gymnasiarch._wire import WireError

_NUMBER = (int, float)
_OPTIONAL_INT = (int, type(None))
_OPTIONAL_STR = (str, type(None))

# The fields of a LogRecord that travel, with the types the parent accepts.
# Everything else is resolved in the child: args are merged into msg,
# exc_info becomes text.
_FIELD_TYPES: dict[str, tuple[type, ...] | type] = {
    "name": str,
    "levelno": int,
    "pathname": str,
    "filename": str,
    "module": str,
    "lineno": int,
    "funcName": str,
    "created": _NUMBER,
    "msecs": _NUMBER,
    "thread": _OPTIONAL_INT,
    "threadName": _OPTIONAL_STR,
    "process": _OPTIONAL_INT,
    "processName": _OPTIONAL_STR,
    "stack_info": _OPTIONAL_STR,
    "msg": str,
    "exc_text": _OPTIONAL_STR,
}
_REQUIRED = ("name", "levelno", "msg")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "child"}
_PLAIN = (str, int, float, bool, type(None))
_OWN_LOGGERS = "gymnasiarch"


def _plain(value: Any) -> Any:
    return value if isinstance(value, _PLAIN) else repr(value)


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """Flatten *record* into plain data; ``extra=`` fields travel when plain.

    A structlog event dict (``ProcessorFormatter.wrap_for_formatter`` puts it
    in ``msg``) travels as its ``event`` text plus its other keys as extras,
    bound context variables included.
    """
    data = {name: getattr(record, name, None) for name in _FIELD_TYPES if name != "msg"}
    extra = {
        key: _plain(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }
    if isinstance(record.msg, dict):
        event = dict(record.msg)
        data["msg"] = str(event.pop("event", ""))
        extra.update((str(key), _plain(value)) for key, value in event.items())
    else:
        data["msg"] = record.getMessage()
    if record.exc_info:
        data["exc_text"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    if extra:
        data["extra"] = extra
    return data


def _checked(data: object) -> dict[str, Any]:
    """The record's fields, each of the type the parent's logging needs.

    Raises:
        WireError: A field is missing or of the wrong type.
    """
    if not isinstance(data, dict):
        raise WireError("a record is not an object")
    fields: dict[str, Any] = {}
    for key, kinds in _FIELD_TYPES.items():
        if key not in data:
            if key in _REQUIRED:
                raise WireError(f"a record has no {key!r}")
            continue
        value = data[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise WireError(f"record field {key!r} has type {type(value).__name__}")
        fields[key] = value
    extra = data.get("extra")
    if extra is not None:
        if not isinstance(extra, dict):
            raise WireError("record field 'extra' is not an object")
        for key, value in extra.items():
            if key in _STANDARD or key.startswith("_"):
                continue  # could overwrite what the parent checked or stamps
            if not isinstance(value, _PLAIN):
                raise WireError(f"extra field {key!r} is not plain data")
            fields[key] = value
    return fields


def make_record(data: object, child: str) -> logging.LogRecord:
    """The parent's LogRecord for a record *child* sent.

    Raises:
        WireError: The record is malformed.
    """
    fields = _checked(data)
    fields["args"] = None
    fields["exc_info"] = None
    fields["levelname"] = logging.getLevelName(fields["levelno"])
    fields["child"] = child  # from the connection, not the payload
    name = fields["name"]
    if name == _OWN_LOGGERS or name.startswith(_OWN_LOGGERS + "."):
        # Only the supervisor speaks as gymnasiarch.*: a child's records
        # from those loggers go under its own gymnasiarch.child.<name>.
        own = f"{_OWN_LOGGERS}.child.{child}"
        if not (name == own or name.startswith(own + ".")):
            fields["name"] = own
    return logging.makeLogRecord(fields)


def reinject(record: logging.LogRecord) -> None:
    """Hand *record* to the parent's logger of the same name."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
