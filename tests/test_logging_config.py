"""gymnasiarch.logging.configure: one rendering for the parent's and the children's records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import anyio
import pytest
import structlog

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch.logging import configure

L = "targets.logs"


@pytest.fixture
def fresh_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


async def test_json_lines_for_parent_and_children(fresh_structlog: None) -> None:
    """Without a terminal: one JSON object per line, children's records with their name."""
    out = io.StringIO()
    configure(stream=out)
    logging.getLogger("parent").info("from the parent")
    structlog.get_logger("parent.structured").info("structured parent", step=1)
    with anyio.fail_after(20):
        await Supervisor([ChildSpec("kid", f"{L}:burst", args=(2,), restart="temporary")]).run()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    by_event = {line["event"]: line for line in lines}
    assert by_event["from the parent"]["level"] == "info"
    assert by_event["structured parent"]["step"] == 1
    assert by_event["record 1"]["child"] == "kid"
    assert by_event["record 1"]["logger"] == "targets.logs"
    assert "timestamp" in by_event["record 0"]


def test_private_attributes_libraries_stamp_are_left_out(fresh_structlog: None) -> None:
    """An attribute private by name (Ray stamps ``_ray_timestamp_ns``) is no field of ours."""
    out = io.StringIO()
    configure(stream=out)
    logging.getLogger("parent").info("stamped", extra={"_library_stamp": 1, "step": 2})
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["step"] == 2
    assert not [key for key in line if key.startswith("_")]


async def test_console_output_cannot_be_forged(fresh_structlog: None) -> None:
    """Newlines and escape sequences from a child are escaped; tracebacks are indented."""
    out = io.StringIO()
    configure(stream=out, renderer="console")
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
            "msg": "ok\n2026-01-01 [info     ] forged line\x1b[2J",
            "exc_text": "Traceback (most recent call last):\nValueError: boom",
            "child": "evil",
        }
    )
    logging.getLogger("x").handle(record)
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\\x0a2026-01-01 [info     ] forged line\\x1b[2J" in text
    lines = text.splitlines()
    assert lines[0].count("forged line") == 1
    assert all(line.startswith("    ") for line in lines[1:])


def test_unknown_renderer_is_refused() -> None:
    with pytest.raises(ValueError, match="renderer"):
        configure(renderer="xml")  # type: ignore[arg-type]
