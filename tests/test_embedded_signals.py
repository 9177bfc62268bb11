"""Signals and an application that embeds a supervisor: its handlers, one Ctrl-C twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def embedded(backend: str, mode: str, journal: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "targets.embedded_signals", backend, mode, str(journal)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_applications_handlers_are_back_after_the_supervisor(
    backend: str, tmp_path: Path
) -> None:
    """A storm of SIGTERMs and SIGHUPs during and after the stop: the application survives.

    Its own handlers are installed again, exactly, and the late signals reach them.
    """
    done = embedded(backend, "storm", tmp_path / "journal")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["restored"]
    assert report["seen"] > 0  # the end of the storm came after the supervisor


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_ctrl_c_forwarded_twice_is_one_graceful_stop(backend: str, tmp_path: Path) -> None:
    """Two SIGINTs 10 ms apart are one press: the children finish their cleanup."""
    journal = tmp_path / "journal"
    done = embedded(backend, "double-sigint", journal)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"error": "SIGINT"}
    assert "killing the remaining children" not in done.stderr
    lines = journal.read_text().splitlines()
    assert lines[2:] == ["term b", "exit b", "term a", "exit a"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_two_supervisors_whose_lives_overlap_give_the_handlers_back(
    backend: str, tmp_path: Path
) -> None:
    """A enters, B enters, A leaves, B leaves (and B before A): the application's handlers."""
    done = embedded(backend, "overlap", tmp_path / "journal")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for order in ("first-leaves-first", "first-leaves-last"):
        assert report[order] == {"restored": True, "heard": 1}, order


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_sigterm_stops_every_supervisor_of_the_application(
    backend: str, tmp_path: Path
) -> None:
    """Two supervisors whose lives overlap: a SIGTERM is the application's stop, both stop.

    Before, only the one that started last heard it; the other ran on.
    """
    done = embedded(backend, "overlap-signal", tmp_path / "journal")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"ended": {"A": "SIGTERM", "B": "SIGTERM"}, "app_heard": 0}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_signal_while_the_targets_are_imported_stops_the_start(
    backend: str, tmp_path: Path
) -> None:
    """The signals are the supervisor's from its start, before its targets' slow imports.

    Before, the SIGTERM met the application's handler and the tree ran as if
    none had come (or, without one, killed the process with a traceback).
    """
    done = embedded(backend, "signal-during-import", tmp_path / "journal")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"error": "SIGTERM", "app_heard": 0, "import_still_running": True}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_signals_the_application_ignores_stay_ignored(backend: str, tmp_path: Path) -> None:
    """An application under ``nohup`` (SIGHUP ignored) or a background job (SIGINT ignored).

    SIGINT and SIGHUP while the tree runs change nothing; SIGTERM stops it,
    and the two are still ignored afterwards.
    """
    done = embedded(backend, "ignored", tmp_path / "journal")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "stopped_by": "SIGTERM",
        "still_ignored": [True, True],
        "app_heard": 0,
    }
