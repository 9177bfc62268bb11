"""The supervisor with real child processes: results, failures, strategies, stops."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from gymnasiarch import Backoff, ChildSpec, Event, LocalBackend, RemoteTraceback, Supervisor
from gymnasiarch._backends.base import ChildRun
from gymnasiarch._process.child import Launch
from gymnasiarch._process.forkserver import SERVER
from gymnasiarch._process.run import ChildProcess
from gymnasiarch.dynaloader import ErrorDuringImport
from gymnasiarch.exceptions import (
    DeadChildrenRisingAsZombiesError,
    FieldError,
    FieldTypeError,
    FieldValueError,
    InitializationFailedError,
    PrematureTaskDeathError,
)
from gymnasiarch.logserver import LogTicket
from gymnasiarch.seeding import derive_seed
from targets import basic

T = "targets.basic"


async def test_results_of_sync_and_async_targets_come_back() -> None:
    """wait() returns each transient child's return value, sync or async, path or callable."""
    with anyio.fail_after(20):
        results = await Supervisor(
            [
                ChildSpec("sync", f"{T}:add", args=(1, 2), restart="transient"),
                ChildSpec("async", basic.async_add, args=(3, 4), restart="transient"),
                ChildSpec("dotted", f"{T}.add", kwargs={"a": 5, "b": 6}, restart="temporary"),
            ]
        ).run()
    assert results == {"sync": 3, "async": 7, "dotted": 11}


async def test_child_context_title_seed_and_runtime_config() -> None:
    """A child sees its name, seed, config and title; it has its own group, ignores SIGINT."""
    with anyio.fail_after(20):
        results = await Supervisor(
            [ChildSpec("probe", f"{T}:whoami", restart="transient")],
            seed=1234,
            runtime_config={"broker_uri": "tcp://localhost:1"},
        ).run()
    probe = results["probe"]
    assert probe["name"] == "probe"
    assert probe["seed"] == derive_seed(1234, "probe")
    assert probe["restarts"] == 0
    assert probe["config"] == {"broker_uri": "tcp://localhost:1"}
    assert probe["title"] == "gymnasiarch[probe]"
    assert probe["pgid"] == probe["pid"]
    assert probe["sigint"] is True


async def test_crash_gives_typed_error_with_remote_traceback() -> None:
    """A child that keeps raising ends in PrematureTaskDeathError with its traceback as cause."""
    sup = Supervisor(
        [ChildSpec("sim", f"{T}:crash", args=("kaputt",), restart="transient")],
        max_restarts=2,
        max_seconds=30,
    )
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError) as info:
        await sup.run()
    error = info.value
    assert error.child == "sim"
    assert error.exitcode == 1
    assert error.restarts == 2
    assert error.pid is not None
    assert "kaputt" in (error.remote_traceback or "")
    assert "def crash" in (error.remote_traceback or "") or "crash" in (
        error.remote_traceback or ""
    )
    assert isinstance(error.__cause__, basic.Boom)
    assert isinstance(error.__cause__.__cause__, RemoteTraceback)
    assert "raise Boom(message)" in error.__cause__.__cause__.text


async def test_exit_codes_and_signals_are_abnormal() -> None:
    """sys.exit(3) is an abnormal end; the error carries exit code 3."""
    sup = Supervisor(
        [ChildSpec("x", f"{T}:exit_with", args=(3,), restart="transient")], max_restarts=0
    )
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError) as info:
        await sup.run()
    assert info.value.exitcode == 3
    assert info.value.signum is None


async def test_sys_exit_zero_is_normal_for_transient() -> None:
    """sys.exit(0) is a normal end: a transient child is not restarted."""
    with anyio.fail_after(20):
        results = await Supervisor(
            [ChildSpec("x", f"{T}:exit_with", args=(0,), restart="transient")], max_restarts=0
        ).run()
    assert results == {"x": None}


async def test_transient_child_restarted_after_crash_then_succeeds(tmp_path: Path) -> None:
    """A transient child that crashes once is restarted and its second result returned."""
    marker = tmp_path / "ran"
    events: list[Event] = []
    sup = Supervisor(
        [ChildSpec("flaky", f"{T}:crash_after_first_run", args=(str(marker),), restart="transient")]
    )
    with sup.events() as stream, anyio.fail_after(20):
        results = await sup.run()
        async for event in stream:
            events.append(event)
    assert results == {"flaky": "second run"}
    kinds = [(e.kind, e.child) for e in events]
    assert ("restarting", "flaky") in kinds
    assert kinds[-1] == ("stopped", None)
    assert [e.kind for e in events if e.kind == "exited"] == ["exited", "exited"]


async def test_temporary_child_is_never_restarted() -> None:
    """A temporary child that crashes is not restarted and has no result."""
    with anyio.fail_after(20):
        results = await Supervisor(
            [
                ChildSpec("t", f"{T}:crash", restart="temporary"),
                ChildSpec("ok", f"{T}:add", args=(1, 1), restart="temporary"),
            ],
            max_restarts=0,
        ).run()
    assert results == {"ok": 2}


async def test_sigkilled_permanent_child_is_restarted() -> None:
    """Killing a permanent child with SIGKILL gets it restarted with a new pid."""
    async with Supervisor([ChildSpec("p", f"{T}:sleep_forever")]) as sup, sup.events() as stream:
        first_pid = sup.which_children()[0].pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        with anyio.fail_after(10):
            async for event in stream:
                if event.kind == "ready":
                    break
        info = sup.which_children()[0]
        assert info.pid not in (None, first_pid)
        assert info.restarts == 1
        assert info.last_exit is not None
        assert info.last_exit.signum == signal.SIGKILL


@pytest.mark.parametrize(
    ("strategy", "expected_restarted"),
    [("one_for_one", ["b"]), ("one_for_all", ["a", "b", "c"]), ("rest_for_one", ["b", "c"])],
)
async def test_strategies_restart_the_right_siblings(
    tmp_path: Path, strategy: str, expected_restarted: list[str]
) -> None:
    """Killing the middle child restarts exactly the siblings the strategy names, in order."""
    journal = tmp_path / "journal"
    specs = [
        ChildSpec(n, f"{T}:append_and_sleep", args=(str(journal),), ready_timeout=10) for n in "abc"
    ]
    sup = Supervisor(specs, strategy=strategy)  # type: ignore[arg-type]
    async with sup, sup.events() as stream:
        pid_b = sup.which_children()[1].pid
        assert pid_b is not None
        os.kill(pid_b, signal.SIGKILL)
        ready: list[str] = []
        with anyio.fail_after(10):
            async for event in stream:
                if event.kind == "ready" and event.child is not None:
                    ready.append(event.child)
                    if len(ready) == len(expected_restarted):
                        break
        assert ready == expected_restarted
        # Each child writes the journal before it calls ready().
        lines = (await anyio.Path(journal).read_text()).splitlines()
        assert [line.split()[1] for line in lines[3:]] == expected_restarted
        assert {c.name: c.restarts for c in sup.which_children()} == {
            n: int(n in expected_restarted) for n in "abc"
        }


async def test_restart_intensity_gives_up_and_stops_everything() -> None:
    """More than max_restarts in max_seconds: every child is stopped and the error raised."""
    sup = Supervisor(
        [ChildSpec("steady", f"{T}:sleep_forever"), ChildSpec("bad", f"{T}:crash")],
        max_restarts=3,
        max_seconds=60,
    )
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError) as info:
        async with sup:
            await anyio.sleep_forever()
    assert info.value.child == "bad"
    assert info.value.restarts == 3
    assert all(c.pid is None for c in sup.which_children())


async def test_significant_child_ending_normally_stops_the_tree() -> None:
    """When a significant child returns, its siblings are stopped and wait() returns."""
    with anyio.fail_after(20):
        results = await Supervisor(
            [
                ChildSpec("server", f"{T}:sleep_forever"),
                ChildSpec("main", f"{T}:add", args=(2, 2), restart="transient", significant=True),
            ]
        ).run()
    assert results == {"main": 4}


async def test_a_sibling_that_finishes_as_the_tree_stops_keeps_its_result() -> None:
    """Stopped with the tree, a child that returns normally still has its result."""
    with anyio.fail_after(20):
        results = await Supervisor(
            [
                ChildSpec("worker", f"{T}:return_on_sigterm", ready_timeout=10),
                ChildSpec("main", f"{T}:add", args=(2, 2), restart="transient", significant=True),
            ]
        ).run()
    assert results == {"main": 4, "worker": "stopped cleanly"}


async def test_significant_child_crashing_is_an_error() -> None:
    """A significant temporary child that crashes ends the tree with its error."""
    sup = Supervisor(
        [
            ChildSpec("server", f"{T}:sleep_forever"),
            ChildSpec("main", f"{T}:crash", restart="temporary", significant=True),
        ]
    )
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError) as info:
        await sup.run()
    assert info.value.child == "main"


async def test_stubborn_child_is_killed_after_its_grace_period() -> None:
    """A child ignoring SIGTERM is SIGKILLed after `shutdown` seconds; the tree still stops."""
    sup = Supervisor(
        [ChildSpec("stubborn", f"{T}:ignore_sigterm_and_sleep", shutdown=0.3, ready_timeout=10)]
    )
    with sup.events() as stream, anyio.fail_after(10):
        async with sup:
            pass
        exits = [e async for e in stream if e.kind == "exited"]
    assert exits[0].signum == signal.SIGKILL


async def test_shutdown_stops_grandchildren_too(tmp_path: Path) -> None:
    """Signals go to the child's process group: its own subprocesses stop with it."""
    pidfile = tmp_path / "grandchild.pid"
    async with Supervisor(
        [
            ChildSpec(
                "parent",
                f"{T}:spawn_grandchild_and_sleep",
                args=(str(pidfile),),
                ready_timeout=10,
                shutdown=2,
            )
        ]
    ):
        grandchild = int(await anyio.Path(pidfile).read_text())
        pidfd = os.pidfd_open(grandchild)  # fails if it were not alive
    try:
        with anyio.fail_after(5):
            await anyio.wait_readable(pidfd)  # readable once the grandchild has exited
    finally:
        os.close(pidfd)


async def test_what_an_exited_child_left_running_is_ended_with_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A child returns, its subprocess still runs: the group goes, the exit comes promptly."""
    pidfile = tmp_path / "grandchild.pid"
    spec = ChildSpec("leaver", f"{T}:spawn_grandchild_and_return", args=(str(pidfile),))
    with anyio.fail_after(5):  # not the 2 s wait for pipes a grandchild would hold
        results = await Supervisor([ChildSpec(**{**spec.__dict__, "restart": "transient"})]).run()
    assert results == {"leaver": "done"}
    grandchild = int(pidfile.read_text())
    with contextlib.suppress(ProcessLookupError):  # gone already, or dead and not yet reaped:
        pidfd = os.pidfd_open(grandchild)
        try:
            with anyio.fail_after(0.5):
                await anyio.wait_readable(pidfd)  # readable: it has exited
        finally:
            os.close(pidfd)
    assert not [r for r in caplog.records if "stayed open" in r.getMessage()]


async def test_terminate_and_restart_child_are_not_crashes() -> None:
    """Stops asked for never count against the restart intensity."""
    async with Supervisor([ChildSpec("p", f"{T}:sleep_forever")], max_restarts=0) as sup:
        with anyio.fail_after(10):
            await sup.restart_child("p")
            await sup.restart_child("p")
            await sup.terminate_child("p")
        info = sup.which_children()[0]
        assert info.state == "terminated"
        assert info.pid is None
        await sup.restart_child("p")
        assert sup.which_children()[0].state == "running"


async def test_start_child_adds_to_a_running_tree() -> None:
    """start_child starts a new child; a duplicate name is refused."""
    async with Supervisor([]) as sup:
        await sup.start_child(ChildSpec("late", f"{T}:sleep_forever"))
        assert [c.name for c in sup.which_children()] == ["late"]
        with pytest.raises(ValueError, match="duplicate"):
            await sup.start_child(ChildSpec("late", f"{T}:sleep_forever"))


async def test_ready_handshake_orders_the_start() -> None:
    """With ready_timeout, the next child starts only after the previous called ready()."""
    sup = Supervisor(
        [
            ChildSpec("first", f"{T}:ready_then_sleep", args=("v1",), ready_timeout=10),
            ChildSpec("second", f"{T}:ready_then_sleep", ready_timeout=10),
        ]
    )
    with sup.events() as stream:
        async with sup:
            pass
        order = [(e.kind, e.child) async for e in stream if e.kind in ("started", "ready")]
    assert order == [
        ("started", "first"),
        ("ready", "first"),
        ("started", "second"),
        ("ready", "second"),
    ]


async def test_ready_timeout_is_an_initialization_failure() -> None:
    """A child that never calls ready() within ready_timeout fails the start."""
    with anyio.fail_after(10), pytest.raises(InitializationFailedError, match="ready_timeout"):
        await Supervisor([ChildSpec("slow", f"{T}:never_ready", ready_timeout=0.3)]).run()


async def test_child_dying_during_start_is_an_initialization_failure() -> None:
    """A child that ends before it is ready fails the start with its error as cause."""
    with anyio.fail_after(10), pytest.raises(InitializationFailedError) as info:
        await Supervisor([ChildSpec("bad", f"{T}:crash", ready_timeout=5)]).run()
    assert isinstance(info.value.__cause__, basic.Boom)


async def test_parallel_start_order_starts_all() -> None:
    """start_order='parallel' starts every child; all are running."""
    specs = [ChildSpec(f"c{i}", f"{T}:sleep_forever") for i in range(6)]
    async with Supervisor(specs, start_order="parallel") as sup:
        assert all(c.state == "running" and c.pid for c in sup.which_children())


async def test_child_logging_reaches_parent_handlers(caplog: pytest.LogCaptureFixture) -> None:
    """Records a child logs arrive in the parent's logging, tagged with the child, none lost."""
    caplog.set_level("INFO")
    with anyio.fail_after(20):
        await Supervisor(
            [ChildSpec("logger", f"{T}:log_lines", args=(200,), restart="transient")]
        ).run()
    lines = [r for r in caplog.records if r.name == "targets.basic"]
    assert [r.getMessage() for r in lines] == [f"line {i}" for i in range(200)]
    assert all(r.child == "logger" for r in lines)  # type: ignore[attr-defined]
    assert lines[7].index == 7  # type: ignore[attr-defined]


async def test_record_logged_right_before_exit_arrives(caplog: pytest.LogCaptureFixture) -> None:
    """A record logged just before sys.exit reaches the parent before the exit is reported."""
    caplog.set_level("INFO")
    with anyio.fail_after(20):
        await Supervisor([ChildSpec("x", f"{T}:exit_with", args=(0,), restart="transient")]).run()
    assert "exiting with 0" in [r.getMessage() for r in caplog.records]


async def test_cancelling_the_supervisor_still_stops_children() -> None:
    """Cancelling the task that runs the supervisor shuts the children down."""
    sup = Supervisor([ChildSpec("p", f"{T}:sleep_forever")])
    with anyio.move_on_after(0.5):
        await sup.run()
    assert sup.which_children()[0].pid is None


async def test_spawn_start_method_works() -> None:
    """The spawn start method runs children too."""
    with anyio.fail_after(30):
        results = await Supervisor(
            [ChildSpec("s", f"{T}:add", args=(2, 3), restart="transient")], start_method="spawn"
        ).run()
    assert results == {"s": 5}


async def test_nested_supervisor_is_restarted_by_its_parent(tmp_path: Path) -> None:
    """An inner supervisor that gives up is restarted by the outer one's strategy."""
    marker = tmp_path / "ran"
    inner = Supervisor(
        [
            ChildSpec(
                "flaky",
                f"{T}:crash_after_first_run",
                args=(str(marker),),
                restart="temporary",
                significant=True,
            )
        ],
        name="inner",
        restart="transient",
    )
    with anyio.fail_after(20):
        results = await Supervisor([inner]).run()
    assert results == {"inner": {"flaky": "second run"}}


async def test_nested_supervisor_inherits_config_seed_and_log_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A nested tree's children see the root's runtime config and a seed derived through it."""
    caplog.set_level("INFO")
    inner = Supervisor(
        [
            ChildSpec("who", f"{T}:whoami", restart="transient"),
            ChildSpec("talk", f"{T}:log_lines", args=(3,), restart="transient"),
        ],
        name="inner",
        restart="transient",
    )
    with anyio.fail_after(20):
        results = await Supervisor([inner], seed=11, runtime_config={"k": "v"}).run()
    who = results["inner"]["who"]
    assert who["config"] == {"k": "v"}
    assert who["seed"] == derive_seed(derive_seed(11, "inner"), "who")
    talk = [r for r in caplog.records if r.name == "targets.basic"]
    # Tagged with its path: a "talk" of another group would differ.
    assert [r.child for r in talk] == ["inner/talk"] * 3  # type: ignore[attr-defined]


# -- bad input: one clear error, before any process starts ----------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Supervisor([], strategy="one_for_some"), ValueError, "strategy"),  # type: ignore[arg-type]
        (
            lambda: Supervisor([ChildSpec("a", f"{T}:add"), ChildSpec("a", f"{T}:add")]),
            ValueError,
            "duplicate child name 'a'",
        ),
        (
            lambda: ChildSpec("a", f"{T}:add", restart="sometimes"),
            ValueError,  # type: ignore[arg-type]
            "restart: expected one of permanent, transient, temporary",
        ),
        (lambda: ChildSpec("a", 42), TypeError, "target"),  # type: ignore[arg-type]
        (lambda: ChildSpec("a", "not a path"), ValueError, "dotted path"),
        (lambda: ChildSpec("a", f"{T}:add", shutdown=-1), ValueError, "shutdown"),
        (lambda: ChildSpec("a", f"{T}:add", significant=True), ValueError, "significant"),
        (lambda: ChildSpec("", f"{T}:add"), TypeError, "name"),
        (lambda: Supervisor([], max_restarts=-1), ValueError, "max_restarts"),
        (lambda: Supervisor(["x"]), TypeError, "ChildSpec"),  # type: ignore[list-item]
    ],
)
def test_bad_specs_fail_at_construction(make, error, match) -> None:  # type: ignore[no-untyped-def]
    """Bad input is one clear error that names what was wrong."""
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    ("make", "kind", "field", "owner"),
    [
        (
            lambda: ChildSpec("a", f"{T}:add", restart="sometimes"),
            FieldValueError,
            "restart",
            "child 'a'",
        ),  # type: ignore[arg-type]
        (lambda: ChildSpec("a", 42), FieldTypeError, "target", "child 'a'"),  # type: ignore[arg-type]
        (lambda: ChildSpec("a", "not a path"), FieldValueError, "target", "child 'a'"),
        (lambda: ChildSpec("a", f"{T}:add", args="xy"), FieldTypeError, "args", "child 'a'"),
        (lambda: ChildSpec("a", f"{T}:add", kwargs={1: 2}), FieldTypeError, "kwargs", "child 'a'"),  # type: ignore[dict-item]
        (lambda: ChildSpec("a", f"{T}:add", shutdown=-1), FieldValueError, "shutdown", "child 'a'"),
        (
            lambda: ChildSpec("a", f"{T}:add", significant=1),
            FieldTypeError,
            "significant",
            "child 'a'",
        ),  # type: ignore[arg-type]
        (
            lambda: ChildSpec("a", f"{T}:add", placement={"cpus": 1}),
            FieldValueError,
            "placement",
            "child 'a'",
        ),
        (lambda: ChildSpec("", f"{T}:add"), FieldTypeError, "name", "ChildSpec"),
        (lambda: Backoff(factor=0.5), FieldValueError, "factor", "Backoff"),
        (lambda: Backoff(cap="10"), FieldTypeError, "cap", "Backoff"),  # type: ignore[arg-type]
        (lambda: Supervisor([], strategy="one_for_some"), FieldValueError, "strategy", ""),  # type: ignore[arg-type]
        (lambda: Supervisor([], max_seconds=0), FieldValueError, "max_seconds", ""),
        (lambda: Supervisor([], seed=1.5), FieldTypeError, "seed", ""),  # type: ignore[arg-type]
        (lambda: Supervisor([], runtime_config=[1]), FieldTypeError, "runtime_config", ""),  # type: ignore[arg-type]
        (lambda: Supervisor([], handle_signals="no"), FieldTypeError, "handle_signals", ""),  # type: ignore[arg-type]
        (lambda: Supervisor([], significant=True), FieldValueError, "significant", ""),
        (lambda: Supervisor([], log_server=1), FieldTypeError, "log_server", ""),  # type: ignore[arg-type]
        (
            lambda: Supervisor([ChildSpec("a", f"{T}:add"), ChildSpec("a", f"{T}:add")]),
            FieldValueError,
            "children[1]",
            "",
        ),
        (lambda: Supervisor([ChildSpec("a", f"{T}:add"), "x"]), FieldTypeError, "children[1]", ""),  # type: ignore[list-item]
    ],
)
def test_a_validation_error_names_its_field(  # type: ignore[no-untyped-def]
    make, kind: type[FieldError], field: str, owner: str
) -> None:
    """Each check says which field was wrong, as a value, not only in its message.

    A FieldValueError is a ValueError and a FieldTypeError a TypeError, so
    ``except ValueError`` keeps working; the message is "owner: field: what".
    """
    with pytest.raises(kind) as caught:
        make()
    error = caught.value
    assert (error.field, error.owner) == (field, owner)
    assert isinstance(error, ValueError if kind is FieldValueError else TypeError)
    prefix = f"{owner}: " if owner else ""
    assert str(error) == f"{prefix}{field}: {error.message}"


def test_a_supervisors_options_are_one_frozen_value_changed_only_before_it_runs() -> None:
    """The options are read through read-only attributes and changed with configure()."""
    sup = Supervisor([ChildSpec("a", f"{T}:add", args=(1, 2))], seed=3, runtime_config={"k": 1})
    options = sup.options
    assert (options.seed, sup.seed) == (3, 3)
    assert sup.runtime_config.to_dict() == {"k": 1}
    assert sup.max_seconds == 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 4  # type: ignore[misc]
    with pytest.raises(AttributeError, match=r"configure\(seed=...\)"):
        sup.seed = 4  # type: ignore[misc]
    sup.configure(seed=4, runtime_config={"k": 2})
    assert (sup.seed, sup.runtime_config.to_dict(), sup.strategy) == (4, {"k": 2}, "one_for_one")
    assert options.seed == 3  # the old value is as it was
    with pytest.raises(FieldValueError, match="strategy"):
        sup.configure(strategy="one_for_some")
    assert sup.strategy == "one_for_one"  # a bad change changes nothing
    with pytest.raises(TypeError):
        sup.configure(no_such_option=1)


async def test_configure_is_refused_while_the_supervisor_runs() -> None:
    sup = Supervisor([ChildSpec("s", f"{T}:sleep_forever")], handle_signals=False)
    with anyio.fail_after(20):
        async with sup:
            with pytest.raises(RuntimeError, match="running"):
                sup.configure(seed=1)
            sup.stop()


async def test_a_nested_supervisor_inherits_through_its_settings_not_its_options() -> None:
    """What a subtree inherits (seed, config, signals) is derived; its own options stay."""
    inner = Supervisor(
        [ChildSpec("who", f"{T}:whoami", restart="transient")], name="inner", restart="transient"
    )
    root = Supervisor([inner], seed=11, runtime_config={"k": "v"}, handle_signals=False)
    with anyio.fail_after(20):
        results = await root.run()
    assert results["inner"]["who"]["seed"] == derive_seed(derive_seed(11, "inner"), "who")
    assert (inner.seed, inner.runtime_config.to_dict(), inner.handle_signals) == (
        derive_seed(11, "inner"),
        {"k": "v"},
        False,
    )
    # Its own options are what it was built with: it can be nested again, elsewhere alike.
    assert (
        inner.options.seed,
        inner.options.runtime_config.to_dict(),
        inner.options.handle_signals,
    ) == (
        None,
        {},
        True,
    )


async def test_unimportable_target_fails_before_anything_starts() -> None:
    """A target module that does not exist fails in the parent, no process started."""
    sup = Supervisor(
        [ChildSpec("ok", f"{T}:sleep_forever"), ChildSpec("bad", "no_such_module_here:main")]
    )
    with pytest.raises(ErrorDuringImport, match="no_such_module_here"):
        await sup.run()
    assert all(c.pid is None and c.last_exit is None for c in sup.which_children())


async def test_non_callable_and_unpicklable_targets_fail_clearly() -> None:
    """A target that is no callable, or a lambda, fails with InitializationFailedError."""
    with pytest.raises(InitializationFailedError, match="not a callable"):
        await Supervisor([ChildSpec("c", f"{T}:log")]).run()
    with pytest.raises(InitializationFailedError, match="module level"):
        await Supervisor([ChildSpec("l", lambda: None)]).run()


async def test_spawn_wrapper_sets_title_config_and_runs_dotted_callee() -> None:
    """spawn_wrapper (the seed's API) retitles the process, restores config, runs the callee."""
    with anyio.fail_after(20):
        results = await Supervisor(
            [ChildSpec("w", f"{T}:through_spawn_wrapper", restart="transient")]
        ).run()
    probe = results["w"]
    assert probe["title"] == "gymnasiarch[renamed]"
    assert probe["config"] == {"k": 1}
    assert probe["sigint"] is True


async def _kill_while_out_of_descriptors(sup: Supervisor) -> None:
    """Kill the only child while no new file descriptor can be opened; wait for the tree."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    (info,) = sup.which_children()
    assert info.pid is not None
    # New descriptors get the lowest free number; with the limit there, none
    # can be opened beyond the few the dead child's run gives back, fewer
    # than a launch needs.
    open_fds = {int(fd) for fd in os.listdir("/proc/self/fd")}
    lowest_free = min(set(range(len(open_fds) + 1)) - open_fds)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        os.kill(info.pid, signal.SIGKILL)
        await sup.wait()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_restart_that_cannot_launch_gives_up_with_the_os_error() -> None:
    """Out of file descriptors at restart time: one typed error, nothing left running."""
    server_pid = SERVER.pid
    sup = Supervisor([ChildSpec("victim", f"{T}:sleep_forever")])
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError, match="restart") as caught:
        async with sup:
            await _kill_while_out_of_descriptors(sup)
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.child == "victim"
    # The failed request never reached the fork server: it still serves.
    assert SERVER.pid == server_pid
    os.kill(server_pid, 0)


async def test_child_that_will_not_die_is_named_as_a_zombie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child whose exit never shows (uninterruptible sleep) ends in a bounded wait.

    A process that survives SIGKILL cannot be made here without root (a hung
    FUSE or NFS mount does it), so the one thing substituted is the wait for
    the exit of the child named "stuck": it never returns. The process is
    real and SIGKILL really ends it; the supervisor cannot see that.
    """
    real_wait_gone = ChildProcess._wait_gone

    async def never_gone(self: ChildProcess) -> None:
        if self.name == "stuck":
            await anyio.sleep_forever()
        await real_wait_gone(self)

    monkeypatch.setattr(ChildProcess, "_wait_gone", never_gone)
    sup = Supervisor(
        [
            ChildSpec("fine", f"{T}:sleep_forever", shutdown=1.0),
            ChildSpec("stuck", f"{T}:sleep_forever", shutdown=0.1),
        ],
        kill_timeout=0.2,
    )
    with anyio.fail_after(10):
        with pytest.raises(DeadChildrenRisingAsZombiesError, match="still alive") as caught:
            async with sup:
                stuck_pid = {c.name: c.pid for c in sup.which_children()}["stuck"]
    assert caught.value.zombies == {"stuck": stuck_pid}
    assert [c.state for c in sup.which_children()] == ["terminated", "terminated"]


def test_backoff_delays_grow_and_stay_under_the_cap() -> None:
    """Without jitter the n-th restart in a row waits min(cap, base * factor**(n-1))."""
    backoff = Backoff(base=0.1, factor=3.0, cap=0.5, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.3, 0.5, 0.5])
    jittered = Backoff(base=1.0, jitter=0.25)
    assert all(0.75 <= jittered.delay(1) <= 1.25 for _ in range(200))


async def test_crash_looping_child_is_restarted_after_growing_delays() -> None:
    """Each restart in a row waits longer; the events say how long."""
    sup = Supervisor(
        [ChildSpec("flaky", f"{T}:crash")],
        max_restarts=3,
        max_seconds=60,
        backoff=Backoff(base=0.05, factor=2.0, jitter=0.0),
    )
    with sup.events() as stream, anyio.fail_after(20):
        with pytest.raises(PrematureTaskDeathError):
            async with sup:
                await sup.wait()
        events = [e async for e in stream]
    restarting = [e for e in events if e.kind == "restarting"]
    assert [e.detail for e in restarting] == ["after 0.050 s", "after 0.100 s", "after 0.200 s"]
    # Each restart starts no earlier than its delay after the exit before it.
    exits = [e.time for e in events if e.kind == "exited"]
    starts = [e.time for e in events if e.kind == "started"][1:]
    for exited, started, delay in zip(exits, starts, (0.05, 0.1, 0.2), strict=False):
        assert started - exited >= delay - 0.005  # wall clock vs the monotonic sleep


async def test_stop_is_an_orderly_shutdown_and_run_returns_what_ended() -> None:
    """stop(): no error, every child stopped, run() returns the results so far."""
    sup = Supervisor(
        [
            ChildSpec("quick", f"{T}:add", args=(1, 2), restart="transient"),
            ChildSpec("forever", f"{T}:sleep_forever"),
        ]
    )
    returned: list[dict[str, object]] = []
    with sup.events() as events, anyio.fail_after(20):
        async with anyio.create_task_group() as group:

            async def run() -> None:
                returned.append(await sup.run())

            group.start_soon(run)
            async for event in events:
                if event.kind == "exited" and event.child == "quick":
                    sup.stop()
                    break
    assert returned == [{"quick": 3}]
    assert [c.state for c in sup.which_children()] == ["exited", "terminated"]
    sup.stop()  # not running: nothing happens


async def test_a_long_wait_for_a_stopping_child_says_what_it_waits_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a second of silence the shutdown names the child and what comes next."""
    sup = Supervisor(
        [ChildSpec("stubborn", f"{T}:ignore_sigterm_and_sleep", shutdown=1.2, ready_timeout=10)]
    )
    with anyio.fail_after(10):
        async with sup:
            pass
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert len(waits) == 1
    assert "child 'stubborn'" in waits[0]
    assert "SIGKILL follows in 0.2 s" in waits[0]


class _Recording(LocalBackend):
    """A local backend that notes its prepares and closes, each start, and each run retired.

    A start is noted as (name, placement, the previous run it was given, the run).
    """

    def __init__(self) -> None:
        super().__init__("forkserver")
        self.calls: list[str] = []
        self.starts: list[tuple[str, Mapping[str, Any] | None, ChildRun | None, ChildRun]] = []
        self.retired: list[ChildRun] = []

    async def prepare(self) -> None:
        self.calls.append("prepare")
        await super().prepare()

    async def aclose(self) -> None:
        self.calls.append("aclose")
        await super().aclose()  # gives back the subreaper flag

    async def start(
        self,
        launch: Launch,
        *,
        ticket: LogTicket | None,
        capture_output: bool,
        placement: Mapping[str, Any] | None = None,
        previous: ChildRun | None = None,
    ) -> ChildRun:
        run = await super().start(launch, ticket=ticket, capture_output=capture_output)
        run.retire = lambda: self.retired.append(run)  # type: ignore[method-assign]
        self.starts.append((launch.name, placement, previous, run))
        return run


async def test_a_backend_can_be_given_and_sees_every_start() -> None:
    """The supervisor starts children only through its backend (the seam for a cluster).

    Nested supervisors run where their parent does, and the backend is
    prepared before the first start and closed after the last exit, once.
    """

    backend = _Recording()
    inner = Supervisor(
        [ChildSpec("two", f"{T}:add", args=(2, 2), restart="transient")],
        name="inner",
        restart="transient",
    )
    with anyio.fail_after(20):
        results = await Supervisor(
            [
                ChildSpec(
                    "one",
                    f"{T}:add",
                    args=(1, 1),
                    restart="transient",
                    placement={"num_cpus": 1},
                ),
                inner,
            ],
            backend=backend,
        ).run()
    assert results["one"] == 2
    assert sorted((name, placement) for name, placement, _, _ in backend.starts) == [
        ("one", {"num_cpus": 1}),
        ("two", None),
    ]
    assert all(previous is None for _, _, previous, _ in backend.starts)  # first runs
    assert backend.calls == ["prepare", "prepare", "aclose", "aclose"]


async def _until(events: Any, kind: str, child: str, restarts: int = 0) -> None:
    async for event in events:
        if event.kind == kind and event.child == child and event.restarts == restarts:
            return


async def test_a_backend_is_handed_the_previous_run_and_told_when_none_follows(
    tmp_path: Path,
) -> None:
    """A restart's start gets the run before it; the last run is retired when the tree ends."""
    backend = _Recording()
    spec = ChildSpec("flaky", f"{T}:crash_once_then_sleep", args=(str(tmp_path / "ran"),))
    with anyio.fail_after(20), sup_events(Supervisor([spec], backend=backend)) as (sup, events):
        async with sup:
            await _until(events, "ready", "flaky", restarts=1)
            assert backend.retired == []  # a permanent child: its run may be followed
    (_, _, first_previous, first), (_, _, second_previous, second) = backend.starts
    assert first_previous is None
    assert second_previous is first
    assert backend.retired == [second]


async def test_a_terminated_child_is_retired_at_once_and_restarts_afresh() -> None:
    """terminate_child() retires the run; restart_child() then starts without a previous run."""
    backend = _Recording()
    spec = ChildSpec("worker", f"{T}:ready_then_sleep", ready_timeout=10)
    with anyio.fail_after(20):
        async with Supervisor([spec], backend=backend, handle_signals=False) as sup:
            await sup.terminate_child("worker")
            ((_, _, _, first),) = backend.starts
            assert backend.retired == [first]
            await sup.restart_child("worker")
            assert backend.starts[-1][2] is None
    assert backend.retired == [first, backend.starts[-1][3]]


async def test_a_temporary_sibling_stopped_by_a_restart_is_retired(tmp_path: Path) -> None:
    """one_for_all stops a temporary sibling for good: its run is retired, not restarted."""
    backend = _Recording()
    specs = [
        ChildSpec("temp", f"{T}:ready_then_sleep", restart="temporary", ready_timeout=10),
        ChildSpec("flaky", f"{T}:crash_once_then_sleep", args=(str(tmp_path / "ran"),)),
    ]
    sup = Supervisor(specs, backend=backend, strategy="one_for_all")
    with anyio.fail_after(20), sup_events(sup) as (sup, events):
        async with sup:
            await _until(events, "ready", "flaky", restarts=1)
            temp_runs = [run for name, _, _, run in backend.starts if name == "temp"]
            assert len(temp_runs) == 1
            assert backend.retired == temp_runs


async def test_leaving_while_a_shutdown_is_under_way_waits_for_it() -> None:
    """A body that leaves as a significant child's end stops the tree waits for every child.

    The stubborn sibling is SIGKILLed after its grace, not left running (and
    its run is retired only then).
    """
    specs = [
        ChildSpec("stubborn", f"{T}:ignore_sigterm_and_sleep", shutdown=0.5, ready_timeout=10),
        ChildSpec("main", f"{T}:add", args=(2, 2), restart="transient", significant=True),
    ]
    with anyio.fail_after(20), sup_events(Supervisor(specs)) as (sup, events):
        async with sup:
            stubborn = sup.which_children()[0].pid
            assert stubborn is not None
            async for event in events:
                if event.kind == "shutting_down":
                    break
            began = time.monotonic()
        took = time.monotonic() - began
    assert took >= 0.4  # it waited for the grace, then SIGKILL
    assert not _running(stubborn)


def _running(pid: int) -> bool:
    """Whether *pid* runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@contextlib.contextmanager
def sup_events(sup: Supervisor) -> Iterator[tuple[Supervisor, Any]]:
    """*sup* without signal handling, and its event stream, subscribed before it starts."""
    sup.configure(handle_signals=False)
    with sup.events() as events:
        yield sup, events


def test_a_subtree_runs_where_its_parent_does_unless_it_says_otherwise() -> None:
    """A nested supervisor inherits the backend only if given neither backend nor start_method."""
    parent_backend = LocalBackend("forkserver")
    inheriting = Supervisor([ChildSpec("a", f"{T}:add", args=(1, 1))], name="inheriting")
    spawning = Supervisor(
        [ChildSpec("b", f"{T}:add", args=(1, 1))], name="spawning", start_method="spawn"
    )
    root = Supervisor([inheriting, spawning], backend=parent_backend)
    root._check_all()
    assert inheriting.backend is parent_backend
    assert spawning.backend is not parent_backend
    assert isinstance(spawning.backend, LocalBackend)
    assert spawning.backend.start_method == "spawn"
