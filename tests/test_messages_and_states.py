"""What users are told on ordinary paths: every mistake of a tree file, FromReady keys, states."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from gymnasiarch import ChildSpec, FromReady, Supervisor, ready
from gymnasiarch._cli.control import status_rows
from gymnasiarch._cli.live import LiveStatus
from gymnasiarch.cli import _status_table
from gymnasiarch.exceptions import (
    ChildEndedError,
    FieldValueError,
    InitializationFailedError,
    PrematureTaskDeathError,
)
from gymnasiarch.testing import kill_child, wait_for
from gymnasiarch.treefile import TreeFileError, load_tree

TESTS = Path(__file__).parent
B = "targets.basic"
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]

THREE_MISTAKES = """\
[supervisor]
max_restarts = 2
sed = 7

[[child]]
name = "adder"
target = "targets.basic:add"
restart = "sometimes"

[[child]]
name = "server"
command = ["no-such-program-gymnasiarch", "--port", "1"]

[[child]]
name = "group"

[[child.child]]
name = "inner"
target = "targets.basic:nope"

[[child.child]]
name = "fine"
target = "targets.basic:add"
"""


def test_check_reports_every_mistake_one_line_each(tmp_path: Path) -> None:
    """docs/cli.md: "Each mistake is one line": all of them, in one run, in file order."""
    tree = tmp_path / "tree.toml"
    tree.write_text(THREE_MISTAKES)
    done = subprocess.run(
        [sys.executable, "-m", "gymnasiarch", "check", str(tree)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    expected = [
        "supervisor.sed (line 3): unknown key 'sed'",
        "child[0].restart (line 8): expected one of permanent, transient, temporary",
        "child[1].command (line 12): program 'no-such-program-gymnasiarch' not found",
        "child[2].child[0].target (line 19): ",
    ]
    assert len(lines) == len(expected), lines
    for line, part in zip(lines, expected, strict=True):
        assert line.startswith(f"gymnasiarch: {tree}: {part}"), line


def test_load_tree_names_the_first_mistake_and_carries_them_all(tmp_path: Path) -> None:
    tree = tmp_path / "tree.toml"
    tree.write_text(THREE_MISTAKES)
    with pytest.raises(TreeFileError) as caught:
        load_tree(tree, resolve=True)
    error = caught.value
    assert error.key == "supervisor.sed"
    assert [m.key for m in error.mistakes] == [
        "supervisor.sed",
        "child[0].restart",
        "child[1].command",
        "child[2].child[0].target",
    ]
    assert error.mistakes[0] is error


# -- FromReady --------------------------------------------------------------------------


async def test_a_from_ready_key_that_does_not_fit_names_source_key_and_keys() -> None:
    """Not ``KeyError('port')``: which source, which key, and the keys its value has."""
    children = [
        ChildSpec("a", command=[*SLEEP, "{p}"], ports=["p"]),
        ChildSpec("c", f"{B}:add", args=(FromReady("a", key="port"), 1), restart="transient"),
    ]
    with anyio.fail_after(30), pytest.raises(InitializationFailedError) as caught:
        await Supervisor(children).run()
    message = str(caught.value)
    assert "child 'c': FromReady('a', key='port')" in message
    assert "the ready value of 'a' has no key 'port'; its keys are 'p'" in message


def test_a_program_source_without_ready_or_ports_is_told_what_a_program_can_do() -> None:
    """A program cannot call child_context().ready(value): say ready= or ports=."""
    children = [
        ChildSpec("a", command=SLEEP),
        ChildSpec("c", f"{B}:add", args=(FromReady("a"), 1), restart="transient"),
    ]
    with pytest.raises(ValueError, match=r"program 'a' has no ready value") as caught:
        Supervisor(children)
    assert "ready= (" in str(caught.value)
    assert "ports=" in str(caught.value)
    assert "child_context" not in str(caught.value)


# -- output levels ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["stdout_level", "stderr_level"])
def test_a_level_with_inherited_output_is_an_error_naming_its_field(field: str) -> None:
    """Inherited output is not read: a level there would do nothing, so it is refused."""
    with pytest.raises(FieldValueError) as caught:
        ChildSpec("p", command=SLEEP, output="inherit", **{field: "DEBUG"})
    assert caught.value.field == field
    assert 'output="capture" or "json"' in str(caught.value)
    # Left at their defaults (or said again), they are fine.
    ChildSpec("p", command=SLEEP, output="inherit")
    ChildSpec("p", command=SLEEP, output="inherit", stdout_level="INFO", stderr_level="warning")


# -- wait_ready: paths, and why a child will not be ready ----------------------------------


async def test_wait_ready_reads_paths_as_child_info_does() -> None:
    """Slashes at either end are ignored; ``"grp/"`` is the group, ready once its children are."""
    group = Supervisor(
        [ChildSpec("inner", f"{B}:ready_then_sleep", args=("in",), ready_timeout=10)], name="grp"
    )
    children = [ChildSpec("a", f"{B}:ready_then_sleep", args=("va",), ready_timeout=10), group]
    with anyio.fail_after(30):
        async with Supervisor(children) as sup:
            assert await sup.wait_ready("/a") == await sup.wait_ready("a") == "va"
            assert await sup.wait_ready("/grp/inner/") == "in"
            assert await sup.wait_ready("grp/") is None
            assert sup.child_info("grp/").path == sup.child_info("/grp").path == "grp"
            with pytest.raises(KeyError):  # as child_info(): "" names no child
                await sup.wait_ready("/")
            sup.stop()


async def test_child_ended_error_says_once_that_the_supervisor_gave_up() -> None:
    """Not "it ended and is not run again" with the give-up only in ``__cause__``."""
    sup = Supervisor([ChildSpec("c", f"{B}:ready_then_sleep", ready_timeout=10)], max_restarts=0)

    async def crash_it() -> None:
        async with sup:
            await sup.wait_ready("c")
            await kill_child(sup, "c")
            await sup.wait()

    with anyio.fail_after(30), pytest.raises(PrematureTaskDeathError):
        await crash_it()
    with pytest.raises(ChildEndedError) as caught:
        await sup.wait_ready("c")
    message = str(caught.value)
    assert message.startswith("child 'c' will not be ready: supervisor 'supervisor' gave up: ")
    assert message.endswith("(signal SIGKILL, 0 restart(s))")
    assert message.count("'c'") == 1
    assert "not run again" not in message
    assert isinstance(caught.value.__cause__, PrematureTaskDeathError)


async def test_child_ended_error_says_not_restarted_and_terminated_once() -> None:
    children = [
        ChildSpec("once", f"{B}:exit_with", args=(3,), restart="temporary"),
        ChildSpec("slow", f"{B}:sleep_forever"),
    ]
    sup = Supervisor(children)
    with anyio.fail_after(30), sup.events() as events:
        async with sup:
            # Ready once started (no ready_timeout), and running until it has exited: under
            # load it had not yet when the supervisor had started the next child.
            await wait_for(sup, "exited", child="once", events=events)
            with pytest.raises(ChildEndedError) as once:
                await sup.wait_ready("once")
            await sup.terminate_child("slow")
            with pytest.raises(ChildEndedError) as slow:
                await sup.wait_ready("slow")
            sup.stop()
    assert str(once.value) == (
        "child 'once' will not be ready: it ended and, as a temporary child, is not restarted "
        "(exit code 3, 0 restart(s))"
    )
    assert str(slow.value) == (
        "child 'slow' will not be ready: it was stopped with terminate_child() "
        "(signal SIGTERM, 0 restart(s))"
    )


# -- a child not started yet ------------------------------------------------------------


async def test_a_child_not_started_yet_is_waiting_not_exited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a sequential start, the child behind a slow program is ``waiting``: walk, status, view."""
    go = tmp_path / "go"
    slow = ChildSpec("slow", command=SLEEP, ready=ready.Path(str(go)), ready_timeout=30)
    later = ChildSpec("later", f"{B}:sleep_forever")
    sup = Supervisor([slow, later])
    async with anyio.create_task_group() as group:
        with anyio.fail_after(30), sup.events() as events:
            group.start_soon(sup.run)
            await wait_for(sup, "started", child="slow", events=events)
            states = {info.path: info.state for info in sup.walk()}
            assert states == {"slow": "starting", "later": "waiting"}
            rows = status_rows(sup)
            _status_table(rows)
            view = io.StringIO()
            LiveStatus(view, "tree").update(rows)
            go.touch()  # slow is ready: later starts
            await wait_for(sup, "started", child="later", events=events)
            assert sup.child_info("later").state in ("starting", "running")
            sup.stop()
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[:3] == ["later", "-", "waiting"]
    assert "later" in view.getvalue()
    assert "waiting" in view.getvalue()


# -- gymnasiarch run: the ready line -----------------------------------------------------


def test_run_logs_a_programs_picked_ports_on_its_ready_line(tmp_path: Path) -> None:
    """The ``ready`` event line shows what ``status`` shows: ``http=40123``."""
    tree = tmp_path / "tree.toml"
    tree.write_text(
        f'[[child]]\nname = "web"\ncommand = {json.dumps([*SLEEP, "{http}"])}\nports = ["http"]\n'
    )
    command = [sys.executable, "-m", "gymnasiarch", "run", "--log-format", "json", str(tree)]
    proc = subprocess.Popen(command, cwd=TESTS, stderr=subprocess.PIPE, text=True)
    record: dict[str, Any] = {}
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the run logs each event as it happens
            record = json.loads(line)
            if record.get("event") == "ready":
                break
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert record["child"] == "web"
    name, _, port = record["ports"].partition("=")
    assert name == "http"
    assert 0 < int(port) < 65536


# -- output: long lines -------------------------------------------------------------------

LONG_LINES = """\
import json
print(json.dumps({"level": "error", "message": "big", "payload": "x" * 200_000}))
print("y" * 300_000)
"""


async def test_a_long_json_line_keeps_its_level_and_a_long_plain_line_comes_in_pieces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With output="json", a JSON object line up to 1 MiB is one record; others cut at 64 KiB."""
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    command = [sys.executable, "-c", LONG_LINES]
    spec = ChildSpec("big", command=command, output="json", restart="transient")
    with anyio.fail_after(30):
        await Supervisor([spec]).run()
    records = [r for r in caplog.records if r.name == "gymnasiarch.child.big"]
    (big,) = [r for r in records if r.getMessage() == "big"]
    assert big.levelno == logging.ERROR
    assert len(big.payload) == 200_000  # type: ignore[attr-defined]
    pieces = [r for r in records if r.getMessage().startswith("y")]
    assert len(pieces) > 1  # never dropped: in pieces, as plain lines
    assert "".join(r.getMessage() for r in pieces) == "y" * 300_000
    assert {r.levelno for r in pieces} == {logging.INFO}
