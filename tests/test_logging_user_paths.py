"""The log pipeline on the paths ported code takes (a newcomer's trial, issue 13's follow-up).

Real children under a ``Supervisor``; the parent's logging is the test's:
a handler on the root logger keeps what arrives.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._cli.control import status_rows
from gymnasiarch._wire.logclient import LogClientHandler
from gymnasiarch.logging import add_child_exception
from gymnasiarch.logserver import LogServer

T = "targets.log_user_paths"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def named(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == name]


@pytest.fixture
def kept() -> Iterator[Kept]:
    root = logging.getLogger()
    handler = Kept()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def run(*specs: ChildSpec) -> None:
    with anyio.fail_after(30):
        await Supervisor(list(specs)).run()


async def test_a_child_that_configures_its_own_logging_still_sends_records(kept: Kept) -> None:
    """``dictConfig`` in the child closes every handler: the child's record is still a record."""
    await run(ChildSpec("k", f"{T}:configures_its_own_levels", restart="transient"))
    (record,) = kept.named("sim.env")
    assert (record.levelno, record.getMessage(), record.episode) == (  # type: ignore[attr-defined]
        logging.INFO,
        "episode done",
        3,
    )


@pytest.mark.parametrize("ending", ["os._exit", "sigkill"])
async def test_an_error_logged_just_before_a_hard_end_arrives(kept: Kept, ending: str) -> None:
    """An ERROR record is on the socket before the call returns: last words are not lost."""
    await run(ChildSpec("k", f"{T}:last_words", args=(ending,), restart="temporary"))
    assert [r.getMessage() for r in kept.named("sim.env")] == ["calling the solver with bad input"]


async def test_odd_text_arrives_as_records(kept: Kept) -> None:
    """Not UTF-8, a bad format, a big message and a big extra: one record each, none lost."""
    await run(ChildSpec("k", f"{T}:odd_text", restart="transient"))
    records = kept.named("sim.env")
    messages = [r.getMessage() for r in records]
    assert messages[0] == "loading data-\\udcff.csv"  # the escape's text: any handler writes it
    assert messages[1].startswith("a record of this logger could not be sent (TypeError:")
    assert "Traceback" in (records[1].exc_text or "")
    big = messages[2]
    assert big.startswith("日" * 1000)
    assert big.endswith(" bytes cut]")
    assert 100_000 < len(big) < 300_000  # cut by bytes (3 a character), to fit, not to nothing
    assert messages[3] == "small message"
    assert records[3].episode == 3  # type: ignore[attr-defined]
    assert records[3].blob == "[600002 bytes cut]"  # type: ignore[attr-defined]
    assert messages[4:] == ["the end"]
    assert not [r for r in kept.records if r.name.startswith("gymnasiarch.child")]  # no stderr


async def test_a_nested_childs_output_and_records_share_its_logger(kept: Kept) -> None:
    """``grp/leaf``'s printed lines and its gymnasiarch records: one logger, by its path."""
    leaf = ChildSpec("leaf", f"{T}:prints", restart="transient")
    await run(Supervisor([leaf], name="grp", restart="transient"))  # type: ignore[arg-type]
    by_message = {r.getMessage(): r.name for r in kept.records}
    assert by_message["a line of output"] == "gymnasiarch.child.grp/leaf"
    assert by_message["a record of a gymnasiarch logger"] == "gymnasiarch.child.grp/leaf"


async def test_a_parent_filter_that_raises_costs_only_its_record(
    kept: Kept, capsys: pytest.CaptureFixture[str]
) -> None:
    """A filter that raises on one record: the others arrive, as records; stderr says so once."""

    def odd_numbers_only(record: logging.LogRecord) -> bool:
        number = int(record.getMessage().split()[-1])
        if number % 100 == 7:
            raise ValueError(f"cannot judge {number}")
        return True

    kept.addFilter(odd_numbers_only)
    await run(ChildSpec("k", f"{T}:burst", args=(1000,), restart="transient"))
    numbers = [int(r.getMessage().split()[-1]) for r in kept.named("sim.env")]
    assert numbers == [n for n in range(1000) if n % 100 != 7]
    told = capsys.readouterr().err
    assert told.count("a log filter or handler of the parent's raised") == 1
    assert "ValueError: cannot judge 7" in told
    assert "10 records of child 'k' in all were lost" in told


async def test_a_slow_parent_that_keeps_reading_loses_nothing_at_the_childs_end() -> None:
    """The end waits while the parent takes records, not ``close_timeout`` in all."""
    taken: list[str] = []
    done = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            taken.append(record.getMessage())
            done.wait(0.002)  # 2 ms a record: 1000 records take 2 s, close_timeout is 0.5 s

    logger = logging.getLogger("slow.parent")
    handler = Slow()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with anyio.fail_after(30):
            async with LogServer.unix() as server:
                ticket = server.admit("child")
                client = LogClientHandler(ticket.client_config(), close_timeout=0.5)
                for number in range(1000):
                    record = {"name": "slow.parent", "msg": f"r{number}", "levelno": logging.INFO}
                    client.emit(logging.makeLogRecord(record))
                await anyio.to_thread.run_sync(client.finish)
                await ticket.finished.wait()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    assert taken == [f"r{number}" for number in range(1000)]


async def test_a_parents_own_structlog_formatter_shows_a_childs_traceback() -> None:
    """structlog's ProcessorFormatter reads exc_info; add_child_exception brings exc_text in."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[structlog.stdlib.add_log_level, add_child_exception],
        )
    )
    logger = logging.getLogger("sim")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await run(ChildSpec("k", f"{T}:logs_an_exception", restart="transient"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "child boom"
    assert "KeyError: 'missing-agent'" in event["exception"]
    assert "Traceback (most recent call last)" in event["exception"]


async def test_a_crash_that_is_restarted_is_logged_with_the_childs_traceback(
    kept: Kept, tmp_path: Path
) -> None:
    """The supervisor's WARNING about a crash carries the child's traceback (its cause)."""
    crashing = ChildSpec("k", "targets.basic:crash_once_then_sleep", args=(str(tmp_path / "m"),))
    with anyio.fail_after(30):
        async with Supervisor([crashing]) as sup:
            with sup.events() as events:
                async for event in events:
                    if (event.kind, event.restarts) == ("started", 1):
                        break
            sup.stop()
    (warning,) = [r for r in kept.named("gymnasiarch.supervisor") if "raised" in r.getMessage()]
    assert warning.exc_info is not None
    text = logging.Formatter().formatException(warning.exc_info)
    assert "in crash_once_then_sleep" in text  # the child's own frame
    assert "Boom: first run" in text


async def test_a_parent_that_captures_warnings_gets_its_childrens_as_records(kept: Kept) -> None:
    """``logging.captureWarnings(True)`` in the parent: a child's warning, a py.warnings record."""
    logging.captureWarnings(True)
    try:
        await run(
            ChildSpec("k", f"{T}:warns", restart="transient", stderr_level="ERROR"),
        )
    finally:
        logging.captureWarnings(False)
    (record,) = kept.named("py.warnings")
    assert "UserWarning: the scenario file is old" in record.getMessage()
    assert record.child == "k"  # type: ignore[attr-defined]


async def test_a_record_with_many_small_extras_is_cut_not_the_connection(kept: Kept) -> None:
    """300 extras of 4 kB: over a record's size together; their text is cut, nothing else."""
    await run(ChildSpec("k", f"{T}:many_small_extras", restart="transient"))
    records = kept.named("sim.env")
    assert [r.getMessage() for r in records] == ["before", "many extras", "after"]
    assert records[1].extra_cut == "[300 fields, 1200600 bytes cut]"  # type: ignore[attr-defined]


async def test_status_of_a_child_with_a_huge_ready_value_still_answers() -> None:
    """The value is cut in the row: a status reply is one frame, for every child."""
    spec = ChildSpec("big", f"{T}:announces_a_big_value", ready_timeout=20)
    with anyio.fail_after(30):
        async with Supervisor([spec]) as sup:
            await sup.wait_ready("big")
            (row,) = status_rows(sup)
            sup.stop()
    assert isinstance(row["ready_value"], str)
    assert row["ready_value"].startswith('{"blob": "xxx')
    assert len(row["ready_value"]) == 4096
