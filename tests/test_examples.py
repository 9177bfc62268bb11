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


def _run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=EXAMPLES.parent,
    )


def test_nested_tree_restarts_the_whole_group_but_not_the_root_sibling() -> None:
    """examples/nested.toml: one_for_all inside one_for_one, run by the CLI."""
    run = _run_example("-m", "gymnasiarch", "run", "--log-format", "json", "examples/nested.toml")
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert "'monitor done after 0 restart(s)'" in rows["monitor"]
    assert "'solver done after 1 restart(s)'" in rows["solvers/solver"]
    assert "'mesher done after 1 restart(s)'" in rows["solvers/mesher"]  # restarted with it
    assert "solver trips on its first run" in run.stderr


def test_embedding_examples_keep_the_application_running_under_asyncio_and_trio() -> None:
    """examples/embed_asyncio.py and embed_trio.py: the app's own task runs alongside."""
    for script in ("embed_asyncio.py", "embed_trio.py"):
        run = _run_example(str(EXAMPLES / script))
        assert "app: still serving" in run.stdout, script
        assert "results: ['worker-1 counted to 1000', 'worker-2 counted to 1000']" in run.stdout, (
            script
        )


def test_the_demo_tree_checks_clean() -> None:
    """The demo's tree file, as shipped in the package, passes `gymnasiarch check`."""
    tree = Path(__file__).parent.parent / "src" / "gymnasiarch" / "demo" / "tree.toml"
    run = _run_example("-m", "gymnasiarch", "check", str(tree))
    assert "ok (5 children)" in run.stdout


def test_training_ground_agents_in_a_group_find_the_port_the_environment_chose() -> None:
    """examples/training_ground.py: FromReady across the group, events and walk() by path."""
    run = _run_example(str(EXAMPLES / "training_ground.py"))
    lines = run.stdout.splitlines()
    assert "ready          agents/agent-1" in lines
    assert "exited         agents" in lines
    env = next(line for line in lines if line.startswith("env "))
    assert "ready value: {'port': " in env


def test_hung_and_runaway_example_finds_both_and_finishes() -> None:
    """examples/hung_and_runaway.py: the hang is reported at its line, the leak at its size."""
    run = _run_example(str(EXAMPLES / "hung_and_runaway.py"))
    lines = run.stdout.splitlines()
    hung = next(line for line in lines if line.startswith("simulator: hung"))
    assert "watchdog is 0.5 s" in hung
    assert "hung_and_runaway.py" in hung
    assert "time.sleep(3600)" in hung  # the line it was stuck at
    over = next(line for line in lines if line.startswith("agent: "))
    assert "over its max_memory of 150 MiB" in over
    assert (
        lines[-1] == "results: {'agent': 'played 40 episodes', 'simulator': 'simulated 50 steps'}"
    )
