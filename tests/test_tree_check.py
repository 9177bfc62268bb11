"""Tree file checks: a nested supervisor's backend keys, mistakes in file order, pickling."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gymnasiarch.treefile import TreeFileError, load_tree

NESTED_BACKEND = """\
[[child]]
name = "grp"
backend = "bogus"
address = "ray://x:10001"
backoff = 3

  [[child.child]]
  name = "x"
  target = "os:getpid"
"""

OUT_OF_ORDER = """\
[[child]]
name = "a"
target = "nosuchmod:f"
restart = "sometimes"

[[child]]
name = "b"
target = "os:getpid"
bogus = 1

[supervisor]
strategy = "one_for_none"
typo_key = 3
"""


def _mistakes(path: Path) -> list[TreeFileError]:
    with pytest.raises(TreeFileError) as caught:
        load_tree(path, resolve=True)
    return caught.value.mistakes


def test_a_nested_supervisors_backend_is_one_unknown_key(tmp_path: Path) -> None:
    """Listed once each, under the nested table's key; not as the root's ``supervisor.backend``."""
    path = tmp_path / "tree.toml"
    path.write_text(NESTED_BACKEND)
    found = [(m.key, m.line) for m in _mistakes(path)]
    assert found == [("child[0].backend", 3), ("child[0].address", 4), ("child[0].backoff", 5)]


def test_checking_a_nested_backend_does_not_build_a_ray_backend(tmp_path: Path) -> None:
    """Only the root's backend is built: a nested ``backend = "ray"`` is a mistake, no import."""
    path = tmp_path / "tree.toml"
    path.write_text(NESTED_BACKEND.replace('"bogus"', '"ray"').replace("ray://x:10001", "auto"))
    program = textwrap.dedent(
        f"""
        import sys
        from gymnasiarch.treefile import TreeFileError, load_tree
        try:
            load_tree({str(path)!r})
        except TreeFileError as error:
            print([m.key for m in error.mistakes], "gymnasiarch.ray_backend" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    keys = "['child[0].backend', 'child[0].address', 'child[0].backoff']"
    assert out.stdout.strip() == f"{keys} False"


def test_mistakes_are_in_file_order(tmp_path: Path) -> None:
    """Sorted by line, whatever order the checks found them in; the first is the one raised."""
    path = tmp_path / "tree.toml"
    path.write_text(OUT_OF_ORDER)
    with pytest.raises(TreeFileError) as caught:
        load_tree(path, resolve=True)
    mistakes = caught.value.mistakes
    assert [m.line for m in mistakes] == [3, 4, 9, 12, 13]
    assert mistakes[0] is caught.value


def test_a_tree_file_error_pickles_with_its_mistakes(tmp_path: Path) -> None:
    """It crosses a process boundary (a pool, a Ray task) as it is: message, key, line, mistakes."""
    path = tmp_path / "tree.toml"
    path.write_text(OUT_OF_ORDER)
    with pytest.raises(TreeFileError) as caught:
        load_tree(path, resolve=True)
    error = caught.value
    error.add_note("while checking")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TreeFileError
    assert (str(copy), copy.path, copy.key, copy.line) == (
        str(error),
        error.path,
        error.key,
        error.line,
    )
    assert copy.mistakes[0] is copy  # the cycle kept
    assert [str(m) for m in copy.mistakes] == [str(m) for m in error.mistakes]
    assert copy.__notes__ == ["while checking"]


# -- every mistake in one run: none hides another ------------------------------------


def _found(tmp_path: Path, text: str) -> list[tuple[str | None, int | None]]:
    path = tmp_path / "tree.toml"
    path.write_text(text)
    return [(m.key, m.line) for m in _mistakes(path)]


def test_every_wrong_value_of_one_child_is_listed(tmp_path: Path) -> None:
    """Not only the first its spec's checks came to: output, stderr_level and restart."""
    text = """\
[[child]]
name = "a"
target = "os:getpid"
output = "jsonl"
stderr_level = "CHATTY"
restart = "sometimes"
"""
    assert _found(tmp_path, text) == [
        ("child[0].output", 4),
        ("child[0].stderr_level", 5),
        ("child[0].restart", 6),
    ]


def test_an_unknown_key_hides_none_of_the_values(tmp_path: Path) -> None:
    """The known keys' values are checked beside a misspelt key, a ready table's too."""
    text = """\
[[child]]
name = "a"
command = ["sh", "-c", "exit 0"]
shutdwn = 3
restart = "sometimes"
ready = { port = 70000 }
"""
    assert _found(tmp_path, text) == [
        ("child[0].shutdwn", 4),
        ("child[0].restart", 5),
        ("child[0].ready.port", 6),
    ]


def test_a_missing_program_is_listed_beside_a_wrong_field(tmp_path: Path) -> None:
    """The program is looked for (on PATH, for real) whatever else of its child is wrong."""
    text = """\
[[child]]
name = "cache"
command = ["gymnasiarch-no-such-program"]
restart = "sometimes"
"""
    path = tmp_path / "tree.toml"
    path.write_text(text)
    mistakes = _mistakes(path)
    assert [(m.key, m.line) for m in mistakes] == [("child[0].command", 3), ("child[0].restart", 4)]
    assert "'gymnasiarch-no-such-program' not found" in str(mistakes[0])


def test_the_supervisors_options_are_checked_beside_a_childs_mistakes(tmp_path: Path) -> None:
    """[supervisor]'s values, and a nested supervisor's, are checked whatever its children say."""
    text = """\
[supervisor]
strategy = "one_for_none"

[[child]]
name = "a"
target = "os:getpid"
restart = "sometimes"

[[child]]
name = "group"
max_restarts = -1

  [[child.child]]
  name = "b"
  target = "os:getpid"
  stop_signal = "SIGTERM"
"""
    assert _found(tmp_path, text) == [
        ("supervisor.strategy", 2),
        ("child[0].restart", 7),
        ("child[1].max_restarts", 11),
        ("child[1].child[0].stop_signal", 16),
    ]


def test_a_wrong_ready_table_hides_none_of_the_rest_of_its_child(tmp_path: Path) -> None:
    """Each of the ready table's keys is checked, then the child's other fields all the same."""
    text = """\
[[child]]
name = "a"
command = ["sh", "-c", "exit 0"]
ready = { port = 70000, hots = "::1" }
stop_signal = "SIGNOPE"
stdout_level = "CHATTY"
"""
    assert _found(tmp_path, text) == [
        ("child[0].ready.hots", 4),
        ("child[0].ready.port", 4),
        ("child[0].stop_signal", 5),
        ("child[0].stdout_level", 6),
    ]


def test_a_mistake_that_only_follows_from_another_is_not_listed(tmp_path: Path) -> None:
    """The root cause is: ``significant`` is fine once ``restart`` is right, ``json_keys``
    once ``output`` is; given next to a right ``restart``, ``significant`` is the mistake."""
    text = """\
[[child]]
name = "a"
target = "os:getpid"
restart = "sometimes"
significant = true
output = "jsonl"
json_keys = { level = "lvl" }

[[child]]
name = "b"
target = "os:getpid"
restart = "permanent"
significant = true

[[child]]
name = "group"
restart = "sometimes"
significant = true

  [[child.child]]
  name = "c"
  target = "os:getpid"
"""
    assert _found(tmp_path, text) == [
        ("child[0].restart", 4),
        ("child[0].output", 6),
        ("child[1].significant", 13),
        ("child[2].restart", 17),
    ]


def test_every_duplicate_name_is_listed_a_wrong_childs_too(tmp_path: Path) -> None:
    """Each child whose name an earlier sibling has, whatever else of it is wrong."""
    child = '[[child]]\nname = "a"\ntarget = "os:getpid"\n'
    text = child + "\n" + child + 'restart = "sometimes"\n\n' + child + "\n" + child
    assert _found(tmp_path, text) == [
        ("child[1]", 5),
        ("child[1].restart", 8),
        ("child[2]", 10),
        ("child[3]", 14),
    ]


MIXED = """\
[supervisor]
strategy = "one_for_none"
max_restarts = -1
sed = 7
backoff = { base = -1, jitter = 2 }

[[child]]
name = "env"
target = "gymnasiarch_no_such_module:run"
restart = "sometimes"
significant = true
stderr_level = "CHATTY"

[[child]]
name = "cache"
command = ["gymnasiarch-no-such-program", "--port", "{api}"]
ports = ["api"]
ready = { port = 70000 }
shutdwn = 3
stop_signal = "SIGNOPE"

[[child]]
name = "group"
strategy = "one_for_all"
restart = "permanent"
significant = true

  [[child.child]]
  name = "worker"
  target = "os:getpid"
  output = "jsonl"
  json_keys = { level = "lvl" }
"""

CHILD_KEYS = (
    "args, async_backend, command, count_normal_exits, cwd, env, json_keys, limits, "
    "max_memory, name, output, params, placement, ports, ready, ready_timeout, restart, "
    "shutdown, significant, stderr_level, stdout_level, stop_signal, target, watchdog"
)
SUPERVISOR_KEYS = (
    "address, backend, backoff, kill_timeout, max_restarts, max_seconds, name, "
    "runtime_config, seed, start_method, start_order, strategy"
)
MIXED_REPORT = f"""\
gymnasiarch: tree.toml: supervisor.strategy (line 2): expected one of one_for_one, one_for_all, rest_for_one, got 'one_for_none'
gymnasiarch: tree.toml: supervisor.max_restarts (line 3): expected an int >= 0, got -1
gymnasiarch: tree.toml: supervisor.sed (line 4): unknown key 'sed' (known keys: {SUPERVISOR_KEYS})
gymnasiarch: tree.toml: supervisor.backoff.base (line 5): expected a number of seconds >= 0, got -1
gymnasiarch: tree.toml: supervisor.backoff.jitter (line 5): expected a fraction from 0 to 1, got 2
gymnasiarch: tree.toml: child[0].target (line 9): problem in gymnasiarch_no_such_module:run - ModuleNotFoundError: no module named 'gymnasiarch_no_such_module'
gymnasiarch: tree.toml: child[0].restart (line 10): expected one of permanent, transient, temporary, got 'sometimes'
gymnasiarch: tree.toml: child[0].stderr_level (line 12): no such level: 'CHATTY' (expected DEBUG, INFO, WARNING, ERROR, CRITICAL or a number >= 0)
gymnasiarch: tree.toml: child[1].command (line 16): program 'gymnasiarch-no-such-program' not found or not executable
gymnasiarch: tree.toml: child[1].ready.port (line 18): expected a port from 1 to 65535, got 70000
gymnasiarch: tree.toml: child[1].shutdwn (line 19): unknown key 'shutdwn' (known keys: {CHILD_KEYS})
gymnasiarch: tree.toml: child[1].stop_signal (line 20): no such signal: 'SIGNOPE'
gymnasiarch: tree.toml: child[2].significant (line 26): a significant supervisor must be transient or temporary
gymnasiarch: tree.toml: child[2].child[0].output (line 31): expected one of capture, inherit, json, got 'jsonl'
"""  # noqa: E501 - each line as the command prints it


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gymnasiarch", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_lists_every_mistake_of_a_file_in_one_run(tmp_path: Path) -> None:
    """``gymnasiarch check``: each mistake one line, key path and line, in file order, exit 2.

    Not listed: ``significant`` of child[0] and ``json_keys`` of the worker,
    which are wrong only because ``restart`` and ``output`` are.
    """
    (tmp_path / "tree.toml").write_text(MIXED)
    done = _cli(tmp_path, "check", "tree.toml")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == MIXED_REPORT


def test_run_refuses_the_same_file_with_its_first_mistake(tmp_path: Path) -> None:
    """``gymnasiarch run`` starts nothing: one line, the first mistake, exit 2."""
    (tmp_path / "tree.toml").write_text(MIXED)
    done = _cli(tmp_path, "run", "tree.toml")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == MIXED_REPORT.splitlines(keepends=True)[0]


def test_check_finds_a_cwd_that_is_no_directory(tmp_path: Path) -> None:
    """As `run` would find it, at start: now, at its key."""
    tree = tmp_path / "t.toml"
    tree.write_text('[[child]]\nname = "p"\ncommand = ["sleep", "1"]\ncwd = "/nonexistent/dir"\n')
    (mistake,) = _mistakes(tree)
    assert str(mistake).endswith("child[0].cwd (line 4): '/nonexistent/dir' is not a directory")


def test_inf_and_nan_in_a_file_are_judged_as_in_python(tmp_path: Path) -> None:
    """`shutdown = inf` waits for ever (math.inf in Python); nan, a 0 ready_timeout do not pass."""
    tree = tmp_path / "t.toml"
    tree.write_text(
        '[[child]]\nname = "a"\ncommand = ["sleep", "1"]\nshutdown = inf\n'
        '[[child]]\nname = "b"\ncommand = ["sleep", "1"]\nshutdown = nan\nready_timeout = 0\n'
    )
    said = [str(m).split(": ", 1)[1] for m in _mistakes(tree)]
    assert said == [
        "child[1].shutdown (line 8): expected a number of seconds >= 0, got nan",
        "child[1].ready_timeout (line 9): expected a number of seconds > 0, got 0",
    ]
    tree.write_text('[[child]]\nname = "a"\ncommand = ["sleep", "1"]\nshutdown = inf\n')
    (child,) = load_tree(tree).children
    assert child.shutdown == math.inf  # type: ignore[union-attr]
