"""A program's output as records (issue 16, "Output"): stderr_level, output="json", json_keys.

Real programs write real lines; the assertions are on the records the
parent's logging receives.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from gymnasiarch import Backoff, ChildSpec, Supervisor
from gymnasiarch.exceptions import FieldTypeError, FieldValueError, PrematureTaskDeathError
from gymnasiarch.ready import Line
from gymnasiarch.treefile import TreeFileError, load_tree

FAST = Backoff(base=0.01, cap=0.01, jitter=0)

LOGURU_KEYS = {
    "level": "record.level.name",
    "message": "record.message",
    "time": "record.time.timestamp",
    "extra": "record.extra",
}
STARTED = 1_700_000_000.25  # the times the program below says it logged at
FAILED = 1_700_000_007.5
FLAT = "2024-01-02T03:04:05.5+00:00"

# What loguru's serialize=True writes (loguru/_handler.py, _serialize_record),
# a flat line of the common shape, and lines that are not JSON objects.
PROGRAM = textwrap.dedent(
    f"""
    import json, sys

    def loguru(level, no, message, timestamp, extra):
        record = {{
            "elapsed": {{"repr": "0:00:01", "seconds": 1.0}},
            "exception": None,
            "extra": extra,
            "file": {{"name": "sim.py", "path": "/srv/sim.py"}},
            "function": "main",
            "level": {{"icon": "*", "name": level, "no": no}},
            "line": 12,
            "message": message,
            "module": "sim",
            "name": "sim",
            "process": {{"id": 1, "name": "MainProcess"}},
            "thread": {{"id": 2, "name": "MainThread"}},
            "time": {{"repr": "2023-11-14 22:13:20+00:00", "timestamp": timestamp}},
        }}
        return json.dumps({{"text": message + "\\n", "record": record}})

    bound = {{"user": "bob", "name": "sim-1"}}
    print(loguru("SUCCESS", 25, "started 100% of it", {STARTED}, bound))
    print("plain text, not JSON")
    print(json.dumps({{"level": "warning", "msg": "flat", "ts": "{FLAT}", "node": 7}}))
    print("[1, 2]")
    print(loguru("ERROR", 40, "failed", {FAILED}, {{}}), file=sys.stderr)
    print("{{not json", file=sys.stderr)
    print(json.dumps({{"level": "LOUD", "message": "odd level", "logger": "x"}}), file=sys.stderr)
    """
)


def _records(caplog: pytest.LogCaptureFixture, child: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == f"gymnasiarch.child.{child}"]


def _by_message(records: list[logging.LogRecord]) -> dict[str, logging.LogRecord]:
    return {r.getMessage(): r for r in records}


async def _run_to_end(*specs: ChildSpec) -> None:
    """Run each spec to its end, one after the other (the first end would end a shared tree)."""
    for spec in specs:
        async with Supervisor([spec]) as sup:
            await sup.wait()


def _once(name: str, command: list[str], **fields: object) -> ChildSpec:
    """A program run once: the supervisor ends with it."""
    return ChildSpec(name, command=command, restart="transient", significant=True, **fields)  # type: ignore[arg-type]


# -- the level of plain lines ------------------------------------------------------


async def test_stderr_level_sets_the_level_of_a_plain_stderr_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    script = "echo 'INFO mosaik: starting' >&2; echo out-line"
    await _run_to_end(
        _once("quiet", ["sh", "-c", script], stderr_level="info", stdout_level="DEBUG"),
        _once("plain", ["sh", "-c", script]),
    )
    quiet = _by_message(_records(caplog, "quiet"))
    assert quiet["INFO mosaik: starting"].levelno == logging.INFO
    assert quiet["INFO mosaik: starting"].stream == "stderr"  # type: ignore[attr-defined]
    assert quiet["out-line"].levelno == logging.DEBUG
    plain = _by_message(_records(caplog, "plain"))  # as before: WARNING and INFO
    assert plain["INFO mosaik: starting"].levelno == logging.WARNING
    assert plain["out-line"].levelno == logging.INFO


async def test_stderr_level_applies_to_a_python_child_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    spec = ChildSpec(
        "py",
        "os:system",
        args=("echo from-python-child >&2",),
        restart="transient",
        significant=True,
        stderr_level=logging.ERROR,
    )
    await _run_to_end(spec)
    assert _by_message(_records(caplog, "py"))["from-python-child"].levelno == logging.ERROR


def test_levels_take_names_and_numbers() -> None:
    def level(value: object) -> object:
        return ChildSpec("p", command=["true"], stderr_level=value).stderr_level  # type: ignore[arg-type]

    assert level("INFO") == level("info") == level(logging.INFO) == logging.INFO
    assert level("warn") == logging.WARNING
    assert level("TRACE") == logging.DEBUG  # loguru's, the nearest stdlib level
    assert level(5) == 5
    assert ChildSpec("p", command=["true"]).stderr_level == logging.WARNING
    with pytest.raises(FieldValueError, match=r"child 'p': stderr_level: no such level: 'LOUD'"):
        level("LOUD")
    with pytest.raises(FieldValueError, match=r"stdout_level: no such level: -1"):
        ChildSpec("p", command=["true"], stdout_level=-1)
    with pytest.raises(FieldTypeError, match=r"stderr_level: expected a level name") as caught:
        level(True)
    assert caught.value.field == "stderr_level"


# -- output="json" -----------------------------------------------------------------


async def test_json_lines_become_records_with_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    command = [sys.executable, "-c", PROGRAM]
    await _run_to_end(
        _once("loguru", command, output="json", json_keys=LOGURU_KEYS),
        _once("flat", command, output="json"),
    )
    records = _by_message(_records(caplog, "loguru"))
    started = records["started 100% of it"]  # a % in a message is not a format
    assert started.levelno == logging.INFO  # SUCCESS: the nearest stdlib level
    assert started.created == pytest.approx(STARTED)
    assert started.msecs == pytest.approx(250)
    assert started.user == "bob"  # type: ignore[attr-defined]
    assert started.json_name == "sim-1"  # type: ignore[attr-defined] - not over record.name
    assert started.name == "gymnasiarch.child.loguru"
    assert (started.child, started.stream) == ("loguru", "stdout")  # type: ignore[attr-defined]
    failed = records["failed"]
    assert (failed.levelno, failed.stream) == (logging.ERROR, "stderr")  # type: ignore[attr-defined]
    assert failed.created == pytest.approx(FAILED)
    # Not JSON, not an object: a plain line at its stream's level, as written.
    assert records["plain text, not JSON"].levelno == logging.INFO
    assert records["[1, 2]"].levelno == logging.INFO
    assert records["{not json"].levelno == logging.WARNING

    flat = _by_message(_records(caplog, "flat"))
    line = flat["flat"]
    assert line.levelno == logging.WARNING
    assert line.created == pytest.approx(datetime(2024, 1, 2, 3, 4, 5, 500000, UTC).timestamp())
    assert line.node == 7  # type: ignore[attr-defined]
    assert not hasattr(line, "json_level")  # used, not an extra
    assert not hasattr(line, "ts")
    odd = flat["odd level"]
    assert odd.levelno == logging.WARNING  # not a level: the stream's, and the field stays
    assert odd.json_level == "LOUD"  # type: ignore[attr-defined]
    assert odd.json_logger == "x"  # type: ignore[attr-defined] - a renderer's name
    # A loguru line read with the flat keys: no message at the top, so the line is
    # the message, and its fields are extras.
    (whole,) = [r for m, r in flat.items() if m.startswith('{"text": "started')]
    assert whole.levelno == logging.INFO
    assert whole.record["extra"] == {"user": "bob", "name": "sim-1"}  # type: ignore[attr-defined]
    assert len(flat) == len(records) == 7  # every line, once


async def test_json_output_of_a_python_child(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    line = json.dumps({"levelname": "error", "event": "from print", "ts": 1_000_000_000})
    spec = ChildSpec(
        "printer",
        "builtins:print",
        args=(line,),
        restart="transient",
        significant=True,
        output="json",
    )
    await _run_to_end(spec)
    (record,) = _records(caplog, "printer")
    assert (record.levelno, record.getMessage()) == (logging.ERROR, "from print")
    assert record.created == 1_000_000_000


async def test_a_time_no_formatter_can_show_is_not_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    lines = [
        {"message": "seconds far out", "time": 1e20},  # past what localtime() takes
        {"message": "milliseconds far out", "timestamp": 10**30},
        {"message": "past year 9999 in UTC", "ts": "9999-12-31T23:59:59-14:00"},
        {"message": "a time of its own", "time": STARTED},
    ]
    script = "".join(f"echo '{json.dumps(line)}'; " for line in lines)
    before = datetime.now(UTC).timestamp()
    await _run_to_end(_once("far", ["sh", "-c", script], output="json"))
    after = datetime.now(UTC).timestamp()
    records = _by_message(_records(caplog, "far"))
    with_asctime = logging.Formatter("%(asctime)s %(message)s")
    for message, raw, key in [
        ("seconds far out", 1e20, "time"),
        ("milliseconds far out", 10**30, "json_timestamp"),
        ("past year 9999 in UTC", "9999-12-31T23:59:59-14:00", "ts"),
    ]:
        record = records[message]
        assert before <= record.created <= after  # the record's own time
        assert getattr(record, key) == raw  # the value the program wrote, as an extra
        assert with_asctime.format(record).endswith(message)  # raised OSError before
    assert records["a time of its own"].created == pytest.approx(STARTED)


async def test_the_stderr_tail_keeps_the_lines_as_written() -> None:
    line = json.dumps({"level": "critical", "message": "out of cheese"})
    script = f"echo '{line}' >&2; echo 'plain last words' >&2; exit 3"
    spec = ChildSpec("crash", command=["sh", "-c", script], output="json")
    sup = Supervisor([spec], max_restarts=1, max_seconds=60, backoff=FAST)
    with pytest.raises(PrematureTaskDeathError) as caught:
        async with sup:
            await anyio.sleep_forever()
    assert caught.value.exitcode == 3
    assert caught.value.output == f"{line}\nplain last words"


async def test_ready_line_reads_json_output() -> None:
    line = json.dumps({"level": "info", "message": "listening"})
    spec = ChildSpec(
        "lines",
        command=["sh", "-c", f"echo '{line}'; exec sleep 100"],
        output="json",
        ready=Line('"listening"'),
        ready_timeout=30,
        shutdown=0,
    )
    async with Supervisor([spec]) as sup:
        (row,) = [r for r in sup.walk() if r.name == "lines"]
        assert row.ready_value == '"listening"'


# -- bad specs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "kind", "field", "message"),
    [
        ({"json_keys": {"level": "lvl"}}, FieldValueError, "json_keys", 'only to output="json"'),
        ({"output": "jsonl"}, FieldValueError, "output", "capture, inherit, json"),
        ({"json_keys": {"lvl": "x"}}, FieldValueError, "json_keys.lvl", "unknown key 'lvl'"),
        ({"json_keys": {"level": 3}}, FieldTypeError, "json_keys.level", "key path"),
        ({"json_keys": {"message": "a..b"}}, FieldValueError, "json_keys.message", "a..b"),
        ({"json_keys": {"time": ""}}, FieldValueError, "json_keys.time", "not a key path"),
        ({"json_keys": {"extra": ["a", "b"]}}, FieldValueError, "json_keys.extra", "one key"),
        ({"json_keys": "record.level"}, FieldTypeError, "json_keys", "expected a mapping"),
    ],
)
def test_bad_output_fields_name_the_field(
    fields: dict[str, object], kind: type[Exception], field: str, message: str
) -> None:
    if "json_keys" in fields and "only" not in message:
        fields = {"output": "json", **fields}
    with pytest.raises(kind, match=message) as caught:
        ChildSpec("p", command=["true"], **fields)  # type: ignore[arg-type]
    assert caught.value.field == field  # type: ignore[attr-defined]
    assert str(caught.value).startswith(f"child 'p': {field}: ")


def test_json_keys_take_a_path_a_list_or_none() -> None:
    spec = ChildSpec(
        "p",
        command=["true"],
        output="json",
        json_keys={"level": ["severity", "lvl"], "time": None, "message": "record.message"},
    )
    assert spec.json_keys == {
        "level": ("severity", "lvl"),
        "time": (),
        "message": ("record.message",),
    }


def test_ready_line_needs_captured_output() -> None:
    with pytest.raises(FieldValueError, match='needs output="capture"'):
        ChildSpec("p", command=["true"], output="inherit", ready=Line("x"))


# -- tree files --------------------------------------------------------------------


def _tree(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tree.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_tree_files_set_the_output_fields(tmp_path: Path) -> None:
    path = _tree(
        tmp_path,
        """
        [[child]]
        name = "sim"
        command = ["my-simulator"]
        stderr_level = "INFO"
        output = "json"

        [child.json_keys]
        level = "record.level.name"
        message = "record.message"
        time = ["record.time.timestamp", "ts"]
        """,
    )
    (spec,) = load_tree(path).children
    assert isinstance(spec, ChildSpec)
    assert (spec.stderr_level, spec.stdout_level, spec.output) == (logging.INFO, 20, "json")
    assert spec.json_keys == {
        "level": ("record.level.name",),
        "message": ("record.message",),
        "time": ("record.time.timestamp", "ts"),
    }


@pytest.mark.parametrize(
    ("body", "key", "line", "message"),
    [
        ('stderr_level = "LOUD"', "child[0].stderr_level", 4, "no such level: 'LOUD'"),
        ('output = "json"\n[child.json_keys]\nlvl = "x"', "child[0].json_keys.lvl", 6, "'lvl'"),
        ('output = "json"\n[child.json_keys]\nlevel = 3', "child[0].json_keys.level", 6, "path"),
        ('[child.json_keys]\nlevel = "x"', "child[0].json_keys", 4, 'output="json"'),
    ],
)
def test_tree_file_errors_name_the_output_key(
    tmp_path: Path, body: str, key: str, line: int, message: str
) -> None:
    path = _tree(tmp_path, f'[[child]]\nname = "p"\ncommand = ["true"]\n{body}\n')
    with pytest.raises(TreeFileError, match=message) as caught:
        load_tree(path)
    assert (caught.value.key, caught.value.line) == (key, line)
