"""Command children (external programs) on the Ray backend.

Each program runs under its child's actor, through the same process layer
as a Python child there; its readiness is checked by that actor, on the
program's node (its process group's sockets, its notify socket, its output
lines), and a port's ready value is an address the driver reaches.

They use the Ray tests' cluster (``test_ray.py``) and their leak checks.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import textwrap
import urllib.request
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

import ray_fixtures  # noqa: E402
from gymnasiarch import ChildSpec, RayBackend, Supervisor, ready  # noqa: E402
from gymnasiarch.exceptions import InitializationFailedError  # noqa: E402
from gymnasiarch.ray_backend import RayChildRun  # noqa: E402
from test_ray import (  # noqa: E402, F401 - its leak checks are autouse here too
    HERE,
    _wait_gone,
    no_fd_left_open,
    no_process_left_behind,
)

# The Ray test modules' cluster: test_ray's session one where it runs already.
# (Imported as it is, test_ray's session fixture would start a second cluster
# in a session that runs both files: a driver has one.)
ray_cluster = ray_fixtures.ray_cluster


@pytest.fixture
def programs() -> Iterator[list[int]]:
    """The pids of a test's programs (it adds them); none may outlive the test.

    test_ray's check knows Python children and actors by their titles, and
    looks among this process's descendants: a program has its own title,
    and is a child of the node's fork server, which lives in a session of
    its own.
    """
    pids: list[int] = []
    yield pids
    left = _wait_gone(pids, timeout=10)
    if left:
        pytest.fail(f"programs outlived the test: {left}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


async def _next(events: Any, kind: str, child: str) -> Any:
    async for event in events:
        if event.kind == kind and event.child == child:
            return event
    raise AssertionError(f"no {kind} event of {child}")


async def test_a_sleep_program_runs_under_its_actor_and_is_stopped(
    ray_cluster: None, programs: list[int]
) -> None:
    """`sleep` runs on the node as itself; stop sends its stop_signal there, then SIGKILL."""
    specs = [
        ChildSpec("sleeper", command=["sleep", "1000"], stop_signal="SIGINT", shutdown=10),
        ChildSpec(
            "stubborn", command=["sh", "-c", "trap '' TERM; sleep 1000 & wait"], shutdown=0.5
        ),
    ]
    sup = Supervisor(specs, backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup:
            rows = {row.name: row for row in sup.walk()}
            programs.extend(row.pid for row in rows.values() if row.pid is not None)
            run = sup._children["sleeper"].run
            assert isinstance(run, RayChildRun)
            assert run.node is not None
            assert rows["sleeper"].on_this_machine  # the test's cluster is this machine
            assert _cmdline(rows["sleeper"].pid) == ["sleep", "1000"]  # its own title
            await sup.terminate_child("sleeper")
            await sup.terminate_child("stubborn")
            rows = {row.name: row for row in sup.walk()}
    assert rows["sleeper"].last_exit is not None
    assert rows["sleeper"].last_exit.signum == signal.SIGINT  # its stop_signal
    assert rows["stubborn"].last_exit is not None
    assert rows["stubborn"].last_exit.signum == signal.SIGKILL  # after its grace


async def test_a_program_killed_with_sigkill_is_restarted_on_its_node(
    ray_cluster: None, programs: list[int]
) -> None:
    """SIGKILL of a command child on its node → a crash; restarted in its actor, ready again."""
    spec = ChildSpec("sleeper", command=["sleep", "1000"], shutdown=1)
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup, sup.events() as events:
            first = sup.child_info("sleeper")
            actor = sup._children["sleeper"].run._actor  # type: ignore[union-attr]
            os.kill(first.pid, signal.SIGKILL)  # the test's cluster is on this machine
            exited = await _next(events, "exited", "sleeper")
            await _next(events, "ready", "sleeper")
            again = sup.child_info("sleeper")
            programs.append(again.pid)
            assert sup._children["sleeper"].run._actor is actor  # type: ignore[union-attr]
    assert exited.signum == signal.SIGKILL
    assert not exited.requested
    assert (again.restarts, again.state) == (1, "running")
    assert again.pid != first.pid


async def test_http_server_with_ready_port_publishes_an_address_the_driver_reaches(
    ray_cluster: None, tmp_path: Path, programs: list[int]
) -> None:
    """ready.Port is checked on the node; its value is {"host": node address, "port": port}."""
    (tmp_path / "hello.txt").write_text("served from the cluster")
    port = _free_port()
    spec = ChildSpec(
        "web",
        command=[sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0"],
        cwd=str(tmp_path),
        ready=ready.Port(port),
        ready_timeout=30,
    )
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup, sup.events(replay=True) as events:
            event = await _next(events, "ready", "web")
            row = sup.child_info("web")
            programs.append(row.pid)
            url = f"http://{event.value['host']}:{event.value['port']}/hello.txt"
            body = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url).read())
    # A wildcard socket is published at the node's address, as Ray knows it.
    assert event.value == {"host": ray.util.get_node_ip_address(), "port": port}
    assert row.ready_value == event.value
    assert body == b"served from the cluster"


NOTIFY_SCRIPT = textwrap.dedent(
    """
    import os, socket, sys, time
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.connect(os.environ["NOTIFY_SOCKET"])
    time.sleep(0.2)
    sock.send(b"STATUS=warming up")
    sock.send(b"READY=1\\nSTATUS=serving")
    time.sleep(0.1)
    sock.send(b"STATUS=busy with 3 clients")
    time.sleep(1000)
    """
)


async def test_a_notify_speaking_program_gets_ready_and_its_status_shows(
    ray_cluster: None, programs: list[int]
) -> None:
    """READY=1 is heard on the program's node; STATUS lines after it reach the child's row."""
    spec = ChildSpec(
        "notifier",
        command=[sys.executable, "-c", NOTIFY_SCRIPT],
        ready=ready.Notify(),
        ready_timeout=30,
        shutdown=1,
    )
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup, sup.events(replay=True) as events:
            event = await _next(events, "ready", "notifier")
            programs.append(event.pid)
            # The later STATUS comes on its own (the run follows it); wait for it.
            busy = anyio.Event()
            run = sup._children["notifier"].run
            assert run is not None
            assert run.on_notify_status is not None
            note = run.on_notify_status

            def noted(status: str | None) -> None:
                note(status)
                if status == "busy with 3 clients":
                    busy.set()

            run.on_notify_status = noted
            if sup.child_info("notifier").notify_status != "busy with 3 clients":
                await busy.wait()
            during = sup.child_info("notifier").notify_status
    assert event.value == "serving"  # the STATUS as READY=1 came
    assert during == "busy with 3 clients"


async def test_ready_line_and_path_are_checked_on_the_programs_node(
    ray_cluster: None, tmp_path: Path, programs: list[int]
) -> None:
    """ready.Line matches the program's output there; ready.Path sees its file appear there."""
    marker = tmp_path / "up"
    specs = [
        ChildSpec(
            "liner",
            command=[
                "sh",
                "-c",
                "echo starting; sleep 0.2; echo 'listening on 1234' >&2; exec sleep 1000",
            ],
            ready=ready.Line(r"listening on \d+"),
            ready_timeout=30,
        ),
        ChildSpec(
            "pather",
            command=["sh", "-c", f"sleep 0.2; touch {marker}; exec sleep 1000"],
            ready=ready.Path(str(marker)),
            ready_timeout=30,
        ),
    ]
    sup = Supervisor(specs, backend=RayBackend(), handle_signals=False)
    with anyio.fail_after(60):
        async with sup:
            values = {row.name: row.ready_value for row in sup.walk()}
            programs.extend(row.pid for row in sup.walk() if row.pid is not None)
    assert values == {"liner": "listening on 1234", "pather": str(marker)}


async def test_a_missing_program_on_the_cluster_fails_the_start_naming_it(
    ray_cluster: None,
) -> None:
    """A program its node cannot find → InitializationFailedError naming it, no restarts."""
    spec = ChildSpec("ghost", command=["gymnasiarch-no-such-program", "--now"])
    with anyio.fail_after(60), pytest.raises(InitializationFailedError) as info:
        await Supervisor([spec], backend=RayBackend(), handle_signals=False).run()
    assert "gymnasiarch-no-such-program" in str(info.value)
    assert "No such file or directory" in str(info.value)


async def test_a_programs_output_lines_arrive_as_records_of_its_child(
    ray_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    """stdout and stderr lines of a program on the cluster → records of gymnasiarch.child.<name>."""
    caplog.set_level(logging.INFO, "gymnasiarch.child")
    spec = ChildSpec(
        "talker",
        command=["sh", "-c", "echo hello from the node; echo something is wrong >&2"],
        restart="transient",
    )
    with anyio.fail_after(60):
        results = await Supervisor([spec], backend=RayBackend(), handle_signals=False).run()
    assert results == {"talker": None}
    said = [
        (r.name, r.getMessage(), r.stream)
        for r in caplog.records
        if getattr(r, "child", "") == "talker"
    ]
    assert ("gymnasiarch.child.talker", "hello from the node", "stdout") in said
    assert ("gymnasiarch.child.talker", "something is wrong", "stderr") in said


def test_a_program_on_the_cluster_under_trio(ray_cluster: None, programs: list[int]) -> None:
    """Readiness from the node and the STATUS a program sent as it ended, under trio."""
    script = NOTIFY_SCRIPT.replace("time.sleep(1000)", 'sock.send(b"STOPPING=1\\nSTATUS=done")')

    async def tree() -> tuple[Any, Any]:
        spec = ChildSpec(
            "notifier",
            command=[sys.executable, "-c", script],
            ready=ready.Notify(),
            ready_timeout=30,
            restart="transient",
        )
        sup = Supervisor([spec], backend=RayBackend(), handle_signals=False)
        with anyio.fail_after(60):
            async with sup:
                row = sup.child_info("notifier")
                if row.pid is not None:
                    programs.append(row.pid)
                await sup.wait()
            # Its last word, sent just before it exited, is kept.
            return row.ready_value, sup.child_info("notifier").notify_status

    value, status = anyio.run(tree, backend="trio")
    assert value == "serving"
    assert status == "done"
