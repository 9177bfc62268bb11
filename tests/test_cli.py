"""The command line, run as a newcomer would: ``python -m gymnasiarch ...`` in a subprocess."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gymnasiarch import ChildSpec
from gymnasiarch.treefile import TreeFileError, load_tree

TESTS = Path(__file__).parent

GOOD_TREE = """\
[supervisor]
strategy = "one_for_one"
max_restarts = 2
max_seconds = 5.0
seed = 7

[supervisor.runtime_config]
greeting = "hello"

[[child]]
name = "adder"
target = "targets.basic:add"
args = [1, 2]
restart = "transient"

[[child]]
name = "group"
strategy = "one_for_all"
restart = "transient"

[[child.child]]
name = "inner"
target = "targets.basic:add"
params = { a = 3, b = 4 }
restart = "temporary"
"""


def gymnasiarch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gymnasiarch", *args],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tree.toml"
    path.write_text(text)
    return path


def test_check_accepts_a_good_tree(tmp_path: Path) -> None:
    done = gymnasiarch("check", str(write(tmp_path, GOOD_TREE)))
    assert done.returncode == 0, done.stderr
    assert "ok (2 children)" in done.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('restart = "temporary"', 'restart = "sometimes"'),
            "child[1].child[0].restart (line 25): expected one of permanent, transient, "
            "temporary, got 'sometimes'",
        ),
        (("seed = 7", "sed = 7"), "supervisor.sed (line 5): unknown key 'sed'"),
        (("max_restarts = 2", 'max_restarts = "2"'), "supervisor.max_restarts (line 3): expected"),
        (
            ("args = [1, 2]", "args = [1, 2]\nretsart = 1"),
            "child[0].retsart (line 14): unknown key",
        ),
        (("targets.basic:add", "targets.basic:nope"), "child[0].target (line 12): "),
        (("targets.basic:add", "targets.nothere:add"), "child[0].target (line 12): "),
        (('strategy = "one_for_all"', 'strategy = "all"'), "child[1].strategy (line 18)"),
        (("[supervisor]", "[supervisor"), "is not valid TOML"),
    ],
)
def test_check_names_the_key_path_and_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    """Every mistake: one line on stderr with key path and line, exit 2, no traceback."""
    done = gymnasiarch("check", str(write(tmp_path, GOOD_TREE.replace(*change, 1))))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("change", "key", "line", "message"),
    [
        # A Supervisor's own check: the field names the child by its place.
        (('name = "group"', 'name = "adder"'), "child[1]", 16, "duplicate child name 'adder'"),
        (
            ("params = { a = 3, b = 4 }", "params = 5"),
            "child[1].child[0].params",  # ChildSpec's kwargs, as the file spells it
            24,
            "expected a mapping of strings to values, got 5",
        ),
        (("args = [1, 2]", 'args = "12"'), "child[0].args", 13, "expected a sequence, got '12'"),
        (
            (
                '[[child]]\nname = "adder"',
                '[supervisor.backoff]\nfactor = 0.5\n\n[[child]]\nname = "adder"',
            ),
            "supervisor.backoff.factor",
            11,
            "expected a finite number >= 1, got 0.5",
        ),
        (("seed = 7", "seed = true"), "supervisor.seed", 5, "expected an int, a str or None"),
        (
            (
                'restart = "transient"\n\n[[child.child]]',
                'restart = "transient"\nsignificant = 1\n\n[[child.child]]',
            ),
            "child[1].significant",
            20,
            "must be True or False, got 1",
        ),
    ],
)
def test_load_tree_points_at_the_key_a_field_error_names(
    tmp_path: Path, change: tuple[str, str], key: str, line: int, message: str
) -> None:
    """The checks of ChildSpec, Backoff and Supervisor name a field; the file's key follows."""
    with pytest.raises(TreeFileError) as caught:
        load_tree(write(tmp_path, GOOD_TREE.replace(*change, 1)))
    error = caught.value
    assert (error.key, error.line) == (key, line)
    assert str(error).startswith(f"{error.path}: {key} (line {line}): {message}")


def test_a_file_takes_the_fields_of_the_values_it_builds(tmp_path: Path) -> None:
    """Every field of ChildSpec is a key of [[child]] (kwargs is spelled params)."""
    tree = GOOD_TREE.replace(
        "args = [1, 2]",
        'args = [1, 2]\nshutdown = 1.5\nready_timeout = 3\noutput = "inherit"\n'
        'async_backend = "asyncio"\nsignificant = true\nplacement = { num_cpus = 1 }',
    )
    spec = load_tree(write(tmp_path, tree)).children[0]
    assert isinstance(spec, ChildSpec)
    assert (spec.shutdown, spec.ready_timeout, spec.output, spec.async_backend) == (
        1.5,
        3,
        "inherit",
        "asyncio",
    )
    assert spec.significant
    assert spec.placement == {"num_cpus": 1}
    with pytest.raises(TreeFileError, match=r"unknown key 'kwargs' \(known keys: args, async_b"):
        load_tree(write(tmp_path, GOOD_TREE.replace("params =", "kwargs =")))


def test_missing_file_and_unknown_command_are_one_line() -> None:
    done = gymnasiarch("check", "no/such/tree.toml")
    assert done.returncode == 2
    assert done.stderr.startswith("gymnasiarch: no/such/tree.toml: cannot read it")
    assert "Traceback" not in done.stderr
    assert gymnasiarch("frobnicate").returncode == 2


def test_load_tree_builds_the_nested_supervisor(tmp_path: Path) -> None:
    supervisor = load_tree(write(tmp_path, GOOD_TREE))
    assert supervisor.strategy == "one_for_one"
    assert supervisor.seed == 7
    assert supervisor.runtime_config["greeting"] == "hello"
    inner = supervisor.children[1]
    assert inner.strategy == "one_for_all"  # type: ignore[union-attr]
    with pytest.raises(TreeFileError, match=r"child: expected \[\[child\]\] tables"):
        load_tree(write(tmp_path, "[supervisor]\n"))


def test_run_finishes_cleanly_with_a_summary(tmp_path: Path) -> None:
    done = gymnasiarch("run", "--log-format", "json", str(write(tmp_path, GOOD_TREE)))
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["child", "restarts", "crashes", "exits", "last", "exit", "result"]
    assert rows[0].split()[0] == "adder"
    assert rows[0].split()[-1] == "3"


GIVING_UP_GROUP = """\
[supervisor]
max_restarts = 1

[[child]]
name = "group"
restart = "transient"
max_restarts = 1

[[child.child]]
name = "flaky"
target = "targets.basic:crash"
restart = "transient"

[[child]]
name = "adder"
target = "targets.basic:add"
args = [1, 2]
restart = "transient"
"""


def test_run_names_every_group_that_gave_up_even_when_it_ends_well(tmp_path: Path) -> None:
    """Limits multiply: the group gave up twice, the root once; each crash is counted."""
    done = gymnasiarch("run", "--log-format", "json", str(write(tmp_path, GIVING_UP_GROUP)))
    assert done.returncode == 1, done.stderr
    table = [line.split() for line in done.stderr.splitlines() if not line.startswith("{")]
    assert ["child", "restarts", "crashes"] in [row[:3] for row in table]
    flaky = next(row for row in table if row and row[0] == "group/flaky")
    # 2 crashes per run of the group (max_restarts=1), in 2 runs of it.
    assert flaky[2] == "4"
    gave_up = [line for line in done.stderr.splitlines() if "gave up" in line]
    assert any("supervisor 'group' gave up" in line for line in gave_up), done.stderr


def test_run_that_gives_up_prints_the_childs_traceback_last(tmp_path: Path) -> None:
    tree = (
        '[supervisor]\nmax_restarts = 0\n[[child]]\nname = "bad"\ntarget = "targets.basic:crash"\n'
    )
    done = gymnasiarch("run", "--log-format", "json", str(write(tmp_path, tree)))
    assert done.returncode == 1
    tail = done.stderr.strip().splitlines()
    assert tail[-1] == "targets.basic.Boom: boom"
    assert "PrematureTaskDeathError" in done.stderr


def test_a_program_that_ends_before_ready_is_told_with_its_stderr_once(tmp_path: Path) -> None:
    tree = (
        '[[child]]\nname = "p"\ncommand = ["sh", "-c", "echo no config >&2; exit 3"]\n'
        'ready = { path = "/nonexistent/ready" }\n'
    )
    done = gymnasiarch("run", "--log-format", "json", str(write(tmp_path, tree)))
    assert done.returncode == 1
    assert "InitializationFailedError" in done.stderr
    assert done.stderr.count("no config") == 2, done.stderr  # the log line, and the error once


def test_run_stopped_by_sigterm_exits_128_plus_15(tmp_path: Path) -> None:
    tree = '[[child]]\nname = "sleeper"\ntarget = "targets.basic:ready_then_sleep"\n'
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gymnasiarch",
            "run",
            "--log-format",
            "json",
            str(write(tmp_path, tree)),
        ],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the child is ready (its event is logged)
            if '"ready"' in line and "sleeper" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped on SIGTERM" in err


def _trajectory(stderr: str) -> list[str]:
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [e["event"] for e in events if e.get("logger") == "demo.sim"]


def test_demo_restarts_the_flaky_simulator_and_repeats_itself_for_a_seed() -> None:
    """The demo ends cleanly with a summary; the same seed gives the same trajectory."""
    args = ("demo", "--steps", "14", "--interval", "0.01", "--log-format", "json")
    first, second = gymnasiarch(*args, "--seed", "5"), gymnasiarch(*args, "--seed", "5")
    assert first.returncode == 0, first.stderr
    rows = {line.split()[0]: line.split() for line in first.stdout.splitlines()[1:]}
    assert set(rows) == {"env", "simulator", "agent-1", "agent-2", "agent-3"}
    assert rows["simulator"][1] == "2"  # restarts: it crashed twice
    steps = [line for line in _trajectory(first.stderr) if line.startswith("step")]
    assert len(steps) == 14
    assert _trajectory(first.stderr) == _trajectory(second.stderr)
    assert first.stdout == second.stdout  # the summary: restarts, exits and results
    assert all(row[-1] != "-" for row in rows.values())  # every child returned its result
    other = gymnasiarch(*args, "--seed", "6")
    assert _trajectory(other.stderr) != _trajectory(first.stderr)


CONTROLLED_TREE = """\
[[child]]
name = "steady"
target = "targets.basic:ready_then_sleep"

[[child]]
name = "group"
restart = "permanent"

[[child.child]]
name = "inner"
target = "targets.basic:ready_then_sleep"
"""


@contextmanager
def running_tree(tmp_path: Path, control: str) -> Iterator[subprocess.Popen[str]]:
    """`gymnasiarch run` of CONTROLLED_TREE, once its last child is ready; killed if left."""
    tree = write(tmp_path, CONTROLLED_TREE)
    command = ["run", "--log-format", "json", "--control", control, str(tree)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymnasiarch", *command],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the last child is ready: the control socket is up
            if '"ready"' in line and "group/inner" in line:
                break
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_status_restart_and_stop_talk_to_a_running_tree(tmp_path: Path) -> None:
    """Another shell sees the children, restarts one, stops the tree; then nobody answers."""
    control = str(tmp_path / "ctl" / "control.sock")
    with running_tree(tmp_path, control) as proc:
        status = gymnasiarch("status", "--control", control)
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
        assert set(rows) == {"steady", "group", "group/inner"}
        assert rows["steady"][2] == "running"
        assert Path(control).with_suffix(".key").stat().st_mode & 0o077 == 0
        restarted = gymnasiarch("restart", "group/inner", "--control", control)
        assert restarted.returncode == 0, restarted.stderr
        rows = {
            line.split()[0]: line.split()
            for line in gymnasiarch("status", "--control", control).stdout.splitlines()[1:]
        }
        assert rows["group/inner"][4] == "1"  # restarts
        unknown = gymnasiarch("restart", "nobody", "--control", control)
        assert unknown.returncode == 1
        assert "no child named 'nobody'" in unknown.stderr
        assert gymnasiarch("stop", "--control", control).returncode == 0
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.splitlines()[0].split()[0] == "child"  # the summary
    gone = gymnasiarch("status", "--control", control)
    assert gone.returncode == 1
    assert gone.stderr.strip() == f"gymnasiarch: no running supervisor at {control}"


def test_one_child_is_stopped_and_started_again_from_another_shell(tmp_path: Path) -> None:
    """``stop CHILD`` keeps it stopped (the tree runs on), ``start CHILD`` starts it again."""
    control = str(tmp_path / "ctl" / "control.sock")

    def states() -> dict[str, str]:
        listed = gymnasiarch("status", "--json", "--control", control)
        assert listed.returncode == 0, listed.stderr
        return {row["name"]: row["state"] for row in map(json.loads, listed.stdout.splitlines())}

    with running_tree(tmp_path, control) as proc:
        stopped = gymnasiarch("stop", "group/inner", "--control", control)
        assert (stopped.returncode, stopped.stdout) == (0, "stopped group/inner\n")
        assert states() == {"steady": "running", "group": "running", "group/inner": "terminated"}
        again = gymnasiarch("stop", "group/inner", "--control", control)
        assert again.returncode == 1
        assert "child 'group/inner' is not running (terminated)" in again.stderr
        started = gymnasiarch("start", "group/inner", "--control", control)
        assert (started.returncode, started.stdout) == (0, "started group/inner\n")
        assert states()["group/inner"] == "running"
        running = gymnasiarch("start", "steady", "--control", control)
        assert running.returncode == 1
        assert (
            "child 'steady' is running, not stopped: `gymnasiarch restart steady`" in running.stderr
        )
        assert gymnasiarch("stop", "--control", control).returncode == 0
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_a_second_run_on_the_same_control_socket_is_refused(tmp_path: Path) -> None:
    control = str(tmp_path / "control.sock")
    with running_tree(tmp_path, control) as first:
        second = gymnasiarch("run", "--control", control, str(tmp_path / "tree.toml"))
        assert second.returncode == 2
        assert second.stderr.strip().endswith(f"another gymnasiarch run is serving at {control}")
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)


def test_on_a_terminal_the_status_stays_pinned_under_the_log() -> None:
    """Under a pseudo-terminal: console lines, and the status block redrawn per event."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymnasiarch", "demo", "--steps", "6", "--interval", "0.01"],
        cwd=TESTS,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(30) == 0
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    screen = b"".join(chunks).decode(errors="replace")
    assert "gymnasiarch: supervisor" in screen  # the block's title
    assert "\x1b[" in screen
    assert "F\x1b[J" in screen
    assert "running" in screen
    assert "step  5" in screen  # the log stream, as console lines
    assert screen.rstrip().splitlines()[-1].split()[0] == "agent-3"  # the summary ends it


def test_run_with_a_target_that_cannot_be_imported_is_a_bad_file(tmp_path: Path) -> None:
    tree = '[[child]]\nname = "ghost"\ntarget = "targets.nothere:run"\n'
    done = gymnasiarch("run", "--log-format", "json", str(write(tmp_path, tree)))
    assert done.returncode == 2
    assert "child[0].target (line 3)" in done.stderr
    assert "Traceback" not in done.stderr


FROM_READY_TREE = """\
[[child]]
name = "env"
target = "targets.tree:serve_on_port_zero"
ready_timeout = 10

[[child]]
name = "client"
command = ["sh", "-c", 'echo "$1 $ENV_HOST" > "$2.new" && mv "$2.new" "$2"', "sh",
           { from_ready = "env", key = "port" }, "{seen}"]
env = { ENV_HOST = { from_ready = "env", key = "host" } }
ready = { path = "{seen}" }
ready_timeout = 10
restart = "temporary"

[[child]]
name = "agent"
target = "targets.tree:connect_to"
params.port = { from_ready = "env", key = "port" }
params.host = { from_ready = "env", key = "host" }
restart = "transient"
significant = true
"""


async def test_a_tree_file_hands_a_ready_value_to_a_child_and_a_program(tmp_path: Path) -> None:
    """``{ from_ready = "env", key = "port" }`` in params, in a command and in env."""
    seen = tmp_path / "seen"
    tree = load_tree(write(tmp_path, FROM_READY_TREE.replace("{seen}", str(seen))))
    results = await tree.run()
    port = results["agent"]  # the agent connected to it: the env's port
    assert isinstance(port, int)
    assert seen.read_text().split() == [str(port), "127.0.0.1"]


FROM_READY_MISTAKES = """\
[[child]]
name = "env"
target = "targets.tree:serve_on_port_zero"

[[child]]
name = "agent"
target = "targets.tree:connect_to"
params = { port = { from_ready = "env", kee = "port" }, host = [{ from_ready = 3 }] }

[[child]]
name = "client"
command = [{ from_ready = "env" }]
"""


def test_a_tree_files_from_ready_mistakes_are_named_at_their_keys(tmp_path: Path) -> None:
    with pytest.raises(TreeFileError) as caught:
        load_tree(write(tmp_path, FROM_READY_MISTAKES))
    said = [str(mistake) for mistake in caught.value.mistakes]
    assert said == [
        f"{tmp_path / 'tree.toml'}: child[1].params.port (line 8): a from_ready table takes "
        "'from_ready' and 'key', got also 'kee'",
        f"{tmp_path / 'tree.toml'}: child[1].params.host[0] (line 8): from_ready must name a "
        "child ('env', 'world/env'), got 3",
        f"{tmp_path / 'tree.toml'}: child[2].command (line 12): the program must be named as a "
        "string, got FromReady(source='env', key=None): only its arguments may be a "
        "sibling's ready value",
    ]


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ('"nobody"', "child[1] (line 5): from_ready 'nobody': no child of that name starts before"),
        (
            '"env"',
            "child[1] (line 5): child 'agent': FromReady('env'): child 'env' needs a ready_timeout",
        ),
    ],
)
def test_a_from_ready_source_is_checked_with_the_tree(
    tmp_path: Path, source: str, said: str
) -> None:
    text = f"""\
[[child]]
name = "env"
target = "targets.tree:serve_on_port_zero"

[[child]]
name = "agent"
target = "targets.tree:connect_to"
params = {{ port = {{ from_ready = {source}, key = "port" }} }}
"""
    with pytest.raises(TreeFileError) as caught:
        load_tree(write(tmp_path, text))
    assert said in str(caught.value)


def test_every_from_ready_source_mistake_is_listed(tmp_path: Path) -> None:
    """No ready_timeout, a source that starts later, a source nobody has: three lines."""
    text = """\
[[child]]
name = "env"
target = "targets.tree:serve_on_port_zero"

[[child]]
name = "agent"
target = "targets.tree:connect_to"
params = { port = { from_ready = "env", key = "port" } }

[[child]]
name = "early"
target = "targets.tree:connect_to"
params = { port = { from_ready = "late", key = "port" } }

[[child]]
name = "late"
target = "targets.tree:serve_on_port_zero"
ready_timeout = 5

[[child]]
name = "viewer"
command = ["echo", { from_ready = "nobody" }]
"""
    with pytest.raises(TreeFileError) as caught:
        load_tree(write(tmp_path, text))
    said = [str(m).split(": ", 1)[1] for m in caught.value.mistakes]
    assert [line.split(":", 1)[0] for line in said] == [
        "child[1] (line 5)",
        "child[2] (line 10)",
        "child[4] (line 20)",
    ]
    assert "needs a ready_timeout" in said[0]
    assert "'late' starts after 'early'" in said[1]
    assert "from_ready 'nobody': no child of that name" in said[2]


def test_from_ready_mistakes_of_nested_children_and_typos_have_lines(tmp_path: Path) -> None:
    text = """\
[[child]]
name = "env"
target = "targets.tree:serve_on_port_zero"

[[child]]
name = "agents"

[[child.child]]
name = "agent-1"
target = "targets.tree:connect_to"
params = { port = { from_ready = "env", key = "port" } }

[[child]]
name = "late"
target = "targets.tree:connect_to"
params = { port = { from_redy = "env", key = "port" } }
"""
    with pytest.raises(TreeFileError) as caught:
        load_tree(write(tmp_path, text))
    said = [str(m).split(": ", 1)[1] for m in caught.value.mistakes]
    assert said[0].startswith("child[1] (line 5): child 'agent-1': FromReady('env'): child 'env'")
    assert (
        said[1]
        == "child[2].params.port (line 16): unknown key 'from_redy': did you mean 'from_ready'?"
    )


def test_a_from_ready_mistake_is_listed_beside_its_sources_own(tmp_path: Path) -> None:
    """The source has a mistake of its own: the order, which does not depend on it, is judged."""
    text = """\
[[child]]
name = "agent"
target = "targets.tree:connect_to"
params = { port = { from_ready = "late", key = "port" } }

[[child]]
name = "late"
target = "targets.tree:serve_on_port_zero"
ready_timeout = 5
shutdwn = 3
"""
    with pytest.raises(TreeFileError) as caught:
        load_tree(write(tmp_path, text))
    said = [str(m).split(": ", 1)[1] for m in caught.value.mistakes]
    assert said[0] == (
        "child[0] (line 1): child 'agent': FromReady('late'): 'late' starts after 'agent', "
        "not before it"
    )
    assert said[1].startswith("child[1].shutdwn (line 10): unknown key 'shutdwn'")


def test_check_beside_mistakes_says_each_once_and_nothing_false(tmp_path: Path) -> None:
    """A duplicate name once; a valid nested group no mistake; a `from_replay` parameter is one."""
    text = """\
[[child]]
name = "world"

[[child.child]]
name = "env"
target = "targets.tree:serve_on_port_zero"
ready_timeout = 10

[[child]]
name = "w"
target = "targets.basic:add"
params = { a = 1, b = 2 }

[[child]]
name = "w"
target = "targets.basic:add"
params = { a = { from_replay = true }, b = 2 }

[[child]]
name = "c"
target = "targets.tree:connect_to"
params = { port = { from_ready = "later", key = "port" } }

[[child]]
name = "later"
target = "targets.tree:serve_on_port_zero"
ready_timeout = 10
"""
    with pytest.raises(TreeFileError) as caught:
        load_tree(write(tmp_path, text))
    said = [str(m).split(": ", 1)[1] for m in caught.value.mistakes]
    assert said == [
        "child[2] (line 14): duplicate child name 'w'",
        "child[3] (line 19): child 'c': FromReady('later'): 'later' starts after 'c', "
        "not before it",
    ]
