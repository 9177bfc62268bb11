"""The child's bootstrap: what it imports, which event loop it runs, how SIGTERM ends it,
and a return value that cannot travel.

Every test runs real children: through a supervisor, or through the process
layer (``ChildProcess``) where a test must choose a child's event loop itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._process.child import Launch
from gymnasiarch._process.run import PRELOAD, ChildProcess, ExitStatus
from gymnasiarch.exceptions import ResultNotSentError, SupervisionError
from gymnasiarch.testing import stubborn
from gymnasiarch.treefile import TreeFileError, load_tree

B = "targets.bootstrap"
BACKENDS = ["asyncio", "trio"]


# -- helpers -------------------------------------------------------------------------


async def _run_child(
    target: str, *args: object, async_backend: str = "asyncio", stop_on: str | None = None
) -> ExitStatus:
    """Run one child through the process layer to its end; SIGTERM it once *stop_on* is read."""
    launch = Launch("probe", target, args, {}, {}, None, 0, async_backend=async_backend)
    child = await ChildProcess.start(launch, "forkserver", capture_output=False)
    async with anyio.create_task_group() as group:
        await group.start(child.watch)
        if stop_on is not None:
            await _read_fifo(stop_on)
            child.terminate()
        with anyio.fail_after(20):
            await child.exited.wait()
    assert child.status is not None
    return child.status


@contextlib.asynccontextmanager
async def _fifo(path: Path) -> AsyncIterator[str]:
    """A FIFO a child writes to: the test waits on it instead of polling a file."""
    os.mkfifo(path)
    # Opened for reading without blocking; our own write end keeps it from
    # reporting EOF before the child has opened it.
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    keeper = os.open(path, os.O_WRONLY)
    _FIFOS[str(path)] = reader
    try:
        yield str(path)
    finally:
        del _FIFOS[str(path)]
        os.close(keeper)
        os.close(reader)


_FIFOS: dict[str, int] = {}


async def _read_fifo(path: str) -> bytes:
    reader = _FIFOS[path]
    with anyio.fail_after(20):
        await anyio.wait_readable(reader)
    return os.read(reader, 100)


def _server_modules() -> set[str]:
    """Modules a fork server preloaded with PRELOAD holds (at least), from a fresh interpreter."""
    code = (
        "import sys; "
        + "".join(f"import {module}; " for module in [*PRELOAD, "targets.basic"])
        + "from gymnasiarch._process.forkserver_main import main; print(' '.join(sys.modules))"
    )
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path])}
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return set(found.stdout.split())


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.numbers: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.numbers.append(int(record.getMessage().removeprefix("record ")))


@pytest.fixture
def collector() -> Iterator[_Collector]:
    root, logger = logging.getLogger(), logging.getLogger(B)
    handler = _Collector()
    logger.addHandler(handler)
    root.setLevel(logging.INFO)  # the child's root starts at the parent's level
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -- 1. every kind of target starts from what the fork server preloaded ---------------


@pytest.mark.parametrize(
    ("target", "backend"),
    [
        ("modules_at_first_line", "asyncio"),
        ("async_modules_at_first_line", "asyncio"),
        ("async_modules_at_first_line", "trio"),
    ],
    ids=["def", "async-asyncio", "async-trio"],
)
async def test_a_child_imports_nothing_but_its_target_before_the_first_line(
    target: str, backend: str
) -> None:
    """The fork server preloads what the bootstrap needs, the event-loop backends included."""
    status = await _run_child(f"{B}:{target}", async_backend=backend)
    assert status.normal, status.describe()
    loaded = set(status.result)
    if target.startswith("async"):
        assert f"loop:{backend}" in loaded
        loaded.discard(f"loop:{backend}")
    assert loaded - _server_modules() == {B}


def test_trio_is_preloaded_only_where_it_is_installed() -> None:
    """trio is optional: PRELOAD names it exactly when it can be imported."""
    has_trio = importlib.util.find_spec("trio") is not None
    assert ("anyio._backends._trio" in PRELOAD) == has_trio
    assert "anyio._backends._asyncio" in PRELOAD


# -- 2. which event loop an async child runs on --------------------------------------


async def _loops_of(specs: list[ChildSpec]) -> dict[str, Any]:
    with anyio.fail_after(20):
        results = await Supervisor(specs).run()
    return {name: value[-1] for name, value in results.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_async_child_runs_on_its_supervisors_event_loop(backend: str) -> None:
    """No async_backend in the spec: the child's loop is its supervisor's (trio under trio)."""
    spec = ChildSpec("c", f"{B}:async_modules_at_first_line", restart="transient")
    assert anyio.run(_loops_of, [spec], backend=backend) == {"c": f"loop:{backend}"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_specs_async_backend_wins_over_the_supervisors(backend: str) -> None:
    """ChildSpec(async_backend=...) chooses the child's loop whatever the supervisor runs on."""
    specs = [
        ChildSpec(name, f"{B}:async_modules_at_first_line", restart="transient", async_backend=name)
        for name in BACKENDS
    ]
    loops = anyio.run(_loops_of, specs, backend=backend)
    assert loops == {"asyncio": "loop:asyncio", "trio": "loop:trio"}


def test_an_unknown_async_backend_is_a_value_error_naming_child_and_field() -> None:
    """A bad value fails where the spec is written, with the child's name and the field."""
    with pytest.raises(
        ValueError, match=r"child 'c': async_backend: expected one of asyncio, trio"
    ):
        ChildSpec("c", f"{B}:async_sleep_forever", async_backend="curio")  # type: ignore[arg-type]


def test_trio_without_trio_installed_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """async_backend="trio" where trio cannot be imported: a ValueError that says so."""
    real = importlib.util.find_spec

    def without_trio(name: str, package: str | None = None) -> Any:
        return None if name == "trio" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_trio)
    with pytest.raises(ValueError, match=r"child 'c': async_backend: 'trio' needs the trio"):
        ChildSpec("c", f"{B}:async_sleep_forever", async_backend="trio")


def test_a_tree_file_sets_a_childs_async_backend(tmp_path: Path) -> None:
    """``async_backend`` is a child key of tree files; a bad value points at it."""
    good = tmp_path / "good.toml"
    good.write_text(
        f'[[child]]\nname = "c"\ntarget = "{B}:async_sleep_forever"\nasync_backend = "trio"\n'
    )
    (spec,) = load_tree(good)._specs
    assert isinstance(spec, ChildSpec)
    assert spec.async_backend == "trio"
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[[child]]\nname = "c"\ntarget = "{B}:async_sleep_forever"\nasync_backend = "uvloop"\n'
    )
    with pytest.raises(TreeFileError, match=r"async_backend"):
        load_tree(bad)


# -- 3. SIGTERM is an orderly end -----------------------------------------------------


async def _stop_a_busy_child(target: str, counted: Path) -> tuple[ExitStatus | None, int]:
    """Start *target* (logging as fast as it can), stop it with SIGTERM, return its end."""
    # shutdown=None: what it logged before SIGTERM it sends before it ends, however long that
    # takes. Under load the parent's 0.3 s lasted long enough for ~73,000 records, more than
    # the parent took in within the default grace of 5 s: SIGKILLed, not stopped by SIGTERM.
    spec = ChildSpec("busy", f"{B}:{target}", args=(str(counted),), ready_timeout=10, shutdown=None)
    sup = Supervisor([spec])
    with sup.events() as events, anyio.fail_after(30):
        async with sup:
            await anyio.sleep(0.3)  # let it log a few thousand records
            await sup.terminate_child("busy")
        exited = [event async for event in events if event.kind == "exited"]
    (event,) = exited
    return (
        ExitStatus(event.exitcode, event.signum),
        int(await anyio.Path(counted).read_text()),
    )


@pytest.mark.parametrize("target", ["log_until_stopped", "async_log_until_stopped"])
async def test_no_record_is_lost_when_a_busy_child_is_stopped(
    target: str, tmp_path: Path, collector: _Collector
) -> None:
    """Every record whose log call returned before SIGTERM reaches the parent; finally ran."""
    status, logged = await _stop_a_busy_child(target, tmp_path / "count")
    assert status is not None
    assert status.signum == signal.SIGTERM  # still read as "stopped by SIGTERM"
    assert logged > 100
    # The call SIGTERM interrupted may have queued its record before the count.
    assert len(collector.numbers) in (logged, logged + 1)
    assert collector.numbers == list(range(len(collector.numbers)))


async def test_a_stopped_sync_child_runs_its_cleanup_and_a_second_sigterm_does_not_cut_it(
    tmp_path: Path,
) -> None:
    """SIGTERM unwinds a sync target through its finally; more SIGTERMs meanwhile are ignored."""
    marker = tmp_path / "marker"
    async with _fifo(tmp_path / "fifo") as fifo:
        spec = ChildSpec(
            "sleeper",
            f"{B}:sleep_then_clean_up",
            args=(fifo, str(marker), 0.3),
            ready_timeout=10,
            shutdown=20,
        )
        async with Supervisor([spec]) as sup, anyio.create_task_group() as group:
            (child,) = sup.which_children()
            assert child.pid is not None
            group.start_soon(sup.terminate_child, "sleeper")
            assert await _read_fifo(fifo) == b"cleaning"
            os.kill(child.pid, signal.SIGTERM)  # while it cleans up
            os.kill(child.pid, signal.SIGTERM)
    assert marker.read_text() == "cleaned up"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stopped_async_child_sees_cancellation_and_ends_by_sigterm(
    backend: str, tmp_path: Path
) -> None:
    """An async target is cancelled (its loop's own cancellation), on asyncio and on trio."""
    marker = tmp_path / "marker"
    async with _fifo(tmp_path / "fifo") as fifo:
        status = await _run_child(
            f"{B}:async_sleep_until_cancelled",
            fifo,
            str(marker),
            async_backend=backend,
            stop_on=fifo,
        )
    assert status.signum == signal.SIGTERM
    assert status.error is None
    expected = "asyncio.exceptions.CancelledError" if backend == "asyncio" else "trio.Cancelled"
    assert marker.read_text() == expected


async def test_sigterm_during_the_bootstrap_ends_the_child_promptly(tmp_path: Path) -> None:
    """A child stopped while it still imports its target (30 s) ends at once, by SIGTERM."""
    async with _fifo(tmp_path / "fifo") as fifo:
        launch = Launch(
            "slow",
            "targets.stopped_while_importing:never_reached",
            (),
            {},
            {},
            None,
            0,
            environ={**os.environ, "GYMNASIARCH_TEST_SLOW_IMPORT": fifo},
        )
        child = await ChildProcess.start(launch, "forkserver", capture_output=False)
        async with anyio.create_task_group() as group:
            await group.start(child.watch)
            assert await _read_fifo(fifo) == b"importing"
            child.terminate()
            with anyio.fail_after(5):  # not the import's 30 s
                await child.exited.wait()
    assert child.status is not None
    assert child.status.signum == signal.SIGTERM
    assert not child.started.is_set()


async def test_a_stubborn_async_child_still_ignores_sigterm() -> None:
    """The pytest plugin's stubborn() sets SIG_IGN in the target: only SIGKILL ends it."""
    spec = stubborn(ChildSpec("mule", f"{B}:async_sleep_forever", ready_timeout=10, shutdown=0.3))
    sup = Supervisor([spec])
    with sup.events() as events, anyio.fail_after(20):
        async with sup:
            pass
        exited = [event async for event in events if event.kind == "exited"]
    assert [event.signum for event in exited] == [signal.SIGKILL]


# -- 4. a return value that cannot be sent back ---------------------------------------


async def test_an_unpicklable_result_is_a_result_error_naming_the_type(tmp_path: Path) -> None:
    """The child says which type failed to pickle; the status is no crash with a TypeError."""
    status = await _run_child(f"{B}:return_a_lock", str(tmp_path / "runs"))
    assert status.error is None
    assert not status.normal
    unsent = status.result_error
    assert isinstance(unsent, ResultNotSentError)
    assert isinstance(unsent, SupervisionError)
    assert unsent.child == "probe"
    assert unsent.type_name == "_thread.lock"
    assert unsent.result_type == "dict"
    assert "cannot pickle" in status.describe()
    again = pickle.loads(pickle.dumps(unsent))
    assert (again.child, again.type_name, again.result_type) == ("probe", "_thread.lock", "dict")


async def test_a_local_function_as_result_names_function() -> None:
    """A result pickle cannot find by name: the type named is the function's."""
    status = await _run_child(f"{B}:return_a_local_function")
    assert status.result_error is not None
    assert status.result_error.type_name == "function"
    assert "local" in (status.result_error.reason or "")


async def test_an_unpicklable_result_does_not_rerun_the_target(tmp_path: Path) -> None:
    """A transient child whose result cannot be sent runs once; the supervisor raises for it."""
    runs = tmp_path / "runs"
    spec = ChildSpec("trainer", f"{B}:return_a_lock", args=(str(runs),), restart="transient")
    with anyio.fail_after(20), pytest.raises(ResultNotSentError) as info:
        await Supervisor([spec], max_restarts=3).run()
    assert info.value.child == "trainer"
    assert info.value.type_name == "_thread.lock"
    assert runs.read_text() == "1"


async def test_the_childs_signals_go_to_its_main_thread() -> None:
    """Our helper threads block SIGTERM: taken by one, it would wait for the target's sleep.

    A process-directed signal goes to any thread that does not block it, and
    CPython runs the handler in the main thread only once its blocking call
    returns: a stop could wait out the whole grace (seen in 1 of ~300 stops).
    """
    with anyio.fail_after(30):
        results = await Supervisor(
            [ChildSpec("masks", "targets.tree:helper_threads_block_sigterm", restart="transient")]
        ).run()
    masks = results["masks"]
    assert masks.pop("MainThread") is False
    assert masks.get("gymnasiarch-log-sender") is True
    assert all(masks.values()), masks
