"""The parent's record building: every field's type is checked, whatever form it came in."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gymnasiarch._wire.frames import WireError
from gymnasiarch._wire.records import (
    _FIELD_TYPES,
    _STANDARD,
    ROW,
    _plain,
    _sendable,
    make_record,
    record_to_row,
)

GOOD_ROW: list[Any] = [
    "app.sim",  # name
    logging.WARNING,  # levelno
    "hello",  # msg
    1700000000.25,  # created
    "/srv/app/sim.py",  # pathname
    12,  # lineno
    "step",  # funcName
    140000,  # thread
    "MainThread",  # threadName
    4242,  # process
    "MainProcess",  # processName
    None,  # stack_info
    None,  # exc_text
    {"episode": 3},  # extra
]


def test_a_good_row_becomes_the_record_it_describes() -> None:
    record = make_record(list(GOOD_ROW), "env")
    assert (record.name, record.levelno, record.getMessage()) == ("app.sim", 30, "hello")
    assert (record.levelname, record.filename, record.module) == ("WARNING", "sim.py", "sim")
    assert (record.lineno, record.funcName, record.process) == (12, "step", 4242)
    assert record.msecs == 250.0
    assert record.child == "env"  # type: ignore[attr-defined]
    assert record.episode == 3  # type: ignore[attr-defined]
    assert logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s").format(record)


def test_a_row_of_nones_where_allowed_gets_the_stdlib_defaults() -> None:
    row: list[Any] = ["app", logging.INFO, "bare"] + [None] * (len(ROW) - 3)
    record = make_record(row, "env")
    assert (record.pathname, record.filename, record.module, record.lineno) == ("", "", "", 0)
    assert record.created > 0
    assert record.funcName is None


@pytest.mark.parametrize("field", list(_FIELD_TYPES))
@pytest.mark.parametrize("form", ["row", "object"])
def test_each_field_of_the_wrong_type_is_refused_by_name(field: str, form: str) -> None:
    """True is a bool: no field takes one (levelno=True would pass an isinstance check)."""
    row = list(GOOD_ROW)
    row[ROW.index(field)] = True
    data: Any = row if form == "row" else dict(zip(ROW, row, strict=True))
    with pytest.raises(WireError, match=f"'{field}' has type bool"):
        make_record(data, "env")


@pytest.mark.parametrize("field", ["name", "levelno", "msg"])
def test_a_required_field_may_not_be_missing(field: str) -> None:
    row = list(GOOD_ROW)
    row[ROW.index(field)] = None
    with pytest.raises(WireError, match=f"no '{field}'"):
        make_record(row, "env")


def test_a_row_of_the_wrong_length_or_a_stranger_is_refused() -> None:
    with pytest.raises(WireError, match="row has 13 fields"):
        make_record(GOOD_ROW[:-1], "env")
    with pytest.raises(WireError, match="neither an object nor a row"):
        make_record("app hello", "env")


def test_a_child_cannot_speak_as_the_supervisor() -> None:
    row = list(GOOD_ROW)
    row[0] = "gymnasiarch.supervisor"
    assert make_record(row, "env").name == "gymnasiarch.child.env"
    row[0] = "gymnasiarchy"  # only the name and its children are ours
    assert make_record(row, "env").name == "gymnasiarchy"


# -- the child's side: record_to_row ---------------------------------------------------


def _row_the_slow_way(record: logging.LogRecord) -> list[Any]:
    """record_to_row's contract, field by field in a loop (the oracle)."""
    source = record.__dict__
    row = []
    for name, kinds in _FIELD_TYPES.items():
        value = source.get(name)
        if name in ("name", "levelno") or not (value is None or type(value) in kinds):
            value = _sendable(name, value)
        row.append(value)
    extra = {k: _plain(v) for k, v in source.items() if k not in _STANDARD and k[0] != "_"}
    row[ROW.index("msg")] = record.getMessage()
    row.append(extra or None)
    return row


def _records() -> list[logging.LogRecord]:
    logger = logging.getLogger("app.sim")
    plain = logger.makeRecord("app.sim", 20, "/srv/sim.py", 3, "step %d", (7,), None, "step")
    with_extra = logger.makeRecord(
        "app.sim", 30, "/srv/sim.py", 4, "hi", (), None, "f", extra={"episode": 3, "obj": object}
    )
    # A filter that swapped an attribute for one of its own: as many attributes as plain.
    swapped = logger.makeRecord("app.sim", 20, "/srv/sim.py", 5, "x", (), None)
    del swapped.stack_info
    swapped.user = "ada"
    formatted = logger.makeRecord("app.sim", 20, "/srv/sim.py", 6, "y", (), None)
    logging.Formatter("%(asctime)s %(message)s").format(formatted)  # adds message, asctime
    odd = logging.makeLogRecord(
        {"name": None, "levelno": "20", "created": 5, "lineno": "9", "thread": 1.5, "msg": 42}
    )
    odd.processName = b"bytes"
    return [plain, with_extra, swapped, formatted, odd]


@pytest.mark.parametrize("index", range(5), ids=["plain", "extra", "swapped", "formatted", "odd"])
def test_a_record_becomes_the_row_the_contract_says(index: int) -> None:
    record = _records()[index]
    assert record_to_row(record) == _row_the_slow_way(record)
