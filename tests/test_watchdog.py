"""The liveness watchdog (issue 17): real children that beat, hang, deadlock and spin."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from gymnasiarch import Backoff, ChildSpec, Supervisor, exceptions, ready
from gymnasiarch._backends.base import Launch
from gymnasiarch._backends.ray_host import ChildHost
from gymnasiarch._context import BEAT_FRACTION, ChildContext
from gymnasiarch._process.output import HUNG_DUMP_LINES
from gymnasiarch._runtime_config import RuntimeConfig
from gymnasiarch.exceptions import ChildHungError, FieldValueError, PrematureTaskDeathError
from gymnasiarch.ray_backend import _status_from_payload
from gymnasiarch.ready import Notify, NotifyMessage, NotifySocket
from gymnasiarch.treefile import TreeFileError, load_tree

FAST = Backoff(base=0.01, cap=0.01, jitter=0)
WATCHDOG = 0.3


async def _run_to_the_end(sup: Supervisor, details: list[str]) -> None:
    with anyio.fail_after(20):
        async with sup:
            with sup.events() as events:
                async for event in events:
                    if event.kind == "exited":
                        details.append(event.detail or "")
                    if event.kind == "gave_up":
                        break
            await sup.wait()


async def _given_up(
    spec: ChildSpec, details: list[str] | None = None, **options: Any
) -> PrematureTaskDeathError:
    """Run *spec* alone with no restart left, to the supervisor's give-up: its error."""
    sup = Supervisor([spec], max_restarts=0, backoff=FAST, **options)
    with pytest.raises(PrematureTaskDeathError) as info:
        await _run_to_the_end(sup, [] if details is None else details)
    return info.value


async def _hung(spec: ChildSpec) -> tuple[ChildHungError, list[str]]:
    """Run *spec* alone with no restart left: its hung error, and the exited events' details."""
    details: list[str] = []
    error = (await _given_up(spec, details)).__cause__
    assert isinstance(error, ChildHungError), repr(error)
    return error, details


# -- the spec ---------------------------------------------------------------------


def test_watchdog_is_seconds_above_zero_or_none() -> None:
    assert ChildSpec("x", "os:getpid").watchdog is None
    assert ChildSpec("x", "os:getpid", watchdog=5).watchdog == 5
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(FieldValueError, match=r"child 'x': watchdog: .*seconds"):
            ChildSpec("x", "os:getpid", watchdog=bad)
    with pytest.raises(TypeError, match="watchdog"):
        ChildSpec("x", "os:getpid", watchdog="5s")  # type: ignore[arg-type]


def test_a_program_with_a_watchdog_needs_notify() -> None:
    with pytest.raises(FieldValueError, match=r"watchdog: .*WATCHDOG=1.*ready=Notify\(\)"):
        ChildSpec("x", command=["sleep", "9"], watchdog=1.0)
    assert ChildSpec("x", command=["sleep", "9"], ready=Notify(), watchdog=1.0).watchdog == 1.0


def test_tree_file_key(tmp_path: Path) -> None:
    path = tmp_path / "tree.toml"
    path.write_text('[[child]]\nname = "x"\ntarget = "os:getpid"\nwatchdog = 5.0\n')
    (spec,) = load_tree(path).children
    assert isinstance(spec, ChildSpec)
    assert spec.watchdog == 5.0
    path.write_text('[[child]]\nname = "x"\ntarget = "os:getpid"\nwatchdog = 0\n')
    with pytest.raises(TreeFileError, match="watchdog"):
        load_tree(path)


def test_heartbeat_beats_only_when_armed_and_due() -> None:
    deadlines: list[float] = []
    sent: list[tuple[object, ...]] = []
    context = ChildContext("x", None, 0, RuntimeConfig(), _send=sent.append)
    context.heartbeat()
    context._arm()
    context.ready()
    assert sent == [("ready", None)]  # no watchdog: no beat, ever
    context = ChildContext(
        "x",
        None,
        0,
        RuntimeConfig(),
        _send=sent.append,
        _watchdog=4.0,
        _beat_every=4.0 * BEAT_FRACTION,
        _expire_at=deadlines.append,
    )
    for _ in range(100):
        context.heartbeat()
    assert deadlines == []  # not armed yet (it is at the start, or at ready())
    before = time.monotonic()
    context._arm()
    assert len(deadlines) == 1
    # A watchdog and a beat spacing: a call skipped as too recent still counts.
    assert before + 5.0 <= deadlines[0] <= time.monotonic() + 5.0
    for _ in range(1000):
        context.heartbeat()  # too soon after the last beat: nothing
    assert len(deadlines) == 1


def test_the_watchdog_is_disarmed_for_good_once_the_target_ended() -> None:
    deadlines: list[float] = []
    disarmed: list[bool] = []
    context = ChildContext(
        "x",
        None,
        0,
        RuntimeConfig(),
        _send=lambda message: None,
        _watchdog=4.0,
        _beat_every=0.0,  # every call beats
        _expire_at=deadlines.append,
        _disarm_timer=lambda: disarmed.append(True),
    )
    context._arm()
    context._disarm()
    assert disarmed == [True]
    context.heartbeat()
    context._arm()
    context._beat_if_armed()
    assert len(deadlines) == 1  # nothing re-arms it


# -- hung children ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_async_child_blocked_by_a_sync_call_is_hung(backend: str) -> None:
    spec = ChildSpec(
        "loop",
        "targets.watchdog:blocks_its_loop",
        restart="transient",
        watchdog=WATCHDOG,
        async_backend=backend,  # type: ignore[arg-type]
    )
    error, details = anyio.run(_hung, spec, backend=backend)
    assert error.child == "loop"
    assert error.watchdog == WATCHDOG
    assert error.seconds is not None
    assert WATCHDOG <= error.seconds < WATCHDOG + 0.5
    assert error.stack is not None
    assert "in sleep_in_the_loop" in error.stack
    assert "time.sleep(30)" in error.stack  # the frame's source line
    assert "in blocks_its_loop" in error.stack
    assert "time.sleep(30)" in str(error)  # where the main thread was stuck
    # "no beat for ..." or, where its first beat was its only one (a loaded
    # machine), "no beat in ... since it started": hung either way.
    assert any(d.startswith("hung: no beat") and "time.sleep(30)" in d for d in details)


async def test_a_sync_child_that_stops_calling_heartbeat_is_hung() -> None:
    spec = ChildSpec(
        "sync", "targets.watchdog:beats_then_stops", restart="transient", watchdog=WATCHDOG
    )
    error, _ = await _hung(spec)
    assert error.stack is not None
    assert "in stop_beating" in error.stack
    assert "in beats_then_stops" in error.stack


async def test_a_deadlock_shows_both_threads() -> None:
    spec = ChildSpec("locks", "targets.watchdog:deadlocks", restart="transient", watchdog=WATCHDOG)
    error, _ = await _hung(spec)
    assert error.stack is not None
    assert error.stack.count("in _take_both") == 2  # both threads, each at its lock
    stuck = error.stuck_at()
    # Both at the same place: one line for the two.
    assert any(w.startswith("2 threads: ") and "with second:" in w for w in stuck), stuck
    assert "in deadlocks" in error.stack  # the main thread, joining them


async def test_a_child_spinning_in_c_with_the_gil_is_hung() -> None:
    spec = ChildSpec("regex", "targets.watchdog:backtrack", restart="transient", watchdog=WATCHDOG)
    error, _ = await _hung(spec)
    assert error.stack is not None
    assert "in backtrack" in error.stack
    assert 're.match(r"(a+)+$", "a" * 40 + "b")' in error.stack


NOTIFY_THEN_STOP = textwrap.dedent(
    """
    import os, socket, sys, time
    assert os.environ["WATCHDOG_PID"] == str(os.getpid())
    period = int(os.environ["WATCHDOG_USEC"]) / 1e6
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(os.environ["NOTIFY_SOCKET"])
    s.send(b"READY=1")
    for _ in range(int(sys.argv[1])):
        time.sleep(period / 3)
        s.send(b"WATCHDOG=1")
    time.sleep(30)
    """
)


async def test_a_program_that_stops_sending_watchdog_is_hung() -> None:
    spec = ChildSpec(
        "prog",
        command=[sys.executable, "-c", NOTIFY_THEN_STOP, "6"],
        ready=Notify(),
        restart="transient",
        watchdog=WATCHDOG,
    )
    began = time.monotonic()
    error, details = await _hung(spec)
    # Six beats a third of the period apart kept it alive for two periods.
    assert time.monotonic() - began > 2 * WATCHDOG
    assert error.stack is None  # a program has no Python stack to dump
    assert error.seconds is not None
    assert error.seconds >= WATCHDOG
    assert any(d.startswith("hung: no beat") for d in details)


async def test_a_hung_child_is_restarted_like_a_crash() -> None:
    spec = ChildSpec(
        "loop", "targets.watchdog:blocks_its_loop", restart="transient", watchdog=WATCHDOG
    )
    kinds: list[str] = []
    sup = Supervisor([spec], backoff=FAST)
    with anyio.fail_after(20):
        async with sup:
            with sup.events() as events:
                async for event in events:
                    kinds.append(event.kind)
                    if event.kind == "exited" and event.restarts == 1:
                        break
            results = await sup.wait()
    assert results == {"loop": "ok"}  # its second run returned
    assert kinds[kinds.index("exited") + 1] == "restarting"


# -- beating children are left alone ----------------------------------------------


@pytest.fixture
def both_cores_busy() -> Iterator[None]:
    spin = "while True: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
        for process in busy:
            process.wait()


#: A program that beats (sd_notify WATCHDOG=1) four times a period, forever.
BEATS_FOREVER = textwrap.dedent(
    """
    import os, socket, time
    period = int(os.environ["WATCHDOG_USEC"]) / 1e6
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(os.environ["NOTIFY_SOCKET"])
    s.send(b"READY=1")
    while True:
        time.sleep(period / 4)
        s.send(b"WATCHDOG=1")
    """
)
#: The watchdog of the children under load: both cores busy with spinners
#: (four processes of ours beside them on 2 cores) must not make a beat late.
LOAD_WATCHDOG = 1.0


async def test_beating_children_are_never_killed_under_load(both_cores_busy: None) -> None:
    specs = [
        ChildSpec("async", "targets.watchdog:idles", watchdog=LOAD_WATCHDOG),
        ChildSpec("trio", "targets.watchdog:idles", watchdog=LOAD_WATCHDOG, async_backend="trio"),
        ChildSpec("sync", "targets.watchdog:beats_forever", watchdog=LOAD_WATCHDOG),
        ChildSpec(
            "program",
            command=[sys.executable, "-c", BEATS_FOREVER],
            ready=Notify(),
            watchdog=LOAD_WATCHDOG,
        ),
    ]
    exits: list[str] = []
    with anyio.fail_after(30):
        async with Supervisor(specs) as sup:
            with sup.events() as events:
                with anyio.move_on_after(3 * LOAD_WATCHDOG):  # three deadlines each
                    async for event in events:
                        if event.kind == "exited":
                            exits.append(f"{event.child}: {event.detail}")
            pids = {info.name: info.pid for info in sup.walk()}
            assert all(pids.values())
            sup.stop()
    assert exits == []


def test_the_dump_signal_is_ours_alone() -> None:
    """SIGUSR2 asks a child with a watchdog for its stacks: nothing else of ours sends it."""
    src = Path(__file__).resolve().parents[1] / "src" / "gymnasiarch"
    users = sorted(path.name for path in src.rglob("*.py") if "SIGUSR2" in path.read_text())
    # exceptions.py only names it (the note on a hung child ended by it), sends nothing.
    assert users == ["exceptions.py", "output.py"]


# -- across processes and hosts ---------------------------------------------------


def test_the_hung_error_pickles_with_its_fields() -> None:
    stack = 'Current thread 0x1 (most recent call first):\n  File "x.py", line 3 in f\n    g()'
    error = ChildHungError("hung: ...", child="x", pid=7, seconds=1.5, watchdog=1.0, stack=stack)
    again = pickle.loads(pickle.dumps(error))
    assert (again.child, again.seconds, again.watchdog, again.stack) == ("x", 1.5, 1.0, stack)
    assert again.stuck_at() == ['main thread: File "x.py", line 3 in f: g()']
    assert str(again) == str(error)


async def test_the_ray_host_keeps_the_watchdog_on_the_childs_node(host: ChildHost) -> None:
    """The deadline is the process layer's: a Ray actor hosting a child keeps it too."""
    launch = Launch(
        "sim", "targets.watchdog:beats_then_stops", (0.1,), {}, {}, None, 0, watchdog=WATCHDOG
    )
    with anyio.fail_after(20):
        payload = await host.run(0, launch, None, True)
    status = _status_from_payload(payload)  # as the driver rebuilds it
    assert isinstance(status.error, ChildHungError)
    assert status.error.stack is not None
    assert "in stop_beating" in status.error.stack
    assert status.describe().startswith("hung: no beat")  # "for ..." or "in ... since ..."


async def test_an_async_childs_own_error_is_reported_as_it_is() -> None:
    """The beat task beside the target does not wrap the target's exception in a group."""
    spec = ChildSpec(
        "raises", "targets.watchdog:raises_while_beating", restart="transient", watchdog=WATCHDOG
    )
    given_up = await _given_up(spec)
    assert isinstance(given_up.__cause__, ValueError)
    assert str(given_up.__cause__) == "from the target"


async def test_a_spawned_child_has_the_watchdog_too() -> None:
    spec = ChildSpec(
        "sync", "targets.watchdog:beats_then_stops", restart="transient", watchdog=WATCHDOG
    )
    given_up = await _given_up(spec, start_method="spawn")
    error = given_up.__cause__
    assert isinstance(error, ChildHungError)
    assert error.stack is not None
    assert "in stop_beating" in error.stack


async def test_under_output_inherit_the_dump_goes_to_our_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """No captured stderr: the child's fd 2 is ours, so the dump is printed there."""
    spec = ChildSpec(
        "inherit",
        "targets.watchdog:beats_then_stops",
        restart="transient",
        watchdog=WATCHDOG,
        output="inherit",
    )
    error, _ = await _hung(spec)
    assert error.stack is None
    assert "in stop_beating" in capfd.readouterr().err


# -- the watchdog's bounds ---------------------------------------------------------


async def _results(spec: ChildSpec) -> dict[str, object]:
    """Run *spec* alone, no restart left: its results (a hang or a crash raises)."""
    sup = Supervisor([spec], max_restarts=0, backoff=FAST)
    with anyio.fail_after(20):
        async with sup:
            return await sup.wait()


async def test_a_child_whose_target_returned_is_not_watched_while_it_exits() -> None:
    """A non-daemon thread keeps the interpreter's exit waiting: no hang of its work."""
    spec = ChildSpec(
        "thread", "targets.watchdog:returns_with_thread", restart="transient", watchdog=WATCHDOG
    )
    assert await _results(spec) == {"thread": "done"}


async def test_a_child_whose_target_raised_reports_its_error_not_a_hang() -> None:
    spec = ChildSpec(
        "thread", "targets.watchdog:raises_with_thread", restart="transient", watchdog=WATCHDOG
    )
    given_up = await _given_up(spec)
    assert isinstance(given_up.__cause__, ValueError)
    assert str(given_up.__cause__) == "the real error"


async def test_heartbeat_calls_never_a_watchdog_apart_keep_a_child_alive() -> None:
    """Calls in bursts: the calls right after a beat are skipped, and count all the same."""
    spec = ChildSpec(
        "bursts",
        "targets.watchdog:irregular_heartbeats",
        args=(1.0,),
        restart="transient",
        watchdog=1.0,
    )
    assert await _results(spec) == {"bursts": "alive"}


async def test_an_async_childs_event_loop_start_is_not_its_hang() -> None:
    """The watchdog starts at the first beat of its loop: a slow loop start (1 s) is no hang."""
    spec = ChildSpec(
        "slow",
        "targets.slow_loop:returns_after_a_slow_loop_start",
        restart="transient",
        watchdog=WATCHDOG,
    )
    assert await _results(spec) == {"slow": "ok"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_programs_queued_beats_count_when_the_supervisor_lags(backend: str) -> None:
    """WATCHDOG=1 sent in time, queued while the supervisor's loop was busy, is taken first."""
    spec = ChildSpec(
        "prog",
        command=[sys.executable, "-c", BEATS_FOREVER],
        ready=Notify(),
        restart="transient",
        watchdog=0.3,  # a beat every 75 ms
    )

    async def main() -> list[str]:
        exits: list[str] = []
        with anyio.fail_after(30):
            async with Supervisor([spec], max_restarts=10, backoff=FAST) as sup:
                with sup.events() as events:
                    for _ in range(3):
                        await sup.wait_ready("prog")
                        await anyio.sleep(0.1)
                        time.sleep(0.6)  # noqa: ASYNC251 - the loop busy (a sync call, a GC pause)
                        with anyio.move_on_after(0.3):
                            async for event in events:
                                if event.kind == "exited":
                                    exits.append(event.detail or "")
                sup.stop()
        return exits

    assert anyio.run(main, backend=backend) == []


async def test_the_seconds_since_the_last_beat_are_measured() -> None:
    """Found late (the supervisor's loop was busy): the error says how long it really was."""
    spec = ChildSpec(
        "sync",
        "targets.watchdog:beats_then_stops",
        args=(0.05,),
        restart="transient",
        watchdog=WATCHDOG,
    )

    async def lagging() -> None:
        async with Supervisor([spec], max_restarts=0, backoff=FAST) as sup:
            # Started (the entry waits for that): its deadline passes, the loop busy.
            time.sleep(1.5)  # noqa: ASYNC251
            await sup.wait()

    with pytest.raises(PrematureTaskDeathError) as info, anyio.fail_after(20):
        await lagging()
    error = info.value.__cause__
    assert isinstance(error, ChildHungError)
    assert error.seconds is not None
    assert 1.2 < error.seconds < 2.5, error.seconds  # its last beat ~0.05 s after its start
    # Its heartbeat() calls all came within a beat spacing of its start: none beat.
    assert f"no beat in {error.seconds:.2f} s since it started" in str(error)


TRIGGERS = textwrap.dedent(
    """
    import os, socket, time
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(os.environ["NOTIFY_SOCKET"])
    s.send(b"READY=1")
    s.send(b"WATCHDOG=1")
    s.send(b"WATCHDOG=trigger")
    s.send(b"WATCHDOG=1")  # too late: it said it was hung
    time.sleep(30)
    """
)


async def test_watchdog_trigger_is_a_hang_at_once() -> None:
    spec = ChildSpec(
        "prog",
        command=[sys.executable, "-c", TRIGGERS],
        ready=Notify(),
        restart="transient",
        watchdog=30.0,
    )
    began = time.monotonic()
    error, details = await _hung(spec)
    assert time.monotonic() - began < 10  # not its 30 s deadline
    assert error.seconds is None
    assert "WATCHDOG=trigger" in str(error)
    assert any("WATCHDOG=trigger" in detail for detail in details)


def test_watchdog_trigger_is_no_keep_alive() -> None:
    keep_alive = NotifyMessage.parse(b"WATCHDOG=1", 7)
    assert (keep_alive.watchdog, keep_alive.watchdog_trigger) == (True, False)
    trigger = NotifyMessage.parse(b"WATCHDOG=trigger", 7)
    assert (trigger.watchdog, trigger.watchdog_trigger) == (False, True)


def test_only_our_own_modules_make_a_helper_thread() -> None:
    """A user's path with a ``gymnasiarch/_`` in it is the user's thread, shown."""
    ours = Path(exceptions.__file__).resolve().parent / "_process" / "output.py"
    stack = "\n".join(
        [
            "Thread 0x2 (most recent call first):",
            f'  File "{ours}", line 5 in _serve',
            "Current thread 0x1 (most recent call first):",
            '  File "/home/u/gymnasiarch/_work/sim.py", line 3 in step',
        ]
    )
    error = ChildHungError("hung", child="x", stack=stack)
    assert error.stuck_at() == [
        'main thread: File "/home/u/gymnasiarch/_work/sim.py", line 3 in step'
    ]


# -- the watchdog's bounds, under a lagging loop and at its edges --------------------


@pytest.mark.parametrize(
    ("target", "args"),
    [
        ("targets.watchdog:leaves_an_executor_thread", (1.0,)),
        ("targets.watchdog:finalizes_slowly", (1.0,)),
    ],
)
async def test_an_async_child_is_not_watched_while_its_event_loop_shuts_down(
    target: str, args: tuple[object, ...]
) -> None:
    """asyncio's shutdown joins executor threads and finalizes async generators: no hang."""
    spec = ChildSpec("loop", target, args=args, restart="transient", watchdog=WATCHDOG)
    assert await _results(spec) == {"loop": "done"}


async def test_an_async_childs_error_is_not_lost_while_its_event_loop_shuts_down() -> None:
    spec = ChildSpec(
        "loop",
        "targets.watchdog:leaves_an_executor_thread",
        args=(1.0, True),
        restart="transient",
        watchdog=WATCHDOG,
    )
    given_up = await _given_up(spec)
    assert isinstance(given_up.__cause__, ValueError)
    assert str(given_up.__cause__) == "the real error"


def test_a_watchdog_has_a_minimum_and_one_message(tmp_path: Path) -> None:
    """1e-9 would find a child hung inside its own start; -1, nan, 0 and 1e-9 read alike."""
    for bad in (-1, float("nan"), 0, 1e-9, 0.009):
        with pytest.raises(FieldValueError) as info:
            ChildSpec("x", "os:getpid", watchdog=bad)
        assert str(info.value) == (
            f"child 'x': watchdog: expected a number of seconds > 0 (at least 0.01), got {bad!r}"
        )
    assert ChildSpec("x", "os:getpid", watchdog=0.01).watchdog == 0.01
    path = tmp_path / "tree.toml"
    path.write_text('[[child]]\nname = "x"\ntarget = "os:getpid"\nwatchdog = -1\n')
    with pytest.raises(TreeFileError, match="watchdog") as tree_info:
        load_tree(path)
    assert "None" not in str(tree_info.value)  # a tree file has no None


async def test_a_forked_workers_beats_do_not_keep_a_stuck_child_alive() -> None:
    spec = ChildSpec(
        "forks", "targets.watchdog:stuck_while_a_fork_beats", restart="transient", watchdog=WATCHDOG
    )
    error, _ = await _hung(spec)
    assert error.stack is not None
    assert "in stuck_while_a_fork_beats" in error.stack


async def test_children_do_not_inherit_the_supervisors_systemd_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor run by systemd: its children must not ping it, nor think they are watched."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    seen = tmp_path / "env.txt"
    show = 'echo "$NOTIFY_SOCKET|$WATCHDOG_USEC|$WATCHDOG_PID" > "$0"'
    specs = [
        ChildSpec("py", "targets.watchdog:systemd_environ", restart="transient"),
        ChildSpec("pywd", "targets.watchdog:systemd_environ", restart="transient", watchdog=5.0),
        ChildSpec("prog", command=["sh", "-c", show, str(seen)], restart="transient"),
    ]
    with anyio.fail_after(20):
        async with Supervisor(specs, max_restarts=0, backoff=FAST, start_method="spawn") as sup:
            results = await sup.wait()
    nothing = {"NOTIFY_SOCKET": None, "WATCHDOG_USEC": None, "WATCHDOG_PID": None}
    assert results["py"] == nothing
    assert results["pywd"] == nothing
    assert seen.read_text() == "||\n"


# -- a program's beats are timed by the kernel, not by when they are read ----------

#: Ready, then silent for a second (its watchdog is 0.3 s), then beating again.
SILENT_THEN_BEATS = textwrap.dedent(
    """
    import os, socket, time
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(os.environ["NOTIFY_SOCKET"])
    s.send(b"READY=1")
    time.sleep(1.0)
    while True:
        s.send(b"WATCHDOG=1")
        time.sleep(0.05)
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_programs_late_beats_queued_while_the_supervisor_lags_do_not_spare_it(
    backend: str,
) -> None:
    """Beats sent after the deadline, read in the same step as it, count as late: it is hung."""
    spec = ChildSpec(
        "prog",
        command=[sys.executable, "-c", SILENT_THEN_BEATS],
        ready=Notify(),
        restart="transient",
        watchdog=0.3,
    )

    async def lagging() -> None:
        async with Supervisor([spec], max_restarts=0, backoff=FAST) as sup:
            await sup.wait_ready("prog")
            # The loop busy past the deadline and past the beats' return.
            time.sleep(1.2)  # noqa: ASYNC251
            await sup.wait()

    async def main() -> BaseException | None:
        with pytest.raises(PrematureTaskDeathError) as info, anyio.fail_after(20):
            await lagging()
        return info.value.__cause__

    error = anyio.run(main, backend=backend)
    assert isinstance(error, ChildHungError), repr(error)
    assert error.seconds is not None
    assert error.seconds >= 0.9  # since READY=1: its silence, not a beat's read


def _own_notify_socket() -> tuple[NotifySocket, socket.socket]:
    """A notify socket that believes this process's group, and a socket of ours sending to it."""
    notify = NotifySocket(os.getpgid(0))
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(notify.path)
    return notify, sender


def test_a_notify_message_is_timed_by_the_kernels_stamp_not_its_read() -> None:
    notify, sender = _own_notify_socket()
    with notify, sender:
        before = time.monotonic()
        sender.send(b"WATCHDOG=1")
        after = time.monotonic()
        time.sleep(0.2)
        read = time.monotonic()
        (message,) = notify.pending()
    assert message.watchdog
    assert message.received_at is not None
    # The realtime stamp on the monotonic clock: within a millisecond of the send.
    assert before - 0.001 <= message.received_at <= after + 0.001 < read


def test_a_notify_message_without_a_stamp_is_untimed() -> None:
    """Its read is no bound of when it was sent: read late, it may have come in time."""
    notify, sender = _own_notify_socket()
    with notify, sender:
        assert notify._sock is not None
        notify._sock.setsockopt(socket.SOL_SOCKET, ready._SO_TIMESTAMPNS, 0)
        sender.send(b"WATCHDOG=1")
        (message,) = notify.pending()
    assert message.watchdog
    assert message.received_at is None


async def test_a_ray_hosted_programs_late_beats_do_not_spare_it(host: ChildHost) -> None:
    """On a Ray node, the host's loop busy past the deadline: the late beats do not count."""
    launch = Launch(
        "prog",
        None,
        (),
        {},
        {},
        None,
        0,
        command=(sys.executable, "-c", SILENT_THEN_BEATS),
        watchdog=0.3,
        watchdog_from_ready=True,
        ready=Notify(),
    )
    payloads: list[dict[str, object]] = []

    async def run() -> None:
        payloads.append(await host.run(0, launch, None, True))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            assert (await host.program_ready(0, Notify()))[0]
            time.sleep(1.2)  # noqa: ASYNC251 - the host's loop busy past the deadline
    status = _status_from_payload(payloads[0])
    assert isinstance(status.error, ChildHungError), status
    assert status.error.seconds is not None
    assert status.error.seconds >= 0.9


async def test_a_dump_of_many_deep_threads_keeps_the_main_thread_and_a_short_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The main thread, dumped last, is kept; identical places are one line; the text is short.

    And the dump is no WARNING record a line: one DEBUG record of the child's output logger.
    """
    caplog.set_level(logging.DEBUG, logger="gymnasiarch.child.many")
    spec = ChildSpec(
        "many", "targets.watchdog:many_deep_threads", restart="transient", watchdog=WATCHDOG
    )
    error, _ = await _hung(spec)
    assert error.stack is not None
    assert len(error.stack.splitlines()) <= HUNG_DUMP_LINES
    assert "frames left out)" in error.stack  # 60 calls deep: the middle goes
    stuck = error.stuck_at()
    assert stuck[0].startswith("main thread: "), stuck
    assert "time.sleep(30)" in stuck[0]
    assert any(w.startswith("60 threads: ") and "in _deep" in w for w in stuck), stuck
    assert len(str(error)) < 1000
    assert not any("in _serve" in w or "gymnasiarch" in w.split(":")[0] for w in stuck)
    dumped = [r for r in caplog.records if r.name == "gymnasiarch.child.many"]
    assert [r.levelno for r in dumped] == [logging.DEBUG], [r.getMessage()[:80] for r in dumped]
    assert "in stop_beating" in dumped[0].getMessage()


async def test_the_hung_errors_traceback_is_the_users_threads_without_bootstrap() -> None:
    """What `gymnasiarch run` prints: no helper threads, no bootstrap frames (multiprocessing's)."""
    spec = ChildSpec(
        "sync", "targets.watchdog:beats_then_stops", restart="transient", watchdog=WATCHDOG
    )
    given_up = await _given_up(spec)
    shown = given_up.remote_traceback
    assert shown is not None
    assert shown.startswith("main thread (most recent call first):")
    assert "in stop_beating" in shown
    assert "multiprocessing" not in shown
    assert "child_main" not in shown
    error = given_up.__cause__
    assert isinstance(error, ChildHungError)
    assert error.stack is not None
    assert "child_main" in error.stack  # complete (but capped) for who wants it
    # Its end: the watchdog's doing, not a signal someone sent.
    assert "signal SIGUSR2: the watchdog's stack dump request" in str(given_up)


def test_the_hung_errors_repr_names_the_child() -> None:
    error = ChildHungError("hung: no beat for 1.00 s", child="group/sim", pid=7, seconds=1.0)
    assert repr(error) == (
        "ChildHungError('hung: no beat for 1.00 s', child='group/sim', pid=7, seconds=1.0)"
    )


def test_stuck_at_prefers_the_users_frame_and_names_threads_plainly() -> None:
    stack = "\n".join(
        [
            "Thread 0x00007f02 (most recent call first):",
            '  File "/usr/lib/python3.11/threading.py", line 327 in wait',
            "    waiter.acquire()",
            "Current thread 0x00007f01 (most recent call first):",
            '  File "/usr/lib/python3.11/re/__init__.py", line 166 in match',
            "    return _compile(pattern, flags).match(string)",
            '  File "/home/u/sim.py", line 9 in step',
            "    re.match(pattern, text)",
        ]
    )
    error = ChildHungError("hung", child="x", stack=stack)
    assert error.stuck_at() == [
        'main thread: File "/home/u/sim.py", line 9 in step: re.match(pattern, text) '
        "[in re/__init__.py:166 in match]",
        "thread 0x00007f02: threading.py:327 in wait: waiter.acquire()",
    ]


async def test_a_hung_child_is_named_by_its_path(caplog: pytest.LogCaptureFixture) -> None:
    inner = Supervisor(
        [
            ChildSpec(
                "sync",
                "targets.watchdog:beats_then_stops",
                restart="transient",
                watchdog=WATCHDOG,
                significant=True,
            )
        ],
        name="inner",
        max_restarts=0,
        backoff=FAST,
    )
    with pytest.raises(PrematureTaskDeathError) as info, anyio.fail_after(20):
        await Supervisor([inner], max_restarts=0, backoff=FAST).run()
    error: BaseException | None = info.value
    while error is not None and not isinstance(error, ChildHungError):
        error = error.__cause__
    assert isinstance(error, ChildHungError)
    assert error.child == "inner/sync"
    assert "child 'inner/sync' hung" in caplog.text


async def test_a_hung_child_that_does_not_answer_the_dump_request_is_said_so() -> None:
    spec = ChildSpec(
        "deaf", "targets.watchdog:ignores_the_dump_request", restart="transient", watchdog=WATCHDOG
    )
    error, _ = await _hung(spec)
    assert error.stack is None
    assert "no stack dump: it did not answer the watchdog's dump request within" in str(error)


# -- review 3: beats without a stamp or across a clock step; the dump's wait and headers --


def test_a_programs_queued_beats_count_where_the_kernel_gives_no_stamps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SO_TIMESTAMPNS refused (an option number the kernel does not know): beats read at
    the deadline, sent in time, are not taken for late ones."""
    monkeypatch.setattr(ready, "_SO_TIMESTAMPNS", 0x7FFF)  # ENOPROTOOPT
    test_a_programs_queued_beats_count_when_the_supervisor_lags("asyncio")


class _SteppedClock:
    """The time module, its realtime clock *step* seconds ahead (NTP, a VM's resume)."""

    def __init__(self, step: float) -> None:
        self.step = step

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def time(self) -> float:
        return time.time() + self.step


def test_a_stamp_made_old_by_a_clock_step_is_not_before_the_last_empty_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notify, sender = _own_notify_socket()
    with notify, sender:
        assert notify.pending() == []  # the queue seen empty now: what comes next came after
        empty = time.monotonic()
        sender.send(b"WATCHDOG=1")
        monkeypatch.setattr(ready, "time", _SteppedClock(10.0))
        (message,) = notify.pending()
    assert message.received_at is not None
    assert message.received_at >= empty - 0.001  # not 10 s before its send


def test_a_nonsense_stamp_is_no_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    notify, sender = _own_notify_socket()
    with notify, sender:
        sender.send(b"WATCHDOG=1")
        monkeypatch.setattr(ready, "time", _SteppedClock(3 * 24 * 3600.0))  # days off
        (message,) = notify.pending()
    assert message.watchdog
    assert message.received_at is None


def test_a_clock_step_while_a_beat_is_queued_does_not_kill_a_healthy_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = ChildSpec(
        "prog",
        command=[sys.executable, "-c", BEATS_FOREVER],
        ready=Notify(),
        restart="transient",
        watchdog=0.3,  # a beat every 75 ms
    )

    async def main() -> list[str]:
        exits: list[str] = []
        with anyio.fail_after(30):
            async with Supervisor([spec], max_restarts=10, backoff=FAST) as sup:
                with sup.events() as events:
                    await sup.wait_ready("prog")
                    await anyio.sleep(0.2)
                    # Every stamp read from now on looks 10 s old.
                    monkeypatch.setattr(ready, "time", _SteppedClock(10.0))
                    with anyio.move_on_after(0.6):
                        async for event in events:
                            if event.kind == "exited":
                                exits.append(event.detail or "")
                sup.stop()
        return exits

    assert anyio.run(main) == []


async def test_a_chatty_child_without_a_dump_is_not_kept_alive_by_its_chatter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its own SIGUSR2 handler answers no dump; its thread's lines are no dump's progress."""
    spec = ChildSpec(
        "chatty",
        "targets.watchdog:chatters_with_its_own_dump_signal",
        restart="transient",
        watchdog=WATCHDOG,
    )
    with caplog.at_level(logging.WARNING):
        error, _ = await _hung(spec)
    hung = next(i for i, r in enumerate(caplog.records) if "killing it" in r.getMessage())
    after = [r for r in caplog.records[hung:] if r.getMessage() == "tick"]
    # One line each 2 ms: DUMP_WAIT (50 ms) is ~25 of them, DUMP_WAIT_MAX (2 s) ~1000.
    assert len(after) < 250, len(after)
    waited = float(str(error).split(" within ")[1].split(" s")[0])
    assert waited < 0.5  # what it waited, said: not DUMP_WAIT_MAX


async def test_a_childs_line_that_starts_like_a_thread_header_is_no_dump() -> None:
    spec = ChildSpec(
        "pool",
        "targets.watchdog:chatters_with_its_own_dump_signal",
        args=("Thread pool: 3 tasks done\n",),
        restart="transient",
        watchdog=WATCHDOG,
    )
    error, _ = await _hung(spec)
    assert error.stack is None
    assert "no stack dump" in str(error)


def test_faulthandlers_thread_headers_are_matched_whole() -> None:
    stack = "Thread pool: busy\nThread 0x00007f0a2b3c4d5e (most recent call first):\n"
    stack += '  File "/app/x.py", line 3 in work\n'
    (thread,) = exceptions._dumped_threads(stack)
    assert thread.label == "main thread"
    assert thread.frames == ['File "/app/x.py", line 3 in work']


def test_only_the_dump_signal_is_called_the_watchdogs_dump_request() -> None:
    import signal

    assert "dump request" in str(ChildHungError("hung", signum=signal.SIGUSR2))
    assert "watchdog" not in str(ChildHungError("hung", signum=signal.SIGTERM))


def test_a_cut_dump_with_threads_left_out_fits_its_line_budget() -> None:
    from gymnasiarch._process.hung import fit_threads

    blocks = [
        [
            f"{'Current thread' if t == 0 else 'Thread'} 0x{t + 1:x} (most recent call first):",
            f'  File "/nowhere/x{t}.py", line 1 in f',
            *(f"  noise {j}" for j in range(51 if t == 0 else 56)),
        ]
        for t in range(18)
    ]
    shown = fit_threads(blocks, cut=True).splitlines()
    assert shown[-1] == "..."
    assert any(line.endswith("threads left out]") for line in shown)
    assert len(shown) <= HUNG_DUMP_LINES
