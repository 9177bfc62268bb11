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

import contextlib
import functools
import logging
import os
import sys
import time
import traceback
from typing import Any

from gymnasiarch._wire.frames import WireError

_NUMBER = (int, float)
_INT = (int,)
_STR = (str,)

# The fields that travel, with the types the parent accepts. Everything else
# is resolved in the child: args are merged into msg, exc_info becomes text.
# Their order is a row's (see ROW), which make_record unpacks in this order.
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
# Python 3.12 gave records a taskName; the child's task means nothing here.
_HAS_TASK_NAME = sys.version_info >= (3, 12)
# The attributes of a record made by Logger.makeRecord, without extras.
_PLAIN_RECORD = logging.makeLogRecord({}).__dict__
# Every attribute a LogRecord has (3.12 adds taskName): extras may not shadow them.
_STANDARD = frozenset(_PLAIN_RECORD) | {
    "message",
    "asctime",
    "child",
    "taskName",
}
_PLAIN = (str, int, float, bool, type(None))
# How many attributes a plain record has, and which came last (an
# attribute added later would come after it).
_PLAIN_RECORD_SIZE = len(_PLAIN_RECORD)
_PLAIN_RECORD_LAST = next(reversed(_PLAIN_RECORD))
# Extras a child may not set: the record's own attributes and methods, and
# the keys structlog's renderers show as the level, logger, time and event.
_RESERVED = (
    _STANDARD
    | set(dir(logging.LogRecord))
    | {"event", "level", "logger", "logger_name", "timestamp", "exception", "stack"}
)
_OWN_LOGGERS = "gymnasiarch"
_OWN_PREFIX = _OWN_LOGGERS + "."
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

    It runs in the child's logging call, once per record: the fields are
    checked one by one without a loop (in :data:`ROW`'s order), and a record
    with no attribute beyond a plain record's has no extras to look for.
    """
    source = record.__dict__
    get = source.get
    name, levelno, created = get("name"), get("levelno"), get("created")
    pathname, lineno, func = get("pathname"), get("lineno"), get("funcName")
    thread, thread_name = get("thread"), get("threadName")
    process, process_name = get("process"), get("processName")
    stack, exc_text = get("stack_info"), get("exc_text")
    row: list[Any] = [
        name if type(name) is str else _sendable("name", name),
        levelno if type(levelno) is int else _sendable("levelno", levelno),
        None,  # msg, below
        created if type(created) is float else _sendable("created", created),
        pathname if pathname is None or type(pathname) is str else _sendable("pathname", pathname),
        lineno if lineno is None or type(lineno) is int else _sendable("lineno", lineno),
        func if func is None or type(func) is str else _sendable("funcName", func),
        thread if thread is None or type(thread) is int else _sendable("thread", thread),
        thread_name
        if thread_name is None or type(thread_name) is str
        else _sendable("threadName", thread_name),
        process if process is None or type(process) is int else _sendable("process", process),
        process_name
        if process_name is None or type(process_name) is str
        else _sendable("processName", process_name),
        stack if stack is None or type(stack) is str else _sendable("stack_info", stack),
        exc_text if exc_text is None or type(exc_text) is str else _sendable("exc_text", exc_text),
    ]
    if len(source) == _PLAIN_RECORD_SIZE and next(reversed(source)) == _PLAIN_RECORD_LAST:
        extra: dict[str, Any] = {}  # a plain record: its attributes are the standard ones
    else:
        extra = {
            key: _plain(value)
            for key, value in source.items()
            if key not in _STANDARD and key[0] != "_"
        }
    msg = record.msg
    if isinstance(msg, dict):
        event = dict(msg)
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


def _check_fields(data: dict[str, Any]) -> dict[str, Any]:
    """*data* (the object form) itself, once every field is known and of its type.

    Raises:
        WireError: A field is missing, unknown, or of the wrong type.
    """
    for key, value in data.items():
        kinds = _FIELD_TYPES.get(key)
        if kinds is None:
            raise WireError(f"a record has an unknown field {key!r}")
        if type(value) not in kinds:
            raise WireError(f"record field {key!r} has type {type(value).__name__}")
    if not data.keys() >= _REQUIRED_KEYS:
        missing = sorted(_REQUIRED_KEYS - data.keys())[0]
        raise WireError(f"a record has no {missing!r}")
    return data


_NONE_ALLOWED = tuple(name not in _REQUIRED_KEYS for name in _FIELD_TYPES)


def _row_error(row: list[Any]) -> WireError:
    """What is wrong with *row*, whose fields did not pass make_record's check."""
    if len(row) != len(ROW):
        return WireError(f"a record row has {len(row)} fields, not {len(ROW)}")
    for (key, kinds), value, may_be_none in zip(_ROW_TYPES, row, _NONE_ALLOWED, strict=False):
        if value is None:
            if not may_be_none:
                return WireError(f"a record has no {key!r}")
        elif type(value) not in kinds:
            return WireError(f"record field {key!r} has type {type(value).__name__}")
    return WireError("a record row is malformed")  # pragma: no cover - the check above agrees


def _add_extra(attributes: dict[str, Any], extra: object) -> None:
    """Put a record's plain extras among its *attributes*, none over a standard one.

    Raises:
        WireError: The extras are not an object of plain values.
    """
    if type(extra) is not dict:
        raise WireError("record field 'extra' is not an object")
    for key, value in extra.items():
        if key in _RESERVED or key.startswith("_") or not key.isidentifier():
            # It could overwrite what the parent checked or stamps, or
            # what its renderer shows (level, logger...), or not be a name.
            continue
        if not isinstance(value, _PLAIN):
            raise WireError(f"extra field {key!r} is not plain data")
        attributes[key] = value


def _object_to_row(data: dict[str, Any]) -> list[Any]:
    """The row of a record sent in the object form (*data* is used up).

    Raises:
        WireError: A field is missing, unknown, or of the wrong type.
    """
    extra = data.pop("extra", None)
    for key, value in data.items():
        kinds = _FIELD_TYPES.get(key)
        if kinds is None:
            raise WireError(f"a record has an unknown field {key!r}")
        if value is None and key not in _REQUIRED_KEYS:
            continue  # null: as if it were left out, as in a row
        if type(value) not in kinds:
            raise WireError(f"record field {key!r} has type {type(value).__name__}")
    return [data.get(key) for key in _FIELD_TYPES] + [extra]


@functools.lru_cache(maxsize=1024)
def _file_and_module(pathname: str) -> tuple[str, str]:
    # A child logs from a handful of files: derive their names once.
    filename = os.path.basename(pathname)
    return filename, os.path.splitext(filename)[0]


def _own_name(name: str, child: str) -> str:
    """Only the supervisor speaks as gymnasiarch.*: a child's such records are its own."""
    own = f"{_OWN_LOGGERS}.child.{child}"
    return name if name == own or name.startswith(own + ".") else own


def make_record(data: object, child: str) -> logging.LogRecord:
    """The parent's LogRecord for a record *child* sent (*data* is used up).

    Once per record, so written for speed: the fields' types checked one by
    one without a loop, the record's attributes in one dict display, and no
    ``LogRecord.__init__`` (its time, thread and process would be the
    parent's, not the child's).

    Raises:
        WireError: The record is malformed.
    """
    if type(data) is dict:
        data = _object_to_row(data)
    elif type(data) is not list:
        raise WireError("a record is neither an object nor a row")
    if len(data) != len(ROW):
        raise _row_error(data)
    (
        name,
        levelno,
        msg,
        created,
        pathname,
        lineno,
        func_name,
        thread,
        thread_name,
        process,
        process_name,
        stack_info,
        exc_text,
        extra,
    ) = data
    # The types of _FIELD_TYPES, spelled out: half the cost of a loop over them.
    if (
        type(name) is not str
        or type(levelno) is not int
        or type(msg) is not str
        or (created is not None and type(created) is not float and type(created) is not int)
        or (pathname is not None and type(pathname) is not str)
        or (lineno is not None and type(lineno) is not int)
        or (func_name is not None and type(func_name) is not str)
        or (thread is not None and type(thread) is not int)
        or (thread_name is not None and type(thread_name) is not str)
        or (process is not None and type(process) is not int)
        or (process_name is not None and type(process_name) is not str)
        or (stack_info is not None and type(stack_info) is not str)
        or (exc_text is not None and type(exc_text) is not str)
    ):
        raise _row_error(data)
    if name == _OWN_LOGGERS or name.startswith(_OWN_PREFIX):
        name = _own_name(name, child)
    if created is None:
        created = time.time()
    if pathname:
        filename, module = _file_and_module(pathname)
    else:
        pathname = filename = module = ""
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__ = attributes = {
        "name": name,
        "msg": msg,
        "args": None,
        "levelname": logging.getLevelName(levelno),
        "levelno": levelno,
        "pathname": pathname,
        "filename": filename,
        "module": module,
        "exc_info": None,
        "exc_text": exc_text,
        "stack_info": stack_info,
        "lineno": 0 if lineno is None else lineno,
        "funcName": func_name,
        "created": created,
        "msecs": (created - int(created)) * 1000,
        "relativeCreated": (created - _START) * 1000,
        "thread": thread,
        "threadName": thread_name,
        "processName": process_name,
        "process": process,
        "child": child,  # from the connection, not the payload
    }
    if _HAS_TASK_NAME:
        attributes["taskName"] = None
    if extra is not None:
        _add_extra(attributes, extra)
    return record


# getLogger takes logging's module lock on every call; a logger, once made,
# is never replaced, so the parent looks each child's few names up once.
_logger_named = functools.lru_cache(maxsize=1024)(logging.getLogger)


def reinject(record: logging.LogRecord, logger: logging.Logger | None = None) -> None:
    """Hand *record* to the parent's logger of the same name (*logger*, if known)."""
    if logger is None:
        logger = _logger_named(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class ReinjectFailures:
    """What the parent's filters and handlers raised on one child's records, told on stderr.

    A filter or handler that raises on a record (``record.episode % 10`` on
    an episode that came as text) costs that record, as the same call in
    the parent's own code would; the records after it go on. Told on
    stderr, not through logging, whose failing filter may be the one that
    raised: each kind of error once per logger with its traceback, and at
    the end of the connection how many records it cost in all. Silent where
    ``logging.raiseExceptions`` is false, as logging's own reports are.
    """

    def __init__(self, child: str) -> None:
        self._child = child
        self._told: set[tuple[str, type[BaseException]]] = set()
        self._lost = 0

    def __enter__(self) -> ReinjectFailures:
        return self

    def __exit__(self, *_: object) -> None:
        if self._lost > len(self._told):
            self._tell(
                f"--- gymnasiarch: {self._lost} records of child {self._child!r} in all were "
                "lost to errors in the parent's log filters or handlers ---\n"
            )

    def note(self, record: logging.LogRecord, error: Exception) -> None:
        """*record* was lost to *error* (raised by the parent's logging)."""
        self._lost += 1
        key = (record.name, type(error))
        if key in self._told:
            return
        self._told.add(key)
        self._tell(
            f"--- gymnasiarch: a log filter or handler of the parent's raised on a record of "
            f"child {self._child!r} (logger {record.name!r}, {record.levelname}); the record "
            "is lost, the child's others go on ---\n"
            + "".join(traceback.format_exception(error))
            + f"Message: {str(record.msg)[:200]!r}\n"
        )

    @staticmethod
    def _tell(text: str) -> None:
        stream = sys.stderr
        if not logging.raiseExceptions or stream is None:
            return
        with contextlib.suppress(Exception):  # a closed stderr: nowhere left to tell
            stream.write(text)
            stream.flush()


class LoggerCache:
    """The logger of the last record's name: a child's records mostly share one.

    Saves a lookup per record in the parent's busiest loop.
    """

    def __init__(self) -> None:
        self._name = ""
        self._logger = logging.getLogger()

    def __call__(self, name: str) -> logging.Logger:
        """The logger named *name*."""
        if name != self._name:
            self._name, self._logger = name, _logger_named(name)
        return self._logger
