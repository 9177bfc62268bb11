"""The examples run as a newcomer runs them, and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_minimal_example_restarts_the_flaky_child_and_prints_results() -> None:
    """examples/minimal.py: the flaky child crashes once, is restarted, both results print."""
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "minimal.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "results: {'steady': 45, 'flaky': 45}" in run.stdout or (
        "results: {'flaky': 45, 'steady': 45}" in run.stdout
    )
    assert "flaky crashes on its first run" in run.stderr
    assert len(EXAMPLES.joinpath("minimal.py").read_text().splitlines()) <= 25
