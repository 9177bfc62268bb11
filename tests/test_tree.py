"""Trees as users build them: stop order, nested paths, tree-wide events, ready values."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from gymnasiarch import ChildSpec, Event, FromReady, LocalBackend, Supervisor
from gymnasiarch._backends.base import ChildRun
from gymnasiarch._process.child import Launch
from gymnasiarch._supervisor.supervisor import _SAME_PRESS
from gymnasiarch.exceptions import InitializationFailedError, SignalInterruptError
from gymnasiarch.testing import kill_child, wait_for

T = "targets.tree"
B = "targets.basic"


def journal(name: str, path: Path, cleanup: float = 0.3, **options: object) -> ChildSpec:
    return ChildSpec(
        name,
        f"{T}:journal",
        args=(str(path), name, cleanup),
        ready_timeout=10,
        **options,  # type: ignore[arg-type]
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# -- stop order -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "victim", "stopped"),
    [("one_for_all", "bee", ["cat", "ant"]), ("rest_for_one", "ant", ["cat", "bee"])],
)
async def test_a_strategy_stops_siblings_one_at_a_time_in_reverse_start_order(
    tmp_path: Path, strategy: str, victim: str, stopped: list[str]
) -> None:
    """Each sibling is asked to stop only once the one started after it has exited."""
    log = tmp_path / "journal"
    sup = Supervisor([journal(n, log) for n in ("ant", "bee", "cat")], strategy=strategy)  # type: ignore[arg-type]
    with anyio.fail_after(30):
        async with sup:
            with sup.events() as events:
                await kill_child(sup, victim)
                await wait_for(sup, "ready", child="cat", events=events)
            sup.stop()
    steps = [line for name in stopped for line in (f"term {name}", f"exit {name}")]
    restarted = ["start ant", "start bee", "start cat"]
    assert lines(log)[3 : 3 + len(steps) + 3] == steps + restarted


async def test_the_strategy_stop_is_an_info_event_naming_the_cause(tmp_path: Path) -> None:
    """Siblings stopped by one_for_all get a 'stopping' event and an 'exited' asked for."""
    log = tmp_path / "journal"
    sup = Supervisor([journal(n, log, shutdown=5) for n in ("ant", "bee")], strategy="one_for_all")
    with anyio.fail_after(30):
        async with sup:
            with sup.events() as events:
                await kill_child(sup, "bee")
                stopping = await wait_for(sup, "stopping", child="ant", events=events)
                exited = await wait_for(sup, "exited", child="ant", events=events)
            sup.stop()
    assert stopping.detail == "one_for_all: 'bee' exited"
    assert exited.requested


async def test_the_final_shutdown_stops_one_at_a_time_in_reverse_order(tmp_path: Path) -> None:
    """stop(): cat, then bee, then ant, each after the one before has exited."""
    log = tmp_path / "journal"
    with anyio.fail_after(30):
        async with Supervisor([journal(n, log) for n in ("ant", "bee", "cat")]) as sup:
            sup.stop()
    assert lines(log)[3:] == [
        "term cat",
        "exit cat",
        "term bee",
        "exit bee",
        "term ant",
        "exit ant",
    ]


async def test_a_parallel_tree_stops_its_children_at_once(tmp_path: Path) -> None:
    """start_order='parallel' declares no order: every SIGTERM goes out before any exit."""
    log = tmp_path / "journal"
    with anyio.fail_after(30):
        async with Supervisor(
            [journal(n, log, cleanup=2.0) for n in ("ant", "bee", "cat")], start_order="parallel"
        ) as sup:
            sup.stop()
    stops = lines(log)[3:]
    assert sorted(stops[:3]) == ["term ant", "term bee", "term cat"]
    assert sorted(stops[3:]) == ["exit ant", "exit bee", "exit cat"]


# -- a stop during a start --------------------------------------------------------------


def group_and_env(**group_options: object) -> tuple[Supervisor, Supervisor]:
    inner = Supervisor(
        [ChildSpec("a", f"{B}:sleep_forever"), ChildSpec("b", f"{B}:sleep_forever")],
        name="grp",
        **group_options,  # type: ignore[arg-type]
    )
    return inner, Supervisor([ChildSpec("env", f"{B}:sleep_forever"), inner])


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.005, 0.02, 0.05])
async def test_a_stop_while_a_nested_group_starts_is_not_lost(delay: float) -> None:
    """stop() from another task while the tree, and its nested group, are still starting."""
    _, sup = group_and_env()
    with anyio.fail_after(10):  # it hung for ever
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            await anyio.sleep(delay)
            sup.stop()
    assert all(info.pid is None for info in sup.walk())


class _StopsAsItLaunches(LocalBackend):
    """Stops the tree right after child "a" is launched, before its watcher starts.

    The narrowest moment of a stop during a start: the group's scope is
    cancelled while it hands the new run to its watcher (the shielded pause
    lets the stop travel down the tree meanwhile).
    """

    def __init__(self) -> None:
        super().__init__("forkserver")
        self.root: Supervisor | None = None

    async def start(self, launch: Launch, **options: Any) -> ChildRun:
        run = await super().start(launch, **options)
        if launch.name == "a" and self.root is not None:
            self.root.stop()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.2)
        return run


async def test_a_stop_as_a_nested_child_is_launched_still_stops_it() -> None:
    """The run just launched is watched, so the stop that cancelled its start can end it."""
    backend = _StopsAsItLaunches()
    inner = Supervisor([ChildSpec("a", f"{B}:sleep_forever")], name="grp")
    sup = Supervisor([ChildSpec("env", f"{B}:sleep_forever"), inner], backend=backend)
    backend.root = sup
    started = time.monotonic()
    with anyio.fail_after(10):  # it hung for ever: nobody heard the child's exit
        await sup.run()
    # At once, not after the group's grace (8 s), which is all a root could do
    # with a child whose exit nobody hears.
    assert time.monotonic() - started < 4
    assert all(info.pid is None for info in sup.walk())


@pytest.mark.parametrize("when", ["started", "restarting"])
async def test_a_stop_right_as_a_nested_group_restarts_is_not_lost(when: str) -> None:
    """The group gives up (max_restarts=0) and is restarted: stop() at that very moment."""
    _, sup = group_and_env(max_restarts=0)
    with sup.events() as events, anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            await wait_for(sup, "ready", child="grp", events=events)
            await kill_child(sup, "grp/a")
            async for event in events:
                if event.kind == when and event.path == "grp" and event.restarts == 1:
                    sup.stop()
                    break
    assert all(info.pid is None for info in sup.walk())


async def test_a_nested_group_has_a_finite_default_grace_and_escalates() -> None:
    """A group's default grace is what its children need; past its grace it is killed."""
    stubborn = ChildSpec("stubborn", f"{B}:ignore_sigterm_and_sleep", ready_timeout=10)
    inner = Supervisor([stubborn], name="grp", kill_timeout=0.5)
    assert inner._grace() == pytest.approx(5.0 + 0.5 + 1.0)  # ChildSpec's shutdown is 5 s
    # Granted less than its child needs: the root kills the group's child at 0.3 s.
    hurried = Supervisor([stubborn], name="grp", kill_timeout=0.5, shutdown=0.3)
    sup = Supervisor([hurried])
    assert sup.children == [hurried]
    started = time.monotonic()
    with anyio.fail_after(10):
        async with sup:  # ready: the group starts once its child has said so
            sup.stop()
    assert time.monotonic() - started < 3  # not the child's 5 s grace
    assert [i.state for i in sup.walk()] == ["terminated", "terminated"]


def test_a_parallel_group_is_granted_its_largest_grace() -> None:
    specs = [ChildSpec(n, f"{B}:sleep_forever", shutdown=g) for n, g in (("a", 1), ("b", 3))]
    assert Supervisor(specs, name="g", kill_timeout=2)._grace() == 1 + 2 + 3 + 2 + 1
    parallel = Supervisor(specs, name="g", kill_timeout=2, start_order="parallel")
    assert parallel._grace() == 3 + 2 + 1
    assert Supervisor(specs, name="g", shutdown=math.inf)._grace() == math.inf
    forever = [ChildSpec("a", f"{B}:sleep_forever", shutdown=None)]
    assert Supervisor(forever, name="g")._grace() is None


# -- nested trees: paths, walk, events ----------------------------------------------------


def training_ground(log: Path) -> Supervisor:
    agents = Supervisor(
        [journal("agent-1", log), journal("agent-2", log)],
        name="agents",
        strategy="one_for_all",
        max_restarts=0,
    )
    return Supervisor([journal("env", log), agents, journal("learner", log)])


async def test_walk_lists_every_child_with_its_path(tmp_path: Path) -> None:
    """walk(): nested children included, a group's row before its children's."""
    sup = training_ground(tmp_path / "journal")
    assert [i.path for i in sup.walk()] == [
        "env",
        "agents",
        "agents/agent-1",
        "agents/agent-2",
        "learner",
    ]
    with anyio.fail_after(30):
        async with sup:
            rows = {i.path: i for i in sup.walk()}
            sup.stop()
    assert rows["agents"].nested
    assert rows["agents"].pid is None
    assert rows["agents/agent-1"].state == "running"
    assert rows["agents/agent-1"].pid is not None
    assert rows["agents/agent-1"].name == "agent-1"


async def test_child_info_is_the_walk_row_of_one_child(tmp_path: Path) -> None:
    """child_info(path): what walk() says of that child, without walking the tree."""
    sup = training_ground(tmp_path / "journal")
    with anyio.fail_after(30):
        async with sup:
            rows = {i.path: i for i in sup.walk()}
            found = {path: sup.child_info(path) for path in rows}
            inner = sup.children[1]
            assert isinstance(inner, Supervisor)
            from_inside = inner.child_info("agent-2")  # paths are relative to the supervisor
            sup.stop()
    for path, row in rows.items():
        assert (found[path].path, found[path].pid, found[path].state) == (
            row.path,
            row.pid,
            row.state,
        )
        assert found[path].on_this_machine  # a local process, or a subtree
    assert found["agents/agent-1"].pid is not None
    assert (from_inside.path, from_inside.pid) == ("agent-2", rows["agents/agent-2"].pid)
    with pytest.raises(KeyError, match="no child named 'nobody'"):
        sup.child_info("agents/nobody")


async def test_terminate_restart_and_start_reach_nested_children_by_path(tmp_path: Path) -> None:
    """terminate_child, restart_child and start_child(under=) take group/child paths."""
    log = tmp_path / "journal"
    sup = training_ground(log)
    with anyio.fail_after(30):
        async with sup:
            old = {i.path: i.pid for i in sup.walk()}
            await sup.restart_child("agents/agent-2")
            await sup.terminate_child("agents/agent-1")
            await sup.start_child(journal("agent-3", log), under="agents")
            rows = {i.path: i for i in sup.walk()}
            with pytest.raises(KeyError, match="no child named 'nobody'"):
                await sup.terminate_child("agents/nobody")
            with pytest.raises(KeyError, match="'env' in 'env/x' is a child, not a nested"):
                await sup.terminate_child("env/x")  # the path asked for, whole
            with pytest.raises(KeyError) as under_a_child:
                await sup.start_child(journal("agent-4", log), under="env")
            assert under_a_child.value.args[0] == (
                "'env' in 'env' is a child, not a nested supervisor"
            )
            sup.stop()
    assert rows["agents/agent-1"].state == "terminated"
    assert rows["agents/agent-2"].pid not in (None, old["agents/agent-2"])
    assert rows["agents/agent-2"].restarts == 1
    assert rows["agents/agent-3"].state == "running"
    assert rows["env"].pid == old["env"]  # nothing else was touched


async def test_the_roots_events_carry_the_whole_tree_across_group_restarts(
    tmp_path: Path,
) -> None:
    """One subscription on the root, one on the group: both see every run of the group."""
    log = tmp_path / "journal"
    sup = training_ground(log)
    group = sup.children[1]
    assert isinstance(group, Supervisor)
    root_events, group_events = sup.events(), group.events()
    with root_events, group_events, anyio.fail_after(30):
        async with sup:
            await kill_child(sup, "agents/agent-1")  # max_restarts=0: the group gives up
            gave_up = await wait_for(sup, "gave_up", events=root_events)
            ready = await wait_for(sup, "ready", child="agents/agent-2", events=root_events)
            again = await wait_for(sup, "ready", child="agents/agent-2", events=group_events)
            again = await wait_for(sup, "ready", child="agents/agent-2", events=group_events)
            rows = {i.path: i for i in sup.walk()}
            sup.stop()
    assert gave_up.path == "agents/agent-1"
    assert "supervisor 'agents' gave up" in gave_up.detail
    assert ready.child == "agent-2"
    assert again.path == "agents/agent-2"
    assert rows["agents"].restarts == 1
    assert rows["agents/agent-1"].crashes == 1  # counted across the group's restart
    assert rows["agents/agent-1"].restarts == 0  # OTP's count starts anew with the group


async def test_replay_starts_with_the_state_of_each_child(tmp_path: Path) -> None:
    sup = training_ground(tmp_path / "journal")
    with anyio.fail_after(30):
        async with sup:
            with sup.events(replay=True) as events:
                first = [await events.receive() for _ in range(5)]
            sup.stop()
    assert [(e.kind, e.path) for e in first] == [
        ("ready", "env"),
        ("ready", "agents"),
        ("ready", "agents/agent-1"),
        ("ready", "agents/agent-2"),
        ("ready", "learner"),
    ]


# -- ready values ----------------------------------------------------------------------


async def test_an_agent_is_given_the_port_its_environment_bound() -> None:
    """The env binds port 0 and announces it; FromReady passes it to the agent."""
    sup = Supervisor(
        [
            ChildSpec("env", f"{T}:serve_on_port_zero", ready_timeout=10),
            ChildSpec(
                "agent",
                f"{T}:connect_to",
                kwargs={"port": FromReady("env", key="port")},
                restart="transient",
                significant=True,  # its end ends the tree
            ),
        ]
    )
    with sup.events() as events, anyio.fail_after(30):
        results = await sup.run()
        ready = await wait_for(sup, "ready", child="env", events=events)
    env = next(i for i in sup.walk() if i.path == "env")
    assert ready.value == env.ready_value
    assert isinstance(env.ready_value, dict)
    assert results["agent"] == env.ready_value["port"]


async def test_a_ready_value_from_inside_a_nested_group() -> None:
    """FromReady("world/env") waits for the group's child: a group is ready once they are."""
    world = Supervisor(
        [ChildSpec("env", f"{T}:serve_on_port_zero", ready_timeout=10)], name="world"
    )
    sup = Supervisor(
        [
            world,
            ChildSpec(
                "agent",
                f"{T}:echo",
                args=(FromReady("world/env"),),
                restart="transient",
                significant=True,
            ),
        ]
    )
    with anyio.fail_after(30):
        results = await sup.run()
    assert results["agent"]["port"] > 0


@pytest.mark.parametrize(
    ("children", "options", "message"),
    [
        (
            [
                ChildSpec("a", f"{T}:echo", args=(FromReady("b"),)),
                ChildSpec("b", f"{T}:serve_on_port_zero", ready_timeout=1),
            ],
            {},
            "'b' starts after 'a'",
        ),
        (
            [
                ChildSpec("b", f"{T}:serve_on_port_zero"),
                ChildSpec("a", f"{T}:echo", args=(FromReady("b"),)),
            ],
            {},
            "needs a ready_timeout",
        ),
        (
            [
                ChildSpec("b", f"{T}:serve_on_port_zero", ready_timeout=1),
                ChildSpec("a", f"{T}:echo", kwargs={"x": [FromReady("b")]}),
            ],
            {"start_order": "parallel"},
            "needs start_order='sequential'",
        ),
    ],
)
def test_a_bad_from_ready_fails_where_the_tree_is_written(
    children: list[ChildSpec], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Supervisor(children, **options)  # type: ignore[arg-type]


async def test_a_ready_value_never_announced_is_a_start_failure() -> None:
    """A key that the announced value does not have fails the dependent child's start, clearly."""
    sup = Supervisor(
        [
            ChildSpec("env", f"{B}:ready_then_sleep", ready_timeout=10),
            ChildSpec("agent", f"{T}:echo", args=(FromReady("env", key="port"),)),
        ]
    )
    no_key = "the ready value of 'env' has no key 'port'"
    with pytest.raises(InitializationFailedError, match=no_key), anyio.fail_after(30):
        async with sup:
            pass


# -- the caller's loop ------------------------------------------------------------------


async def test_importing_targets_does_not_stall_the_callers_loop() -> None:
    """A target module that takes 1 s to import: a 10 ms ticker keeps ticking meanwhile."""
    sys.modules.pop("targets.slow_import", None)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            await anyio.sleep(0.05)
            sup = Supervisor([ChildSpec("slow", "targets.slow_import:hello", restart="transient")])
            assert await sup.run() == {"slow": "hello"}
            group.cancel_scope.cancel()
    assert max(gaps) < 0.5  # the import alone takes 1 s


async def test_records_and_output_of_nested_children_carry_their_paths() -> None:
    """Two children named 'talk' in two groups: their records and lines tell them apart."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    root.addHandler(Keep())
    root.setLevel(logging.INFO)
    groups = [
        Supervisor(
            [ChildSpec("talk", f"{T}:talk", restart="transient")], name=name, restart="transient"
        )
        for name in ("g1", "g2")
    ]
    with anyio.fail_after(30):
        await Supervisor(groups).run()
    said = {(r.child, r.getMessage()) for r in records if hasattr(r, "child")}  # type: ignore[attr-defined]
    assert said >= {
        ("g1/talk", "said"),
        ("g1/talk", "logged"),
        ("g2/talk", "said"),
        ("g2/talk", "logged"),
    }


async def test_a_stop_while_targets_are_imported_starts_nothing() -> None:
    """stop() during the 1 s import of a target: the tree ends without starting it."""
    sys.modules.pop("targets.slow_import", None)
    sup = Supervisor([ChildSpec("slow", "targets.slow_import:hello")])
    with sup.events() as events, anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            await anyio.sleep(0.2)  # well inside the import
            sup.stop()
        kinds = [event.kind async for event in events]
    assert "started" not in kinds
    assert kinds[-1] == "stopped"


async def test_a_source_nobody_in_the_tree_has_fails_before_anything_starts() -> None:
    """Looked for among earlier siblings, then in enclosing supervisors: nobody has it."""
    group = Supervisor(
        [ChildSpec("agent", f"{T}:echo", args=(FromReady("nobody"),))], name="agents"
    )
    sup = Supervisor([ChildSpec("env", f"{T}:serve_on_port_zero", ready_timeout=10), group])
    with pytest.raises(ValueError, match="no child named 'nobody' starts before it"):
        async with sup:
            pass
    assert all(info.pid is None for info in sup.walk())


async def test_an_agent_in_a_nested_group_finds_the_environment_of_the_root() -> None:
    """FromReady("env") from inside 'agents': the root's env, started before the group."""
    group = Supervisor(
        [
            ChildSpec(
                "agent",
                f"{T}:connect_to",
                args=(FromReady("env", key="port"),),
                restart="transient",
            )
        ],
        name="agents",
        restart="transient",
        significant=True,
    )
    sup = Supervisor([ChildSpec("env", f"{T}:serve_on_port_zero", ready_timeout=10), group])
    with anyio.fail_after(30):
        results = await sup.run()
    assert results["agents"]["agent"] > 0


async def test_a_group_started_before_its_source_is_refused() -> None:
    """The env starts after the group that needs its value: refused before any start."""
    group = Supervisor([ChildSpec("agent", f"{T}:echo", args=(FromReady("env"),))], name="g")
    sup = Supervisor([group, ChildSpec("env", f"{T}:serve_on_port_zero", ready_timeout=10)])
    with pytest.raises(ValueError, match="no child named 'env' starts before it"):
        async with sup:
            pass


@pytest.mark.parametrize(("every", "presses"), [(_SAME_PRESS + 0.1, 2), (0.3, 3)])
async def test_a_second_ctrl_c_kills_everything_left_of_an_ordered_shutdown(
    every: float, presses: int
) -> None:
    """Three children that ignore SIGTERM, 60 s grace each, stopped one at a time.

    The first SIGINT starts the ordered shutdown (it would take 3 minutes); a
    later press kills all that is left at once. Presses closer together than
    half a second count from the first: pressing again and again escalates.
    """
    specs = [
        ChildSpec(n, f"{B}:ignore_sigterm_and_sleep", ready_timeout=10, shutdown=60)
        for n in ("ant", "bee", "cat")
    ]
    sup = Supervisor(specs)

    async def press_twice(events: MemoryObjectReceiveStream[Event]) -> None:
        # Outside the supervisor's body, which the first SIGINT cancels.
        with events:
            await wait_for(sup, "ready", child="cat", events=events)
            os.kill(os.getpid(), signal.SIGINT)
            await wait_for(sup, "stopping", child="cat", events=events)
            for _ in range(presses - 1):
                await anyio.sleep(every)
                os.kill(os.getpid(), signal.SIGINT)

    started = time.monotonic()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(press_twice, sup.events())
            with pytest.raises(SignalInterruptError):
                await sup.run()
    assert time.monotonic() - started < 15
    assert all(info.state == "terminated" for info in sup.walk())


async def test_a_group_added_at_run_time_is_checked_before_it_starts() -> None:
    """start_child(group): its bad target fails as a root's would, and nothing is added."""
    from gymnasiarch.dynaloader import ErrorDuringImport

    sup = Supervisor([ChildSpec("env", f"{B}:sleep_forever")])
    late = Supervisor([ChildSpec("x", "targets.no_such_module:run")], name="late")
    with anyio.fail_after(30):
        async with sup:
            with pytest.raises(ErrorDuringImport, match="no_such_module"):
                await sup.start_child(late)
            names = [info.path for info in sup.walk()]
            sup.stop()
    assert names == ["env"]


@pytest.mark.parametrize("where", ["root", "nested"])
async def test_a_terminated_child_stays_stopped_and_the_tree_runs_on(where: str) -> None:
    """terminate_child() of the only child: the tree (or its nested group) does not end.

    Before, the group ended with its last child, and its parent, a
    permanent group's, restarted it: the stopped child came back.
    """
    leaf = ChildSpec("inner", f"{B}:ready_then_sleep")
    tree = [leaf] if where == "root" else [Supervisor([leaf], name="group", restart="permanent")]
    path = "inner" if where == "root" else "group/inner"
    kinds: list[tuple[str, str | None]] = []
    sup = Supervisor(tree)

    async def follow(events: MemoryObjectReceiveStream[Event]) -> None:
        async for event in events:  # until the supervisor has stopped
            kinds.append((event.kind, event.path))

    with anyio.fail_after(30), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(follow, events)
            async with sup:
                await sup.terminate_child(path)
                assert sup.child_info(path).state == "terminated"
                await sup.restart_child(path)  # started again where it was
                await sup.wait_ready(path)
                sup.stop()
    assert ("exited", "group") not in kinds[: kinds.index(("shutting_down", None))]
    assert kinds.count(("started", path)) == 2  # its start, and restart_child(): no group restart
