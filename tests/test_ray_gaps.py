"""Three things a program on a Ray node gets as on one machine: ports, usage, no escapees.

- ``ports=``: picked by the child's actor, free on the program's node,
  filled in there, kept across restarts; published with the node's address.
- ``ChildInfo.memory`` / ``cpu_seconds``: read on the node, fetched in the
  background while someone asks, never with a blocking call in a row.
- A program's ``setsid`` daemon is stopped with it: the node's shared fork
  server is the subreaper of its children's orphans.

They use the Ray tests' cluster and leak checks (see test_ray_programs.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import urllib.request
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

import ray_fixtures  # noqa: E402
import test_ray_programs  # noqa: E402
from gymnasiarch import Backoff, ChildSpec, RayBackend, Supervisor, ready  # noqa: E402
from gymnasiarch._backends.base import Launch  # noqa: E402
from gymnasiarch._backends.ray_host import with_ports  # noqa: E402
from gymnasiarch._ports import HANDED_OUT, pick_ports  # noqa: E402
from gymnasiarch._process import subreaper  # noqa: E402
from gymnasiarch.ray_backend import RayChildRun  # noqa: E402
from test_ray import (  # noqa: E402, F401 - its leak checks are autouse here too
    _wait_gone,
    no_fd_left_open,
    no_process_left_behind,
)
from test_ray_programs import _cmdline, _next  # noqa: E402

# The Ray test modules' cluster (or the session's), test_ray_programs' leak check.
ray_cluster = ray_fixtures.ray_cluster
programs = test_ray_programs.programs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def _environ(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")


def _get(host: str, port: int) -> int:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as page:
        return int(page.status)


def _web(**changes: Any) -> ChildSpec:
    fields: dict[str, Any] = {
        "command": [sys.executable, "-m", "http.server", "{api}", "--bind", "0.0.0.0"],
        "ports": ["api"],
        "env": {"API_PORT": "{api}"},
        "ready": ready.Port("{api}"),
        "ready_timeout": 30,
        "stop_signal": "SIGINT",
        **changes,
    }
    return ChildSpec("web", **fields)


# -- 1. ports= on Ray ---------------------------------------------------------------------


async def test_ports_are_picked_on_the_node_filled_there_and_kept_across_restarts(
    ray_cluster: None, programs: list[int]
) -> None:
    """{api} in argv, env and ready.Port is the node's port; the value names the node."""
    handed_out = set(HANDED_OUT)
    sup = Supervisor([_web()], backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(90):
        async with sup, sup.events(replay=True) as events:
            event = await _next(events, "ready", "web")
            row = sup.child_info("web")
            assert row.pid is not None
            programs.append(row.pid)
            port = row.ports["api"]
            status = await anyio.to_thread.run_sync(_get, event.value["host"], port)
            argv, environ = _cmdline(row.pid), _environ(row.pid)
            # A restart on the same node (the same actor) asks for the same port.
            os.kill(row.pid, signal.SIGKILL)
            again = await _next(events, "ready", "web")
            second = sup.child_info("web")
            assert second.pid is not None
            programs.append(second.pid)
            status_again = await anyio.to_thread.run_sync(_get, again.value["host"], port)
    node_ip = ray.util.get_node_ip_address()
    assert event.value == {"host": node_ip, "api": port}
    assert row.ready_value == event.value
    assert row.ports == {"api": port}
    assert argv[3] == str(port)
    assert f"API_PORT={port}" in environ
    assert status == 200
    assert again.value == event.value
    assert (second.restarts, second.ports) == (1, {"api": port})
    assert second.pid != row.pid
    assert status_again == 200
    # The driver picked nothing (its picks are for programs on its machine).
    assert set(HANDED_OUT) == handed_out


async def test_a_port_taken_on_the_node_during_the_backoff_is_replaced_and_published(
    ray_cluster: None, programs: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """As on one machine: the actor tests the kept port, picks anew; the driver warns, publishes."""
    slow = Backoff(base=0.5, cap=0.5, jitter=0)
    sup = Supervisor([_web()], backend=RayBackend(), backoff=slow, handle_signals=False)
    with socket.socket() as taker, anyio.fail_after(90):
        async with sup, sup.events(replay=True) as events:
            event = await _next(events, "ready", "web")
            row = sup.child_info("web")
            assert row.pid is not None
            programs.append(row.pid)
            first = row.ports["api"]
            os.kill(row.pid, signal.SIGKILL)
            await _next(events, "restarting", "web")
            taker.bind(("0.0.0.0", first))  # the cluster's one node is this machine
            taker.listen()
            again = await _next(events, "ready", "web")
            second = sup.child_info("web")
            assert second.pid is not None
            programs.append(second.pid)
            argv = _cmdline(second.pid)
            waited = await sup.wait_ready("web")
            status = await anyio.to_thread.run_sync(_get, again.value["host"], second.ports["api"])
    port = second.ports["api"]
    assert port != first
    assert again.value == waited == second.ready_value == {"host": event.value["host"], "api": port}
    assert argv[3] == str(port)
    assert status == 200
    moved = [
        r.getMessage() for r in caplog.records if "was taken while it was down" in r.getMessage()
    ]
    assert moved == [
        f"child 'web': its port 'api' ({first}) was taken while it was down; "
        f"it gets port {port} now"
    ]


async def test_a_program_with_ports_and_no_ready_kind_is_ready_with_its_address(
    ray_cluster: None, programs: list[int]
) -> None:
    """Without a ready kind, the ready value is the ports at its start, with the node's address."""
    spec = ChildSpec(
        "pinger", command=["sleep", "1000"], env={"A": "{a}", "B": "{b}"}, ports=["a", "b"]
    )
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup:
            value = await sup.wait_ready("pinger")
            row = sup.child_info("pinger")
            assert row.pid is not None
            programs.append(row.pid)
    assert value == {"host": ray.util.get_node_ip_address(), **row.ports}
    assert set(row.ports) == {"a", "b"}
    assert row.ports["a"] != row.ports["b"]


def test_a_kept_port_is_asked_for_again_and_replaced_only_when_taken() -> None:
    """pick_ports (the actor's too) keeps a free port, replaces a taken one; names differ."""
    fresh = pick_ports({"a": 0, "b": 0})
    assert fresh["a"] != fresh["b"]
    assert pick_ports(fresh) == fresh  # free still: kept
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", fresh["a"]))
        taken.listen()
        moved = pick_ports(fresh)
    assert moved["a"] != fresh["a"]
    assert moved["b"] == fresh["b"]
    HANDED_OUT.difference_update({*fresh.values(), *moved.values()})


def test_the_picked_ports_fill_the_launch_and_leave_other_braces() -> None:
    """Filled on the node as the supervisor fills them on one machine: only declared names."""
    launch = Launch(
        "web",
        None,
        (),
        {},
        {},
        None,
        0,
        command=("serve", "--port={api}", "{other}"),
        env={"J": '{"port": "{api}"}', "GONE": None},
        ready=ready.Line(r"listening on {api}"),
        node_ports={"api": 0},
    )
    filled = with_ports(launch, {"api": 4321})
    assert filled.command == ("serve", "--port=4321", "{other}")
    assert filled.env == {"J": '{"port": "4321"}', "GONE": None}
    assert filled.ready == ready.Line("listening on 4321")
    assert filled.node_ports is None


# -- 2. memory and CPU time of a child on Ray ----------------------------------------------

_HOG = "import time; hog = bytearray(64 << 20); print('hogging', flush=True); time.sleep(1000)"


async def test_memory_and_cpu_seconds_of_a_ray_child_are_fetched_while_someone_asks(
    ray_cluster: None, programs: list[int]
) -> None:
    """A row never waits for the node: it shows the last figure, fetched when it asked."""
    spec = ChildSpec("hog", command=[sys.executable, "-c", _HOG], ready=ready.Line("hogging"))
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup:
            await sup.wait_ready("hog")
            run = sup._children["hog"].run
            assert isinstance(run, RayChildRun)
            first = sup.child_info("hog")  # nothing fetched yet: None, and a fetch begins
            assert first.pid is not None
            programs.append(first.pid)
            fetched = await anyio.to_thread.run_sync(run._usage_fetched.wait, 30)
            second = sup.child_info("hog")
            third = sup.child_info("hog")  # fresh: no second fetch
            asked_again = run._usage_asked
    assert (first.memory, first.cpu_seconds) == (None, None)
    assert fetched
    assert isinstance(second.memory, int)
    assert second.memory >= 64 << 20
    assert isinstance(second.cpu_seconds, float)
    assert second.cpu_seconds >= 0
    assert (third.memory, third.cpu_seconds) == (second.memory, second.cpu_seconds)
    assert not asked_again


# -- 3. a program's escaped daemons on a Ray node ------------------------------------------

# The daemon tells its pid (kept by the exec) once setsid has run: `$!` is there before the
# daemon has left the group, and the test could read the group it had not yet left.
_FORMS = {
    # The shell waits: the daemon is its child, outside the group, until the stop.
    "setsid cmd &": "setsid sh -c 'echo $$ > {file}.new && mv {file}.new {file}; "
    "exec sleep 1000' </dev/null >/dev/null 2>&1 &",
    # A double fork: the middle process (the command substitution's) is gone, waited for,
    # when the daemon's pid it carried is written; the daemon an orphan.
    "double fork": "echo $(setsid sh -c 'echo $$; exec sleep 1000 >/dev/null' "
    "</dev/null 2>/dev/null &) > {file}.new && mv {file}.new {file};",
}


@pytest.mark.parametrize("form", list(_FORMS))
async def test_a_programs_setsid_daemon_is_stopped_with_it_on_its_node(
    ray_cluster: None, programs: list[int], tmp_path: Path, form: str
) -> None:
    """The daemon that left the program's group ends with the program, as on one machine."""
    file = tmp_path / "daemon.pid"
    script = f"{_FORMS[form].format(file=file)} sleep 1000"
    spec = ChildSpec("daemonizer", command=["sh", "-c", script], ready=ready.Path(str(file)))
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
    daemon = None
    try:
        with anyio.fail_after(60):
            async with sup:
                await sup.wait_ready("daemonizer")
                row = sup.child_info("daemonizer")
                assert row.pid is not None
                programs.append(row.pid)
                daemon = int(file.read_text())
                info = subreaper.stat(daemon)
                assert info is not None
                assert info.pgid == daemon  # it left the program's group (and session)
                assert info.ppid != 1  # its orphan went to a subreaper, not to init
        left = await anyio.to_thread.run_sync(_wait_gone, [daemon], 10)
    finally:
        if daemon is not None and subreaper.stat(daemon) is not None:
            os.kill(daemon, signal.SIGKILL)  # (a failed test leaves nothing either)
    assert left == []
