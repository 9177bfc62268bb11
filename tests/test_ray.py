"""The Ray backend: the same trees, strategies, failures and logs, on a Ray cluster.

A session cluster (loopback only, two CPUs, no dashboard, no usage
statistics) serves most tests; scenarios that need a cluster of their own
(node loss, a cluster the backend starts itself) run in a fresh interpreter
(``ray_scenarios.py``): a driver attaches to one cluster per process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

# Before Ray is imported: a cluster bound to loopback only, and no usage report.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

ray = pytest.importorskip(
    "ray", reason="Ray cannot be installed here (pip install 'gymnasiarch[ray]')"
)

from gymnasiarch import ChildSpec, RayBackend, Supervisor  # noqa: E402
from gymnasiarch.exceptions import (  # noqa: E402
    InitializationFailedError,
    PrematureTaskDeathError,
)
from gymnasiarch.ray_backend import RayChildRun  # noqa: E402
from gymnasiarch.testing import _descendants  # noqa: E402
from gymnasiarch.treefile import TreeFileError, load_tree  # noqa: E402

HERE = Path(__file__).parent
B = "targets.basic"
R = "targets.remote"


def start_test_cluster() -> None:
    """Start the tests' local Ray cluster, with this folder on the workers' path.

    Our own (``address="local"``): never a cluster that happens to run on
    the machine, nor the one ``RAY_ADDRESS`` names.
    """
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}},
    )


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the session (see :func:`start_test_cluster`)."""
    start_test_cluster()
    try:
        yield
    finally:
        ray.shutdown()


# -- leak checks that fit a cluster --------------------------------------------------
# Ray keeps a pool of idle workers and its own connections for the whole
# session: what a test must not leave behind is a supervised child, or an
# actor hosting one.


def _ours(command: str) -> bool:
    return command.startswith("gymnasiarch[") or "ChildHost" in command


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after *timeout* seconds (waited for on pidfds)."""
    deadline = time.monotonic() + timeout
    left = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                left.append(pid)
        finally:
            os.close(fd)
    return left


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the test if a child or a child's actor outlives it (Ray kills actors async)."""
    before = set(_descendants(os.getpid()))
    yield
    new = {p: c for p, c in _descendants(os.getpid()).items() if p not in before and _ours(c)}
    left = _wait_gone(list(new), timeout=10)
    if left:
        pytest.fail(f"processes outlived the test: {[new[p] for p in left]}", pytrace=False)


@pytest.fixture(autouse=True)
def no_fd_left_open() -> Iterator[None]:
    """No pipe or file is left open; sockets come and go with Ray's own connections."""
    from conftest import _open_fds

    def ours() -> dict[int, str]:
        return {
            fd: what
            for fd, what in _open_fds().items()
            if not what.startswith(("socket:", "anon_inode:"))
        }

    before = ours()
    yield
    leftover = {fd: what for fd, what in ours().items() if before.get(fd) != what}
    if leftover:
        pytest.fail(f"test left file descriptors open: {leftover}")


# -- the cluster itself --------------------------------------------------------------


def _listening_inodes() -> dict[int, str]:
    """inode -> local address of every listening TCP socket on this machine."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    found[int(fields[9])] = fields[1]
    return found


def _is_loopback(address: str) -> bool:
    host = address.split(":", maxsplit=1)[0]
    # 127.x.x.x little-endian, ::1, and ::ffff:127.x.x.x
    return (
        (host.endswith("7F") and len(host) == 8)
        or host == "00000000000000000000000001000000"
        or (host.startswith("0000000000000000FFFF0000") and host.endswith("7F"))
    )


def test_the_test_cluster_listens_on_loopback_only(ray_cluster: None) -> None:
    """Every socket a Ray process of ours listens on is bound to a loopback address."""
    listening = _listening_inodes()
    checked = 0
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inode = int(target[8:-1])
                        if inode in listening:
                            checked += 1
                            assert _is_loopback(listening[inode]), (pid, listening[inode])
    assert checked >= 3  # the GCS and the raylet at least


def test_a_cluster_the_backend_starts_is_loopback_and_gone_at_the_end() -> None:
    """With no address, RayBackend starts a local cluster and shuts it down, leaving nothing."""
    seen = _scenario("owned_cluster")
    assert seen == {
        "during": True,
        "node_ip": "127.0.0.1",
        "results": {"one": 5},
        "after": False,
        "left": [],
    }


def test_a_backend_without_an_address_never_joins_a_cluster_running_here() -> None:
    """RAY_ADDRESS names a running cluster: RayBackend() starts (and ends) its own anyway."""
    seen = _scenario("another_cluster_runs")
    assert seen["ours"] != seen["theirs"]
    assert seen["owns"] is True
    assert seen["results"] == {"one": 5}
    assert seen["after"] is False
    assert seen["theirs_serves"] == 7


def test_init_options_may_not_name_an_address() -> None:
    """The cluster is RayBackend's own argument: one clear error for it in init_options."""
    with pytest.raises(ValueError, match=r"init_options: give the cluster as RayBackend\(address"):
        RayBackend(init_options={"address": "auto"})


def _scenario(name: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(HERE / "ray_scenarios.py"), name],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, done.stderr[-3000:]
    assert lines, done.stdout[-3000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- the supervisor's scenarios, on the cluster ----------------------------------------


async def test_results_come_back_from_the_cluster(ray_cluster: None) -> None:
    """Results pass back; the child is a subprocess of its actor's worker, on a known node."""
    backend = RayBackend()
    specs = [
        ChildSpec("add", f"{B}:add", args=(1, 2), restart="transient"),
        ChildSpec("async_add", f"{B}:async_add", args=(3, 4), restart="transient"),
        ChildSpec("where", f"{R}:where", restart="transient"),
    ]
    with anyio.fail_after(60):
        results = await Supervisor(specs, backend=backend, start_order="parallel").run()
    assert results["add"] == 3
    assert results["async_add"] == 7
    # Hosted by an actor, forked by the node's fork server, in the actor's environment.
    assert results["where"]["requester_command"].startswith("ray::")
    assert results["where"]["parent_command"].startswith("gymnasiarch-forkserver")
    assert results["where"]["environ"]["PYTHONPATH"] == str(HERE)
    # The actor starts no process of its own (Ray ends its group with it);
    # the child registers semaphores with the node server's resource tracker.
    assert results["where"]["requester_group"] == [results["where"]["requester_pid"]]
    assert results["where"]["tracker"].startswith("pipe:")
    assert ray.is_initialized()  # attached to the session's cluster: left running


async def test_a_crash_on_the_cluster_carries_the_childs_traceback_and_output(
    ray_cluster: None,
) -> None:
    """A crash → PrematureTaskDeathError with the child's traceback and its last stderr."""
    spec = ChildSpec("bad", f"{R}:print_then_crash", restart="transient")
    with anyio.fail_after(60), pytest.raises(PrematureTaskDeathError) as info:
        await Supervisor([spec], backend=RayBackend(), max_restarts=0).run()
    error = info.value
    assert error.child == "bad"
    assert error.exitcode == 1
    assert "crashed on the cluster" in (error.remote_traceback or "")
    assert "print_then_crash" in (error.remote_traceback or "")
    assert isinstance(error.__cause__, RuntimeError)
    assert error.output == "something is wrong"


async def test_records_and_output_from_the_cluster_arrive_in_order_none_lost(
    ray_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Every record of a child on the cluster arrives, in order; its output lines too."""
    caplog.set_level(logging.INFO)
    specs = [
        ChildSpec("logs", f"{B}:log_lines", args=(3000,), restart="transient"),
        ChildSpec("talker", f"{R}:print_then_crash", restart="temporary"),
    ]
    with anyio.fail_after(60):
        results = await Supervisor(specs, backend=RayBackend()).run()
    assert results == {"logs": 3000}
    indexes = [r.index for r in caplog.records if getattr(r, "child", None) == "logs"]
    assert indexes == list(range(3000))
    said = [
        (r.getMessage(), r.stream) for r in caplog.records if getattr(r, "child", "") == "talker"
    ]
    assert ("hello from the cluster", "stdout") in said
    assert ("something is wrong", "stderr") in said


async def test_one_for_all_restarts_both_children_on_the_cluster(ray_cluster: None) -> None:
    """SIGKILL of one child on its node → one_for_all restarts both, each ready again."""
    specs = [
        ChildSpec("a", f"{R}:ready_and_serve", args=("a",), ready_timeout=60, shutdown=1),
        ChildSpec("b", f"{R}:ready_and_serve", args=("b",), ready_timeout=60, shutdown=1),
    ]
    sup = Supervisor(specs, backend=RayBackend(), strategy="one_for_all", handle_signals=False)
    with anyio.fail_after(90):
        async with sup, sup.events() as events:
            first = {c.name: c.pid for c in sup.which_children()}
            os.kill(first["a"], signal.SIGKILL)  # the test's cluster is on this machine
            ready = set()
            async for event in events:
                if event.kind == "ready":
                    ready.add(event.child)
                    if ready == {"a", "b"}:
                        break
            after = {c.name: (c.pid, c.restarts, c.state) for c in sup.which_children()}
    assert after["a"][1:] == (1, "running")
    assert after["b"][1:] == (1, "running")
    assert after["a"][0] != first["a"]
    assert after["b"][0] != first["b"]


async def test_a_stubborn_child_on_the_cluster_is_killed_after_its_grace(
    ray_cluster: None,
) -> None:
    """A child that ignores SIGTERM is SIGKILLed once its shutdown grace is over."""
    spec = ChildSpec("stubborn", f"{B}:ignore_sigterm_and_sleep", shutdown=0.5, ready_timeout=60)
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup:
            began = time.monotonic()
            await sup.terminate_child("stubborn")
            took = time.monotonic() - began
            last = sup.which_children()[0].last_exit
    assert took >= 0.5
    assert last is not None
    assert last.signum == signal.SIGKILL


async def test_a_dead_actor_is_a_crash_with_the_reason_ray_gave(ray_cluster: None) -> None:
    """The actor's worker killed (as the OOM killer would) → PrematureTaskDeathError, lost."""
    spec = ChildSpec("sim", f"{R}:ready_and_serve", args=("x",), ready_timeout=60)
    sup = Supervisor([spec], backend=RayBackend(), max_restarts=0, handle_signals=False)
    # The supervisor raises when it leaves, as it gave up on the child.
    with anyio.fail_after(60), pytest.raises(PrematureTaskDeathError) as info:  # noqa: PT012
        async with sup:
            run = sup._children["sim"].run
            assert isinstance(run, RayChildRun)
            assert run.host_pid is not None
            os.kill(run.host_pid, signal.SIGKILL)
            await sup.wait()
    assert "lost with its host" in str(info.value)
    assert isinstance(info.value.__cause__, ray.exceptions.RayError)


async def test_a_restart_runs_the_child_again_in_the_same_actor(
    ray_cluster: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crashed child's next run is hosted by the same actor; each run's output arrives once."""
    caplog.set_level(logging.INFO)
    marker = tmp_path / "first-host"
    spec = ChildSpec(
        "again", f"{R}:say_which_run_then_crash_once", args=(str(marker),), restart="transient"
    )
    with anyio.fail_after(60):
        results = await Supervisor([spec], backend=RayBackend(), max_restarts=1).run()
    assert results["again"] == int(marker.read_text())
    said = [r.getMessage() for r in caplog.records if getattr(r, "child", "") == "again"]
    assert said.count("first run") == 1
    assert said.count("later run") == 1


async def test_a_lost_actor_is_replaced_by_a_new_one(ray_cluster: None) -> None:
    """The host worker killed → the child runs again in a new actor, a new worker."""
    spec = ChildSpec("sim", f"{R}:ready_and_serve", args=("x",), ready_timeout=60)
    sup = Supervisor([spec], backend=RayBackend(), max_restarts=1, handle_signals=False)
    with anyio.fail_after(60), sup.events() as events:
        async with sup:
            first = sup._children["sim"].run
            assert isinstance(first, RayChildRun)
            assert first.host_pid is not None
            os.kill(first.host_pid, signal.SIGKILL)
            async for event in events:
                if event.kind == "ready" and event.restarts == 1:
                    break
            second = sup._children["sim"].run
            assert isinstance(second, RayChildRun)
            assert second.number == 0  # a new actor's first run
            assert second.host_pid not in (None, first.host_pid)
    assert _wait_gone([first.host_pid, second.host_pid or 0], timeout=10) == []


async def test_an_actor_ends_once_its_child_will_not_run_again(
    ray_cluster: None, tmp_path: Path
) -> None:
    """A finished transient child's actor, and a terminated child's, end while the tree runs."""
    host_file = tmp_path / "host"
    specs = [
        ChildSpec("done", f"{R}:host_pid_to", args=(str(host_file),), restart="transient"),
        ChildSpec("stay", f"{B}:ready_then_sleep", ready_timeout=60),
    ]
    sup = Supervisor(specs, backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60), sup.events() as events:
        async with sup:
            async for event in events:
                if event.kind == "exited" and event.child == "done":
                    break
            assert _wait_gone([int(host_file.read_text())], timeout=10) == []
            run = sup._children["stay"].run
            assert isinstance(run, RayChildRun)
            assert run.host_pid is not None
            await sup.terminate_child("stay")
            assert _wait_gone([run.host_pid], timeout=10) == []
            assert sup.which_children()[1].state == "terminated"


async def test_a_child_that_cannot_start_on_the_cluster_fails_the_start(
    ray_cluster: None,
) -> None:
    """A child that exits before it is ready fails the supervisor's start, as locally."""
    spec = ChildSpec("early", f"{B}:exit_with", args=(3,), ready_timeout=60)
    with anyio.fail_after(60), pytest.raises(InitializationFailedError, match="exit code 3"):
        await Supervisor([spec], backend=RayBackend()).run()


def test_the_same_tree_runs_under_trio_on_the_cluster(ray_cluster: None) -> None:
    """Ray's futures are bridged to trio as well as to asyncio."""

    async def tree() -> dict[str, Any]:
        with anyio.fail_after(60):
            spec = ChildSpec("add", f"{B}:add", args=(20, 22), restart="transient")
            return await Supervisor([spec], backend=RayBackend()).run()

    assert anyio.run(tree, backend="trio") == {"add": 42}


def test_losing_a_node_restarts_its_child_on_a_surviving_node() -> None:
    """Two nodes; the one hosting a child is removed → the child runs again on the other."""
    seen = _scenario("node_loss")
    assert seen["first_node"] == seen["doomed"]
    assert seen["second_node"] not in (None, seen["doomed"])
    assert seen["exit"].startswith("lost with its host:")
    assert "node" in seen["exit"]
    assert seen["restarts"] == 1


# -- placement and tree files ---------------------------------------------------------


def test_placement_becomes_ray_actor_options() -> None:
    """Placement keys pass through; node_affinity becomes Ray's scheduling strategy."""
    from gymnasiarch.ray_backend import actor_options

    options = actor_options(
        ray,
        {
            "num_cpus": 2,
            "resources": {"sim": 1},
            "node_affinity": {"node_id": "ab" * 28, "soft": True},
        },
    )
    assert options["num_cpus"] == 2
    assert options["resources"] == {"sim": 1}
    strategy = options["scheduling_strategy"]
    assert isinstance(strategy, ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy)
    assert (strategy.node_id, strategy.soft) == ("ab" * 28, True)


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        ({"cpus": 1}, "unknown key 'cpus'"),
        ({"num_cpus": -1}, "num_cpus must be >= 0"),
        ({"num_gpus": "one"}, "num_gpus has the wrong type"),
        ({"resources": {"sim": "lots"}}, "resources must map names to amounts"),
        ({"node_affinity": {"node": "ab"}}, "node_affinity must be"),
        ("everywhere", "placement: must be a mapping"),
        ({"resources": {"CPU": 1}}, "use num_cpus"),
        ({"scheduling_strategy": "NEAR"}, 'must be "DEFAULT", "SPREAD"'),
        (
            {"scheduling_strategy": "SPREAD", "node_affinity": {"node_id": "ab"}},
            "not both",
        ),
    ],
)
def test_a_bad_placement_fails_at_construction(placement: Any, message: str) -> None:
    """A placement no cluster understands is an error where the spec is written."""
    with pytest.raises((TypeError, ValueError), match=message):
        ChildSpec("x", f"{B}:add", placement=placement)


def test_a_tree_file_can_ask_for_ray(tmp_path: Path) -> None:
    """``backend = "ray"`` and ``address`` in [supervisor]; placement per child."""
    tree = tmp_path / "tree.toml"
    tree.write_text(
        '[supervisor]\nbackend = "ray"\naddress = "auto"\n\n'
        '[[child]]\nname = "a"\ntarget = "targets.basic:add"\n'
        "placement = { num_cpus = 1, resources = { sim = 1 } }\n"
    )
    sup = load_tree(tree)
    assert isinstance(sup.backend, RayBackend)
    assert sup.backend.address == "auto"
    assert sup.backend.init_options["runtime_env"] == {"working_dir": str(tmp_path)}
    spec = sup._specs[0]
    assert isinstance(spec, ChildSpec)
    assert spec.placement == {
        "num_cpus": 1,
        "resources": {"sim": 1},
    }


@pytest.mark.parametrize(
    ("supervisor", "message"),
    [
        ('backend = "k8s"', r'supervisor.backend \(line 2\): expected "local" or "ray"'),
        ('address = "auto"', r'supervisor.address \(line 2\): an address needs backend = "ray"'),
    ],
)
def test_a_tree_file_with_a_bad_backend_is_refused(
    tmp_path: Path, supervisor: str, message: str
) -> None:
    """An unknown backend, or an address without Ray, is one clear error with its line."""
    tree = tmp_path / "tree.toml"
    tree.write_text(f'[supervisor]\n{supervisor}\n\n[[child]]\nname = "a"\ntarget = "m:f"\n')
    with pytest.raises(TreeFileError, match=message):
        load_tree(tree)


async def test_a_unix_log_server_is_refused_for_a_cluster(ray_cluster: None) -> None:
    """Children on other nodes cannot reach a Unix socket: one clear error, nothing runs."""
    from gymnasiarch.logserver import LogServer

    async with LogServer.unix() as server:
        spec = ChildSpec("a", f"{B}:add", args=(1, 1))
        sup = Supervisor([spec], backend=RayBackend(), log_server=server)
        with (
            anyio.fail_after(30),
            pytest.raises(InitializationFailedError, match="cannot reach a log server"),
        ):
            await sup.run()


async def test_a_child_ray_cannot_place_is_reported_and_fails_its_start(
    ray_cluster: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray waits silently for a node that fits: we say so, and a ready_timeout ends the wait."""
    from gymnasiarch import ray_backend

    monkeypatch.setattr(ray_backend, "_PLACEMENT_PATIENCE", 0.2)
    spec = ChildSpec(
        "nowhere", f"{B}:add", args=(1, 1), ready_timeout=2, placement={"resources": {"moon": 1}}
    )
    began = time.monotonic()
    with anyio.fail_after(30), pytest.raises(InitializationFailedError, match="ready_timeout"):
        await Supervisor([spec], backend=RayBackend(), kill_timeout=1).run()
    assert time.monotonic() - began < 10
    warnings = [r.getMessage() for r in caplog.records if "has not placed it" in r.getMessage()]
    assert warnings == [
        "child 'nowhere': Ray has not placed it after 0.2 s (placement {'resources': "
        "{'moon': 1}}): no node of the cluster has that much; it waits until one joins"
    ]


async def test_a_tree_of_subtrees_runs_on_the_cluster(ray_cluster: None) -> None:
    """A root with only nested supervisors: they inherit its backend and its log server."""
    inner = Supervisor(
        [ChildSpec("add", f"{B}:add", args=(2, 2), restart="transient")],
        name="inner",
        restart="transient",
        significant=True,
    )
    with anyio.fail_after(60):
        await Supervisor([inner], backend=RayBackend()).run()
    assert inner.backend is not None
    assert isinstance(inner.backend, RayBackend)


async def test_an_unreachable_address_fails_at_once() -> None:
    """ray.init would retry for minutes: a closed port is one clear error, now."""
    from gymnasiarch.ray_backend import _check_reachable

    with anyio.fail_after(10), pytest.raises(InitializationFailedError, match="cannot reach"):
        await _check_reachable("127.0.0.1:1")


async def test_without_ray_the_backend_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ray installed: one clear error naming the extra, and nothing starts."""
    monkeypatch.setitem(sys.modules, "ray", None)
    spec = ChildSpec("a", f"{B}:add", args=(1, 1))
    with (
        anyio.fail_after(10),
        pytest.raises(InitializationFailedError, match=r"gymnasiarch\[ray\]"),
    ):
        await Supervisor([spec], backend=RayBackend()).run()


def test_backends_share_one_cluster_which_ends_with_the_last() -> None:
    """Two RayBackend()s in one process: the first to end leaves the other's children running."""
    seen = _scenario("two_backends")
    assert seen == {
        "first": {"quick": 1},
        "second_state": "running",
        "second_exit": "killed by SIGTERM",
        "after": False,
    }


async def test_stop_ends_a_start_that_waits_for_room(ray_cluster: None) -> None:
    """stop() (or `gymnasiarch stop`) ends a start still waiting for Ray to place a child."""
    spec = ChildSpec("nowhere", f"{B}:add", args=(1, 1), placement={"resources": {"moon": 1}})
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False, kill_timeout=1)

    async def stop_while_it_waits() -> None:
        await anyio.sleep(0.5)  # the start is waiting by then
        sup.stop()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(stop_while_it_waits)
            results = await sup.run()
    assert results == {}


def test_gymnasiarch_run_supervises_a_ray_tree_file(tmp_path: Path) -> None:
    """`backend = "ray"` in a tree file: the CLI starts a local cluster, runs, stops it."""
    (tmp_path / "simmod.py").write_text(
        "import logging\n\n"
        "def work(n):\n"
        "    logging.getLogger('sim').info('working on %d', n)\n"
        "    print('a printed line')\n"
        "    return n * 2\n"
    )
    tree = tmp_path / "tree.toml"
    tree.write_text(
        '[supervisor]\nbackend = "ray"\n\n'
        '[[child]]\nname = "worker"\ntarget = "simmod:work"\nparams = { n = 21 }\n'
        'restart = "transient"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ENABLE")}
    done = subprocess.run(
        [sys.executable, "-m", "gymnasiarch", "run", "--log-format", "json", str(tree)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _header, *rows = done.stdout.splitlines()
    assert rows[0].split()[0] == "worker"
    assert rows[0].split()[-1] == "42"
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    said = {(e.get("child"), e["event"]) for e in events}
    assert ("worker", "working on 21") in said
    assert ("worker", "a printed line") in said
    assert not [key for e in events for key in e if key.startswith("_")]
