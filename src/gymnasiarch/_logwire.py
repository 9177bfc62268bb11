"""Log records between a child and its parent, as plain data.

A child's handler turns each record into a dict of allowlisted plain fields;
the parent checks every field's type, turns the dict back into a
:class:`logging.LogRecord` and hands it to the logger of the same name, so
the parent's configuration decides levels, handlers and format. The child's
identity is stamped by the parent from the authenticated connection the
record came on, never taken from the payload, and a child cannot log as
one of gymnasiarch's own loggers.

Both sides run once per record, so both are written for speed: fields the
parent can derive (``filename``, ``module``, ``msecs``, ``levelname``) and
fields that are ``None`` do not travel, and the parent builds its record
without ``LogRecord.__init__``, whose work (the time, the thread, the
process) would describe the parent, not the child.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import traceback
from typing import Any

from gymnasiarch._wire import WireError

_NUMBER = (int, float)
_INT = (int,)
_STR = (str,)

# The fields that travel, with the types the parent accepts. Everything else
# is resolved in the child: args are merged into msg, exc_info becomes text.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": _STR,
    "levelno": _INT,
    "msg": _STR,
    "created": _NUMBER,
    "pathname": _STR,
    "lineno": _INT,
    "funcName": _STR,
    "thread": _INT,
    "threadName": _STR,
    "process": _INT,
    "processName": _STR,
    "stack_info": _STR,
    "exc_text": _STR,
}
_REQUIRED = ("name", "levelno", "msg")
_REQUIRED_KEYS = frozenset(_REQUIRED)
# The compact form our own client sends: the fields by position, then the
# extras (an object or null). It saves the keys' encoding and decoding on
# both sides of every record; the object form stays accepted.
ROW: tuple[str, ...] = (*_FIELD_TYPES, "extra")
_ROW_TYPES = tuple(_FIELD_TYPES.items())
_MSG = ROW.index("msg")
_EXC_TEXT = ROW.index("exc_text")
# Required fields a child must fill in even when its record has None there.
_FILLED_IN_CHILD = tuple((ROW.index(name), name) for name in ("name", "levelno"))
# What a parent's record has where the child sent nothing.
_DEFAULTS: dict[str, Any] = {
    "args": None,
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "pathname": "",
    "filename": "",
    "module": "",
    "lineno": 0,
    "funcName": None,
    "thread": None,
    "threadName": None,
    "process": None,
    "processName": None,
    **({"taskName": None} if sys.version_info >= (3, 12) else {}),
}
# Every attribute a LogRecord has (3.12 adds taskName): extras may not shadow them.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "child",
    "taskName",
}
_PLAIN = (str, int, float, bool, type(None))
# Extras a child may not set: the record's own attributes and methods, and
# the keys structlog's renderers show as the level, logger, time and event.
_RESERVED = (
    _STANDARD
    | set(dir(logging.LogRecord))
    | {"event", "level", "logger", "logger_name", "timestamp", "exception", "stack"}
)
_OWN_LOGGERS = "gymnasiarch"
# When logging was loaded: the origin of relativeCreated, as the stdlib counts it.
_START: float = getattr(logging, "_startTime", time.time())


def _plain(value: Any) -> Any:
    return value if isinstance(value, _PLAIN) else repr(value)


def _sendable(name: str, value: Any) -> Any:
    """*value* as the parent accepts it in field *name* (``None``: leave it out).

    A child must never send a record that would make the parent close its
    connection, whatever odd record its own code made by hand.
    """
    kinds = _FIELD_TYPES[name]
    if value is None and name not in _REQUIRED:
        return None
    if type(value) in kinds:  # the usual case: exactly int, float or str
        return value
    if kinds is _INT:
        try:
            return int(value)
        except (TypeError, ValueError):
            return logging.INFO if name == "levelno" else 0
    if kinds is _NUMBER:
        return float(value) if isinstance(value, _NUMBER) else 0.0
    return str(value)


def record_to_row(record: logging.LogRecord) -> list[Any]:
    """Flatten *record* into the compact row form (see :data:`ROW`).

    ``extra=`` fields travel when plain (others as their ``repr``). A
    structlog event dict (``ProcessorFormatter.wrap_for_formatter`` puts it
    in ``msg``) travels as its ``event`` text plus its other keys as extras,
    bound context variables included.
    """
    source = record.__dict__
    row: list[Any] = []
    for name, kinds in _ROW_TYPES:
        value = source.get(name)
        row.append(value if value is None or type(value) in kinds else _sendable(name, value))
    for index, name in _FILLED_IN_CHILD:
        if row[index] is None:
            row[index] = _sendable(name, None)
    extra = {
        key: _plain(value)
        for key, value in source.items()
        if key not in _STANDARD and key[0] != "_"
    }
    if isinstance(record.msg, dict):
        event = dict(record.msg)
        row[_MSG] = str(event.pop("event", ""))
        text = event.pop("exception", None)
        if isinstance(text, str):
            row[_EXC_TEXT] = text
        extra.update((str(key), _plain(value)) for key, value in event.items())
    else:
        row[_MSG] = record.getMessage()
    if record.exc_info:
        row[_EXC_TEXT] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    row.append(extra or None)
    return row


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """Flatten *record* into the object form: :func:`record_to_row` with keys."""
    return {
        key: value
        for key, value in zip(ROW, record_to_row(record), strict=True)
        if value is not None
    }


def _check(data: object) -> dict[str, Any]:
    """*data* itself, once every field is known and of the type the parent needs.

    Raises:
        WireError: A field is missing, unknown, or of the wrong type.
    """
    if type(data) is list:
        data, extra = _row_fields(data)
    elif type(data) is dict:
        extra = data.pop("extra", None)
        for key, value in data.items():
            kinds = _FIELD_TYPES.get(key)
            if kinds is None:
                raise WireError(f"a record has an unknown field {key!r}")
            if type(value) not in kinds:
                raise WireError(f"record field {key!r} has type {type(value).__name__}")
    else:
        raise WireError("a record is neither an object nor a row")
    if not data.keys() >= _REQUIRED_KEYS:
        missing = sorted(_REQUIRED_KEYS - data.keys())[0]
        raise WireError(f"a record has no {missing!r}")
    if extra is not None:
        if type(extra) is not dict:
            raise WireError("record field 'extra' is not an object")
        for key, value in extra.items():
            if key in _RESERVED or key.startswith("_") or not key.isidentifier():
                # It could overwrite what the parent checked or stamps, or
                # what its renderer shows (level, logger...), or not be a name.
                continue
            if not isinstance(value, _PLAIN):
                raise WireError(f"extra field {key!r} is not plain data")
            data[key] = value
    return data


@functools.lru_cache(maxsize=1024)
def _file_and_module(pathname: str) -> tuple[str, str]:
    # A child logs from a handful of files: derive their names once.
    filename = os.path.basename(pathname)
    return filename, os.path.splitext(filename)[0]


def _row_fields(row: list[Any]) -> tuple[dict[str, Any], Any]:
    """The checked fields of a row (the ones it has), and its extras, in one pass."""
    if len(row) != len(ROW):
        raise WireError(f"a record row has {len(row)} fields, not {len(ROW)}")
    fields = {}
    # The extras, last in the row, are not zipped: they are checked after.
    for (key, kinds), value in zip(_ROW_TYPES, row, strict=False):
        if value is not None:
            if type(value) not in kinds:
                raise WireError(f"record field {key!r} has type {type(value).__name__}")
            fields[key] = value
    return fields, row[-1]


def make_record(data: object, child: str) -> logging.LogRecord:
    """The parent's LogRecord for a record *child* sent (*data* is used up).

    Raises:
        WireError: The record is malformed.
    """
    fields = _check(data)
    name: str = fields["name"]
    if name == _OWN_LOGGERS or name.startswith(_OWN_LOGGERS + "."):
        # Only the supervisor speaks as gymnasiarch.*: a child's records
        # from those loggers go under its own gymnasiarch.child.<name>.
        own = f"{_OWN_LOGGERS}.child.{child}"
        if not (name == own or name.startswith(own + ".")):
            fields["name"] = own
    created = fields.setdefault("created", time.time())
    record = logging.LogRecord.__new__(logging.LogRecord)
    attributes = record.__dict__
    attributes.update(_DEFAULTS)
    attributes.update(fields)
    pathname = attributes["pathname"]
    if pathname:
        attributes["filename"], attributes["module"] = _file_and_module(pathname)
    attributes["levelname"] = logging.getLevelName(fields["levelno"])
    attributes["msecs"] = (created - int(created)) * 1000
    attributes["relativeCreated"] = (created - _START) * 1000
    attributes["child"] = child  # from the connection, not the payload
    return record


# getLogger takes logging's module lock on every call; a logger, once made,
# is never replaced, so the parent looks each child's few names up once.
_logger_named = functools.lru_cache(maxsize=1024)(logging.getLogger)


def reinject(record: logging.LogRecord) -> None:
    """Hand *record* to the parent's logger of the same name."""
    logger = _logger_named(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
