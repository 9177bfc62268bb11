"""Paths users take that the first round's tests did not: found by trying it as a newcomer.

A cancel scope around the supervisor, a sibling's exit during a child's
backoff, a child that misses its ready_timeout at its first start and at a
restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from gymnasiarch import Backoff, ChildSpec, FromReady, Supervisor
from gymnasiarch.exceptions import (
    ChildHungError,
    InitializationFailedError,
    PrematureTaskDeathError,
)
from gymnasiarch.logserver import LogServer
from gymnasiarch.ready import Path as ReadyPath
from gymnasiarch.testing import freeze_child, stubborn


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def sim_logger() -> Iterator[_Collect]:
    """The application's own logging: root left at WARNING, the ``sim`` subsystem at INFO."""
    handler = _Collect()
    sim = logging.getLogger("sim")
    sim.setLevel(logging.INFO)
    sim.addHandler(handler)
    try:
        yield handler
    finally:
        sim.removeHandler(handler)
        sim.setLevel(logging.NOTSET)


async def _cancel_once_ready() -> None:
    sup = Supervisor([ChildSpec("env", "targets.user_paths:log_until_stopped", ready_timeout=20)])
    with anyio.move_on_after(30) as outer:  # the application's own deadline, say
        with sup.events() as events:
            async with sup:
                async for event in events:
                    if event.kind == "ready":
                        outer.cancel()  # as if its deadline had come now
                        await anyio.sleep_forever()
    assert outer.cancelled_caught


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancel_scope_around_the_supervisor_loses_no_record(
    backend: str, sim_logger: _Collect
) -> None:
    """The children are stopped in order, and what their finally blocks log arrives, as records.

    Before, the cancellation cut the log server off at once: the cleanup
    records came as stderr lines ("lost the log server"), or not at all.
    """
    anyio.run(_cancel_once_ready, backend=backend)
    assert sim_logger.messages == ["env working", "cleanup begins", "cleanup done"]


async def _events_until_both_restarted(sup: Supervisor) -> list[tuple[str, str | None]]:
    """Run *sup* until its children ``a`` and ``b`` are both ready a second time; what happened."""
    seen: list[tuple[str, str | None]] = []
    with anyio.fail_after(30), sup.events() as events:
        async with sup:
            async for event in events:
                seen.append((event.kind, event.child))
                if seen.count(("ready", "a")) == 2 and seen.count(("ready", "b")) == 2:
                    break  # both restarted
    return seen


async def test_one_childs_backoff_does_not_hold_up_a_siblings_restart(tmp_path: Path) -> None:
    """Each child's backoff is its own: a sibling's exit is judged while one waits.

    Before, ``a``'s 2 s backoff held the supervisor's lock: ``b``'s crash
    0.3 s later was judged (and its own backoff begun) only once ``a`` had
    been started again, so with N siblings the delays added up.
    """
    sup = Supervisor(
        [
            ChildSpec("a", "targets.user_paths:crash_once_after", args=(str(tmp_path / "a"), 0)),
            ChildSpec("b", "targets.user_paths:crash_once_after", args=(str(tmp_path / "b"), 0.3)),
        ],
        backoff=Backoff(base=2, factor=1, cap=2, jitter=0),
    )
    seen = await _events_until_both_restarted(sup)
    b_restarting = seen.index(("restarting", "b"))
    a_started_again = [i for i, e in enumerate(seen) if e == ("started", "a")][1]
    assert b_restarting < a_started_again, seen


async def test_terminate_child_during_a_backoff_calls_the_restart_off(tmp_path: Path) -> None:
    """terminate_child() acts at once, and the restart that was due does not come.

    Before, it waited for the backoff to end, and the child was started
    again (and then stopped) first.
    """
    sup = Supervisor(
        [ChildSpec("a", "targets.user_paths:crash_once_after", args=(str(tmp_path / "a"), 0))],
        backoff=Backoff(base=1, factor=1, cap=1, jitter=0),
    )
    seen: list[str] = []
    terminated = anyio.Event()

    async def follow() -> None:
        with sup.events() as events:
            async for event in events:  # until the supervisor has stopped
                seen.append(event.kind)
                if event.kind == "restarting":
                    await sup.terminate_child("a")
                    seen.append("terminated")
                    terminated.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            await anyio.lowlevel.checkpoint()  # subscribed before the start
            async with sup:
                # The tree runs on for a terminated child; the restart that
                # was due (after 1 s of backoff) would have come by now.
                await terminated.wait()
                await anyio.sleep(1.5)
                assert sup.child_info("a").state == "terminated"
                sup.stop()
    assert seen.count("started") == 1, seen
    assert seen.index("terminated") < seen.index("stopped"), seen


async def test_a_child_that_misses_its_ready_timeout_is_stopped_in_order(tmp_path: Path) -> None:
    """SIGTERM first, as for any stop: its finally block runs; the error has its stderr tail.

    Before, it was SIGKILLed at once and the error carried no output.
    """
    marker = tmp_path / "cleaned"
    spec = ChildSpec(
        "env",
        "targets.user_paths:never_ready_but_cleans_up",
        args=(str(marker),),
        ready_timeout=0.5,
    )
    with anyio.fail_after(30), pytest.raises(InitializationFailedError) as info:
        async with Supervisor([spec]):
            pass
    assert "ready_timeout of 0.5 s" in str(info.value)
    assert marker.read_text() == "cleaned up"
    assert info.value.output is not None
    assert "still loading the scenario" in info.value.output


async def test_a_restart_that_misses_its_ready_timeout_says_so(tmp_path: Path) -> None:
    """The give-up names the missed ready_timeout, not just "killed by SIGKILL"."""
    spec = ChildSpec(
        "env",
        "targets.user_paths:ready_once_then_never",
        args=(str(tmp_path / "ran"),),
        ready_timeout=0.5,
    )
    with anyio.fail_after(30), pytest.raises(PrematureTaskDeathError) as info:
        await Supervisor([spec], max_restarts=1).run()
    assert "did not call child_context().ready() within its ready_timeout of 0.5 s" in str(
        info.value
    )
    assert isinstance(info.value.__cause__, InitializationFailedError)


async def test_a_program_not_ready_in_time_brings_its_stderr_tail(tmp_path: Path) -> None:
    """As the docs promise: the error has the program's last stderr lines."""
    spec = ChildSpec(
        "server",
        command=["sh", "-c", "echo 'still loading' >&2; exec sleep 1000"],
        ready=ReadyPath(str(tmp_path / "never")),
        ready_timeout=0.5,
    )
    with anyio.fail_after(30), pytest.raises(InitializationFailedError) as info:
        async with Supervisor([spec]):
            pass
    assert info.value.output is not None
    assert "still loading" in info.value.output


def test_ctrl_c_while_the_cli_imports_the_tree_files_targets(tmp_path: Path) -> None:
    """Exit 130 and one line, as after a Ctrl-C later on: no KeyboardInterrupt traceback."""
    tree = tmp_path / "tree.toml"
    tree.write_text(
        '[[child]]\nname = "a"\ntarget = "targets.signals_its_app_on_import:never_started"\n'
    )
    control = tmp_path / "control"
    control.mkdir(mode=0o700)
    command = (
        "exec env GYMNASIARCH_TEST_APP_PID=$$ GYMNASIARCH_TEST_SIGNAL=SIGINT "
        f'"{sys.executable}" -m gymnasiarch run --control "{control / "sock"}" "{tree}"'
    )
    done = subprocess.run(
        ["sh", "-c", command],
        cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "gymnasiarch: interrupted\n"


async def test_a_child_frozen_as_soon_as_it_is_ready_is_found_hung() -> None:
    """Its watchdog is armed before the supervisor hears ready(), not just after.

    Before, a child stopped between the two (the supervisor often ran
    first on a busy machine) had no watchdog at all, and stayed frozen.
    """
    spec = ChildSpec(
        "env",
        "targets.user_paths:ready_then_beat_until_frozen",
        ready_timeout=10,
        watchdog=0.3,
        restart="temporary",
    )
    sup = Supervisor([spec])
    with anyio.fail_after(30), sup.events() as events:
        async with sup:
            async for event in events:
                if event.kind == "ready":
                    freeze_child(sup, "env")  # as soon as the supervisor hears it
                if event.kind == "exited":
                    break
            await sup.wait()
        last = sup.child_info("env").last_exit
    assert last is not None
    assert isinstance(last.error, ChildHungError), last


@pytest.mark.parametrize("kind", ["python", "program"])
async def test_stubborn_ignores_a_stop_right_after_its_start(kind: str) -> None:
    """Only the SIGKILL after the grace ends it, also when stopped at once (and for programs).

    Before, SIGTERM was ignored only once the target ran: a stop right
    after the start ended it by SIGTERM about every other time, and a
    program could not be made stubborn at all.
    """
    spec = (
        ChildSpec("s", "targets.basic:sleep_forever", shutdown=0.3)
        if kind == "python"
        else ChildSpec("s", command=["sleep", "1000"], shutdown=0.3)
    )
    for _ in range(3):
        sup = Supervisor([stubborn(spec)])
        with anyio.fail_after(30):
            async with sup:
                await sup.terminate_child("s")
                last = sup.child_info("s").last_exit
        assert last is not None
        assert last.describe() == "killed by SIGKILL"


def test_structlog_reaches_the_log_server_from_spawn_wrapper_in_the_callers_process(
    sim_logger: _Collect,
) -> None:
    """A target that imports structlog lazily, in a process of the caller's own (the seed's use).

    Before, structlog was routed only where it was loaded before the
    target ran: its events were printed on the process's own stdout.
    """

    async def serve() -> None:
        async with LogServer.unix() as server:
            ticket = server.admit("worker")
            process = multiprocessing.get_context("spawn").Process(
                target=_spawn_wrapper_process, args=(ticket.client_config(logging.INFO),)
            )
            process.start()
            try:
                with anyio.fail_after(30):
                    await ticket.finished.wait()
                    await anyio.wait_readable(process.sentinel)
            finally:
                process.join()
                process.close()

    anyio.run(serve)
    assert sim_logger.messages == ["step", "step", "step"]


def _spawn_wrapper_process(config: dict[str, object]) -> None:
    from targets.user_paths import spawn_wrapper_in_a_process_of_its_own

    spawn_wrapper_in_a_process_of_its_own(config)


async def test_a_nested_groups_replayed_events_carry_paths_from_the_root() -> None:
    """As its live events do: a subscriber that filters by path sees both."""
    agents = Supervisor(
        [ChildSpec("a1", "targets.basic:sleep_forever")], name="agents", restart="permanent"
    )
    sup = Supervisor([agents])
    with anyio.fail_after(30):
        async with sup:
            with agents.events(replay=True) as events:
                replayed = await events.receive()
                await sup.restart_child("agents/a1")
                live = await events.receive()
    assert (replayed.path, live.path) == ("agents/a1", "agents/a1")
    assert replayed.detail == "replayed: running"


async def test_rest_for_one_restarts_a_waiting_sibling_after_the_one_it_depends_on(
    tmp_path: Path,
) -> None:
    """A sibling waiting out its backoff when the one before it crashes is restarted after it.

    While ``b`` waits for its restart, ``a`` (which ``b`` depends on) crashes:
    ``a``'s restart takes ``b`` in, so ``b`` comes back after ``a``, not
    before it against a dead ``a`` (it did, once backoffs stopped holding
    the supervisor's lock, until a waiting child counted as running).
    """
    sup = Supervisor(
        [
            ChildSpec("a", "targets.user_paths:crash_once_after", args=(str(tmp_path / "a"), 0.3)),
            ChildSpec("b", "targets.user_paths:crash_once_after", args=(str(tmp_path / "b"), 0)),
        ],
        strategy="rest_for_one",
        backoff=Backoff(base=1, factor=1, cap=1, jitter=0),
    )
    seen = await _events_until_both_restarted(sup)
    starts = [child for kind, child in seen if kind == "started"]
    assert starts == ["a", "b", "a", "b"], seen
    assert sup.child_info("b").restarts == 1  # one restart, counted once


async def test_a_child_stuck_before_ready_with_no_shutdown_limit_is_still_stopped() -> None:
    """``shutdown=None`` waits for ever for an ordinary stop, not for a child that never got ready.

    It gets a bounded grace (5 s), then SIGKILL: the start fails instead of hanging.
    """
    # Its target ignores SIGTERM from its first line, well before its ready_timeout.
    spec = ChildSpec(
        "env", "targets.user_paths:ignore_sigterm_never_ready", ready_timeout=1, shutdown=None
    )
    with anyio.fail_after(30), pytest.raises(InitializationFailedError, match="ready_timeout"):
        async with Supervisor([spec]):
            pass


# -- public calls at awkward moments (a newcomer's trial, session 11) -------------------------

U = "targets.user_paths"
SLEEPER = ChildSpec("a", "targets.basic:ready_then_sleep", ready_timeout=10)


@pytest.mark.parametrize(
    "spec",
    [
        ChildSpec("n", f"{U}:raise_before_ready", ready_timeout=5),
        ChildSpec("n", command=["sh", "-c", "exit 3"], ready=ReadyPath("/nonexistent/x")),
        ChildSpec("n", command=["no-such-program-gymnasiarch"]),
    ],
    ids=["raises", "program-ends-first", "no-program"],
)
async def test_a_start_child_that_fails_leaves_the_tree_running(spec: ChildSpec) -> None:
    """start_child() raises InitializationFailedError, and that is all.

    Before, the child's exit was then judged as well, for a child no
    longer in the tree: the supervisor died of an internal ValueError
    (or gave up, for a program that could not be exec'd).
    """
    with anyio.fail_after(30):
        async with Supervisor([SLEEPER]) as sup:
            for _ in range(3):  # and again: nothing of the failed ones is left
                with pytest.raises(InitializationFailedError):
                    await sup.start_child(spec)
            assert [row.path for row in sup.walk()] == ["a"]
            assert sup.child_info("a").state == "running"
            sup.stop()


async def test_a_restart_child_that_meets_a_stop_starts_nothing(tmp_path: Path) -> None:
    """stop() while restart_child() stops its child: no new run is started, the call says so.

    (From a task of the application's own, not the body of ``async with``,
    which stop() cancels.)
    """
    # Its cleanup takes 0.3 s: the stop surely comes while restart_child() waits for it.
    journal = ChildSpec("a", "targets.tree:journal", args=(str(tmp_path / "j"), "a"), shutdown=5)
    sup = Supervisor([journal])
    kinds: list[str] = []
    with anyio.fail_after(30), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if event.kind == "started":
                    break

            async def restart() -> None:
                with pytest.raises(RuntimeError, match="is shutting down"):
                    await sup.restart_child("a")

            group.start_soon(restart)
            async for event in events:
                kinds.append(event.kind)
                if event.kind == "stopping":  # restart_child() stops it now
                    sup.stop()
            # the stream ends with the supervisor
    assert "started" not in kinds, kinds
    assert "restarting" not in kinds, kinds


async def test_terminate_child_of_a_child_still_starting_acts_at_once() -> None:
    """A child waits 60 s for its readiness: terminate_child() ends that wait, no error follows."""
    slow = ChildSpec("slow", f"{U}:slow_to_be_ready", args=(60,), ready_timeout=120)
    with anyio.fail_after(20):
        async with Supervisor([SLEEPER]) as sup:
            with sup.events() as events:
                async with anyio.create_task_group() as group:
                    group.start_soon(sup.start_child, slow)
                    async for event in events:
                        if (event.kind, event.child) == ("started", "slow"):
                            break
                    await sup.terminate_child("slow")
            assert sup.child_info("slow").state == "terminated"
            assert sup.child_info("a").state == "running"
            sup.stop()


async def test_calls_during_a_shutdown_say_it_is_shutting_down() -> None:
    stubborn_child = stubborn(ChildSpec("s", "targets.basic:ready_then_sleep", shutdown=1))
    sup = Supervisor([SLEEPER, stubborn_child])
    with anyio.fail_after(30), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("started", "s"):
                    break
            sup.stop()
            async for event in events:
                if event.kind == "stopping":
                    break
            for call in (sup.restart_child, sup.terminate_child):
                with pytest.raises(RuntimeError, match="supervisor 'supervisor' is shutting down"):
                    await call("a")
            with pytest.raises(RuntimeError, match="is shutting down"):
                await sup.start_child(ChildSpec("x", "targets.basic:ready_then_sleep"))


def _kill(sup: Supervisor, path: str) -> None:
    pid = sup.child_info(path).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def _journals(tmp_path: Path, *names: str) -> list[ChildSpec]:
    """Children whose stop takes 0.3 s of cleanup (``targets.tree:journal``)."""
    return [
        ChildSpec(n, "targets.tree:journal", args=(str(tmp_path / "j"), n), ready_timeout=10)
        for n in names
    ]


async def test_a_stop_during_a_strategys_restart_announces_no_restart(tmp_path: Path) -> None:
    """one_for_all stops the siblings one by one; stop() meanwhile: each is stopped once.

    Before, the shutdown stopped them a second time (two ``stopping`` events,
    two warnings each), and "restarting" was announced after "shutting_down".
    """
    sup = Supervisor(_journals(tmp_path, "a", "b", "c"), strategy="one_for_all")
    kinds: list[tuple[str, str | None]] = []
    with anyio.fail_after(30), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("ready", "c"):
                    break
            _kill(sup, "b")
            async for event in events:
                kinds.append((event.kind, event.child))
                if (event.kind, event.child) == ("stopping", "c"):  # the strategy's, 0.3 s
                    sup.stop()
    after = kinds[kinds.index(("shutting_down", None)) :]
    assert ("restarting", "a") not in after, kinds
    assert ("started", "a") not in after, kinds
    assert kinds.count(("stopping", "c")) == 1, kinds
    assert kinds.count(("stopping", "a")) == 1, kinds
    assert all(row.state != "restarting" for row in sup.walk())


async def test_a_stop_during_a_backoff_leaves_no_restart_counted() -> None:
    sup = Supervisor(
        [ChildSpec("a", "targets.basic:ready_then_sleep"), ChildSpec("b", "targets.basic:crash")],
        strategy="one_for_all",
        backoff=Backoff(base=5, factor=1, cap=5, jitter=0),
    )
    with anyio.fail_after(30), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("restarting", "b"):  # due in 5 s
                    break
            sup.stop()
    rows = {row.path: row for row in sup.walk()}
    assert {path: row.restarts for path, row in rows.items()} == {"a": 0, "b": 0}
    assert rows["a"].state == "terminated"  # stopped by the strategy, as it was
    assert rows["b"].state == "exited"
    assert rows["b"].crashes == 1


async def test_a_crash_while_a_strategy_stops_its_siblings_is_counted(tmp_path: Path) -> None:
    """a crashes while one_for_all stops c (0.3 s of cleanup) after b crashed: both count."""
    sup = Supervisor(_journals(tmp_path, "a", "b", "c"), strategy="one_for_all")
    with anyio.fail_after(30), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                seen = (event.kind, event.child, event.restarts)
                if seen == ("ready", "c", 0):
                    _kill(sup, "b")
                elif seen == ("stopping", "c", 0):  # the strategy's stop: 0.3 s of cleanup
                    _kill(sup, "a")
                elif seen == ("ready", "c", 1):  # the group restarted
                    break
            # a's exit waits for the lock the restart held; a call that takes
            # the lock after it (anyio's is first come, first served) sees it judged.
            await sup.terminate_child("c")
            crashes = {row.path: row.crashes for row in sup.walk()}
            sup.stop()
    assert crashes == {"a": 1, "b": 1, "c": 0}


async def test_restart_child_during_a_groups_backoff_restarts_the_group_in_order(
    tmp_path: Path,
) -> None:
    """one_for_all after b crashed, 5 s of backoff: restart_child("b") starts a, b, c now.

    Before, b alone started at once, ahead of a, which it may depend on.
    """
    sup = Supervisor(
        [
            ChildSpec("a", "targets.basic:ready_then_sleep"),
            ChildSpec("b", "targets.basic:crash_once_then_sleep", args=(str(tmp_path / "m"),)),
            ChildSpec("c", "targets.basic:ready_then_sleep"),
        ],
        strategy="one_for_all",
        backoff=Backoff(base=5, factor=1, cap=5, jitter=0),
    )
    started: list[str | None] = []
    with anyio.fail_after(4), sup.events() as events:  # well inside the 5 s backoff
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("restarting", "c"):  # the group's, in 5 s
                    break
            await sup.restart_child("b")
            rows = {row.path: (row.state, row.restarts) for row in sup.walk()}
            sup.stop()
            async for event in events:
                if event.kind == "started":
                    started.append(event.child)
    assert started == ["a", "b", "c"]  # in start order, each once
    assert rows == {"a": ("running", 1), "b": ("running", 1), "c": ("running", 1)}


async def test_a_cancelled_terminate_child_still_sees_its_stop_through() -> None:
    """The caller of terminate_child() gives up waiting; a stop() after: no hang, SIGKILL follows.

    Before, the shutdown took the abandoned stop for done and waited for ever.
    """
    x = ChildSpec("x", "targets.basic:ready_then_sleep", shutdown=1, ready_timeout=10)
    sup = Supervisor([SLEEPER, stubborn(x)])
    with anyio.fail_after(20), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("ready", "x"):
                    break
            terminating = anyio.CancelScope()

            async def terminate() -> None:
                with terminating:
                    await sup.terminate_child("x")

            group.start_soon(terminate)
            async for event in events:
                if (event.kind, event.child) == ("stopping", "x"):  # 1 s of grace begins
                    break
            sup.stop()  # the shutdown finds x's stop under way, and waits for it
            await anyio.lowlevel.checkpoint()
            terminating.cancel()  # the caller gives up: the stop goes on, shielded
            async for event in events:
                if (event.kind, event.child) == ("exited", "x"):
                    assert event.signum == signal.SIGKILL


async def test_a_cancelled_start_child_leaves_nothing_behind() -> None:
    slow = ChildSpec("y", f"{U}:slow_to_be_ready", args=(60,), ready_timeout=120)
    with anyio.fail_after(20):
        async with Supervisor([SLEEPER]) as sup:
            with anyio.move_on_after(0.3):
                await sup.start_child(slow)
            assert [row.path for row in sup.walk()] == ["a"]
            await sup.start_child(ChildSpec("y", "targets.basic:ready_then_sleep"))  # free again
            sup.stop()


async def test_terminate_child_during_a_strategys_restart_calls_that_start_off(
    tmp_path: Path,
) -> None:
    """one_for_all restarts s (60 s until ready); terminate_child("s") meanwhile acts at once."""
    sup = Supervisor(
        [
            ChildSpec(
                "s",
                f"{U}:slow_to_be_ready_after_its_first_run",
                args=(str(tmp_path / "s"),),
                ready_timeout=120,
            ),
            *_journals(tmp_path, "a", "b"),
        ],
        strategy="one_for_all",
    )
    with anyio.fail_after(20), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("ready", "b"):
                    break
            _kill(sup, "b")  # s's next run takes 60 s to be ready: the strategy would wait
            async for event in events:
                if (event.kind, event.child) == ("stopping", "a"):  # the strategy's, 0.3 s
                    break
            await sup.terminate_child("s")
            assert sup.child_info("s").state == "terminated"
            sup.stop()


async def test_a_child_restarted_while_its_source_is_stopped_is_told_so() -> None:
    """Not the stopped env's old port (nothing listens there): an error, and the tree runs on."""
    env = ChildSpec("env", "targets.tree:serve_on_port_zero", ready_timeout=10)
    agent = ChildSpec(
        "agent", "targets.basic:ready_then_sleep", args=(FromReady("env", key="port"),)
    )
    with anyio.fail_after(30):
        async with Supervisor([env, agent]) as sup:
            await sup.terminate_child("env")
            with pytest.raises(InitializationFailedError, match="which is not running now"):
                await sup.restart_child("agent")
            assert sup.child_info("agent").state == "running"  # refused: nothing was done
            await sup.restart_child("env")
            await sup.restart_child("agent")  # the new env's port
            assert sup.child_info("agent").state == "running"
            sup.stop()


async def test_terminate_child_of_a_child_not_started_yet_keeps_it_from_starting() -> None:
    """agent waits behind env (60 s until ready): terminate_child("agent") returns at once."""
    env = ChildSpec("env", f"{U}:slow_to_be_ready", args=(60,), ready_timeout=120)
    sup = Supervisor([env, ChildSpec("agent", "targets.basic:ready_then_sleep")])
    kinds: list[tuple[str, str | None]] = []
    with anyio.fail_after(20), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("started", "env"):
                    break
            await sup.terminate_child("agent")
            assert sup.child_info("agent").state == "terminated"
            await sup.terminate_child("env")  # calls its start off: the start goes on, to agent
            sup.stop()
            async for event in events:
                kinds.append((event.kind, event.child))
    assert ("started", "agent") not in kinds


async def test_a_dependent_that_crashes_while_its_source_waits_for_its_restart_is_restarted() -> (
    None
):
    """env crashed twice (4 s of backoff now), agent once (0.5 s): the tree does not give up.

    The supervisor's own restart of agent takes env's last value; only a
    restart_child() meanwhile is refused (its caller can wait for env).
    """
    env = ChildSpec("env", "targets.tree:serve_on_port_zero", ready_timeout=10)
    agent = ChildSpec(
        "agent", "targets.basic:ready_then_sleep", args=(FromReady("env", key="port"),)
    )
    backoff = Backoff(base=0.5, factor=8, cap=10, jitter=0, reset_after=100)
    sup = Supervisor([env, agent], backoff=backoff, max_restarts=10)
    with anyio.fail_after(30), sup.events() as events:
        async with anyio.create_task_group() as group:
            group.start_soon(sup.run)
            async for event in events:
                if (event.kind, event.child) == ("ready", "agent"):
                    break
            _kill(sup, "env")  # back after 0.5 s
            async for event in events:
                if (event.kind, event.child, event.restarts) == ("ready", "env", 1):
                    break
            _kill(sup, "env")  # back after 4 s
            async for event in events:
                if (event.kind, event.child) == ("restarting", "env"):
                    break
            with pytest.raises(InitializationFailedError, match="which is not running now"):
                await sup.restart_child("agent")
            _kill(sup, "agent")  # back after 0.5 s, env still down
            async for event in events:
                if (event.kind, event.child, event.restarts) == ("ready", "agent", 1):
                    break
            assert sup.child_info("env").state == "restarting"
            sup.stop()
