"""Names that make paths, children given as a list, bounds said as checked, whose import failed.

Found by a newcomer: a child named ``x/y`` ran but could not be found by its
path, a single spec given as the children failed with a bare TypeError, and
``max_seconds=-5`` was told ``>= 0`` while 0 was refused too.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from gymnasiarch import Backoff, ChildSpec, Supervisor
from gymnasiarch.dynaloader import ErrorDuringImport
from gymnasiarch.exceptions import FieldTypeError, FieldValueError
from gymnasiarch.treefile import TreeFileError, load_tree

TESTS = Path(__file__).parent
B = "targets.basic"
SLASH = "'/' separates the names of a path"


def gymnasiarch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gymnasiarch", *args],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- 1. names: no '/', no space at either end -------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: ChildSpec("x/y", f"{B}:add"), "x/y"),
        (lambda: ChildSpec("/", f"{B}:add"), "/"),
        (lambda: ChildSpec("agents/a1", command=["true"]), "agents/a1"),
        (lambda: Supervisor(name="g/h"), "g/h"),
        (lambda: Supervisor([ChildSpec("a", f"{B}:add")], name="/agents"), "/agents"),
        (lambda: Supervisor().configure(name="g/"), "g/"),
    ],
)
def test_a_name_with_a_slash_is_refused_saying_why(make: Callable[[], Any], name: str) -> None:
    """A '/' in a child's or a supervisor's name: a FieldValueError naming field, value, reason."""
    with pytest.raises(FieldValueError) as info:
        make()
    assert info.value.field == "name"
    assert repr(name) in info.value.message
    assert SLASH in str(info.value)


@pytest.mark.parametrize("name", [" env", "env ", " ", "agent 1 "])
def test_a_name_with_a_space_at_an_end_is_refused(name: str) -> None:
    """A space at an end would not show in `gymnasiarch status`, yet a path would need it."""
    with pytest.raises(FieldValueError, match="may not begin or end with a space") as info:
        ChildSpec(name, f"{B}:add")
    assert info.value.field == "name"
    with pytest.raises(FieldValueError, match="may not begin or end with a space"):
        Supervisor(name=name)


async def test_a_name_with_an_inner_space_is_found_by_its_path() -> None:
    """A space inside a name stays allowed: paths, walk() and results all work with it."""
    group = Supervisor(
        [ChildSpec("agent 1", f"{B}:add", args=(1, 2), restart="transient")],
        name="my agents",
        restart="transient",
    )
    sup = Supervisor([group])
    assert [row.path for row in sup.walk()] == ["my agents", "my agents/agent 1"]
    assert sup.child_info("my agents/agent 1").name == "agent 1"
    with anyio.fail_after(30):
        assert await sup.run() == {"my agents": {"agent 1": 3}}


def tree_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tree.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[child]]\nname = "a/b"\ntarget = "targets.basic:add"\n', "child[0].name (line 2)"),
        (
            '[supervisor]\nname = "root/1"\n\n'
            '[[child]]\nname = "a"\ntarget = "targets.basic:add"\n',
            "supervisor.name (line 2)",
        ),
        (
            '[[child]]\nname = "agents/"\n\n[[child.child]]\nname = "a1"\n'
            'target = "targets.basic:add"\n',
            "child[0].name (line 2)",
        ),
    ],
)
def test_a_tree_file_name_with_a_slash_fails_its_check(tmp_path: Path, text: str, key: str) -> None:
    """load_tree and `gymnasiarch check` refuse it at its key and line, the reason given."""
    path = tree_file(tmp_path, text)
    with pytest.raises(TreeFileError, match=SLASH) as info:
        load_tree(path, add_to_path=False)
    assert key in str(info.value)
    done = gymnasiarch("check", str(path))
    assert done.returncode == 2, done.stdout
    assert key in done.stderr
    assert SLASH in done.stderr
    assert "Traceback" not in done.stderr


# -- 2. children: a list of them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("children", "shown"),
    [
        (ChildSpec("env", f"{B}:add"), "a ChildSpec"),
        (Supervisor(name="inner"), "a Supervisor"),
        ("env", "'env'"),
        (b"env", "b'env'"),
        ({"env": ChildSpec("env", f"{B}:add")}, "a dict"),
        (5, "5"),
        (None, "None"),
    ],
)
def test_children_that_are_not_a_list_get_one_clear_error(children: Any, shown: str) -> None:
    """One FieldTypeError for the children: what is expected, what came, and `[spec]`."""
    with pytest.raises(FieldTypeError) as info:
        Supervisor(children)
    assert info.value.field == "children"
    assert str(info.value) == (
        "children: expected a list of ChildSpec or Supervisor objects, got "
        f"{shown} (one child goes in a list too: Supervisor([spec]))"
    )


def test_children_in_any_iterable_still_work() -> None:
    """A tuple or a generator of specs is a list of children as before."""
    specs = [ChildSpec("a", f"{B}:add"), ChildSpec("b", f"{B}:add")]
    assert [s.name for s in Supervisor(tuple(specs)).children] == ["a", "b"]
    assert [s.name for s in Supervisor(s for s in specs).children] == ["a", "b"]


async def test_start_child_with_no_spec_is_a_field_type_error() -> None:
    """start_child("x") says what it expected, not AttributeError: 'str' has no 'command'."""
    sup = Supervisor([ChildSpec("env", f"{B}:sleep_forever")])
    with anyio.fail_after(30):
        async with sup:
            await sup.wait_ready("env")
            expected = "expected a ChildSpec or a Supervisor"
            with pytest.raises(FieldTypeError, match=expected) as info:
                await sup.start_child("x")  # type: ignore[arg-type]
            assert info.value.field == "spec"
            with pytest.raises(FieldTypeError, match=expected):
                await sup.start_child("x", under="nowhere")  # type: ignore[arg-type]
            assert [row.path for row in sup.walk()] == ["env"]
            sup.stop()


# -- 3. bounds said as checked -----------------------------------------------------------


@pytest.mark.parametrize("value", [-5, 0, 0.0, float("nan")])
def test_max_seconds_says_above_zero_for_every_refused_value(value: float) -> None:
    """-5 and 0 are refused for one reason, and told the same one."""
    with pytest.raises(FieldValueError) as info:
        Supervisor(max_seconds=value)
    assert info.value.message == f"expected a number of seconds > 0, got {value!r}"


def test_zero_seconds_where_zero_is_allowed() -> None:
    """kill_timeout and shutdown take 0 (kill at once), and say >= 0 for a negative."""
    assert Supervisor(kill_timeout=0).kill_timeout == 0
    assert ChildSpec("a", f"{B}:add", shutdown=0).shutdown == 0
    with pytest.raises(FieldValueError, match=r"expected a number of seconds >= 0, got -1"):
        Supervisor(kill_timeout=-1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("factor", -1, "expected a finite number >= 1, got -1"),
        ("factor", 0.5, "expected a finite number >= 1, got 0.5"),
        ("factor", float("nan"), "expected a finite number >= 1, got nan"),
        ("factor", float("inf"), "expected a finite number >= 1, got inf"),
        ("base", float("inf"), "expected a finite number of seconds >= 0, got inf"),
        ("jitter", -0.5, "expected a fraction from 0 to 1, got -0.5"),
        ("jitter", 2, "expected a fraction from 0 to 1, got 2"),
        ("base", -1, "expected a number of seconds >= 0, got -1"),
    ],
)
def test_backoff_says_each_fields_own_bound(field: str, value: float, message: str) -> None:
    """A factor is no number of seconds >= 0, nor is a jitter: each is told its own rule."""
    with pytest.raises(FieldValueError) as info:
        Backoff(**{field: value})
    assert (info.value.field, info.value.message) == (field, message)
    with pytest.raises(FieldTypeError, match=f"{field}: expected a number"):
        Backoff(**{field: "1"})  # type: ignore[arg-type]
    assert Backoff(factor=1, jitter=0).delay(3) == 0.1


def test_a_backoff_without_a_cap_grows_and_never_turns_into_nan() -> None:
    """``cap=math.inf`` (a tree file's ``cap = inf``): no cap; a long run of failures stays inf."""
    backoff = Backoff(base=1, factor=2, cap=math.inf, jitter=0.5)
    assert 2 <= backoff.delay(3) <= 6
    assert backoff.delay(5000) == math.inf  # 2**4999 overflows a float: the cap, no cap
    assert Backoff(base=1, factor=2, cap=10, jitter=0).delay(5000) == 10


def test_cli_seconds_say_finite() -> None:
    """`--interval inf` is refused, and the message says why (finite), not only >= 0."""
    done = gymnasiarch("demo", "--interval", "inf")
    assert done.returncode == 2
    assert "expected a finite number of seconds >= 0, got inf" in done.stderr


# -- 4. whose target failed to import ----------------------------------------------------


async def test_an_unimportable_target_names_the_child_by_its_path() -> None:
    """ErrorDuringImport begins with the child's path; its type and fields are as before."""
    target = "targets.no_such_module_xyz:run"
    group = Supervisor([ChildSpec("a1", target)], name="agents")
    sup = Supervisor([ChildSpec("env", f"{B}:sleep_forever"), group])
    with anyio.fail_after(30), pytest.raises(ErrorDuringImport) as info:
        await sup.run()
    error = info.value
    assert str(error).startswith(f"child 'agents/a1': problem in {target} - ModuleNotFoundError")
    assert (error.child, error.filename, error.exc) == ("agents/a1", target, ModuleNotFoundError)
    assert all(row.pid is None for row in sup.walk())  # found before anything started
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.child) == (str(error), "agents/a1")

    with anyio.fail_after(30), pytest.raises(ErrorDuringImport) as info:
        await Supervisor([ChildSpec("env", "targets.basic:no_such_function")]).run()
    assert str(info.value).startswith("child 'env': problem in targets.basic:no_such_function")


async def test_a_target_added_at_run_time_names_its_path_too() -> None:
    """start_child(spec, under="agents"): the error names agents/late."""
    group = Supervisor([ChildSpec("a1", f"{B}:sleep_forever")], name="agents")
    sup = Supervisor([group])
    with anyio.fail_after(30):
        async with sup:
            await sup.wait_ready("agents/a1")
            with pytest.raises(ErrorDuringImport) as info:
                await sup.start_child(ChildSpec("late", "targets.nope:run"), under="agents")
            sup.stop()
    assert info.value.child == "agents/late"
    assert str(info.value).startswith("child 'agents/late': problem in targets.nope:run")
