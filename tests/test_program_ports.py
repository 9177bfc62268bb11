"""Ports chosen by the supervisor, and waiting for a child (issue 16): real programs, real signals.

The program is Python's own ``http.server``: ``{http}`` in its command is the
port the supervisor picked, ``ready.Port("{http}")`` waits until it listens
there (read from the kernel's tables), and a GET shows it serves.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup, TaskStatus

from gymnasiarch import Backoff, ChildSpec, FromReady, Supervisor, _platform, _ports, ready
from gymnasiarch._cli.control import status_rows
from gymnasiarch._ports import (
    HANDED_OUT,
    fill,
    fill_command,
    forget,
    pick_ports,
    warn_loopback,
)
from gymnasiarch.cli import _status_table
from gymnasiarch.exceptions import (
    ChildEndedError,
    FieldError,
    FieldTypeError,
    FieldValueError,
    InitializationFailedError,
    PrematureTaskDeathError,
)
from gymnasiarch.testing import kill_child, wait_for
from gymnasiarch.treefile import TreeFileError, load_tree

TESTS = Path(__file__).parent
B = "targets.basic"
T = "targets.tree"


def web(name: str = "web", **changes: Any) -> ChildSpec:
    """``http.server`` on a port the supervisor picks, ready once it listens there."""
    fields: dict[str, Any] = {
        "command": [sys.executable, "-m", "http.server", "{http}", "--bind", "127.0.0.1"],
        "ports": ["http"],
        "ready": ready.Port("{http}"),
        "ready_timeout": 20,
        "stop_signal": "SIGINT",
        **changes,
    }
    return ChildSpec(name, **fields)


def get(port: int) -> int:
    """The status of ``GET /`` on 127.0.0.1:*port* (a client of the program, not a probe)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
        return int(page.status)


def proc_strings(pid: int, what: str) -> list[str]:
    """A process's NUL-separated ``/proc/PID/cmdline`` or ``environ``."""
    return Path(f"/proc/{pid}/{what}").read_bytes().decode().split("\0")


# -- ports ------------------------------------------------------------------------------


async def test_a_picked_port_fills_the_command_the_env_and_the_readiness(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``{http}`` becomes the port in argv, in env values and in ready.Port; ``{{x}}``, ``{x}``."""
    spec = web(
        env={"WEB_PORT": "{http}", "WEB_JSON": '{"port": "{http}", "other": "{{nope}}"}'},
    )
    with anyio.fail_after(30):
        async with Supervisor([spec]) as sup:
            value = await sup.wait_ready("web")
            row = sup.child_info("web")
            assert row.pid is not None
            argv = proc_strings(row.pid, "cmdline")
            environ = proc_strings(row.pid, "environ")
            status = await anyio.to_thread.run_sync(get, value["http"])
            walked = {r.path: r for r in sup.walk()}
            (direct,) = sup.which_children()
            rows = status_rows(sup)
            sup.stop()
    port = value["http"]
    assert isinstance(port, int)
    assert 1024 <= port <= 65535
    assert value == {"http": port} == row.ports == row.ready_value
    assert walked["web"].ports == direct.ports == {"http": port}
    assert argv[:-1] == [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    assert f"WEB_PORT={port}" in environ
    # A port's placeholder is filled, JSON's braces stay, the escape {{nope}} is the text {nope}.
    assert f'WEB_JSON={{"port": "{port}", "other": "{{nope}}"}}' in environ
    assert status == 200
    assert rows[0]["ports"] == {"http": port}
    _status_table(rows)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-3:] == ["ports", "ready", "value"]
    assert table[1].split()[-2:] == [f"http={port}", f'{{"http":{port}}}']


async def test_the_port_is_kept_across_a_restart_and_served_again() -> None:
    """SIGKILL the server: it is restarted on the same port (not re-picked) and serves there."""
    with anyio.fail_after(40):
        async with Supervisor([web()]) as sup:
            first = await sup.wait_ready("web")
            old_pid = sup.child_info("web").pid
            with sup.events() as events:
                await kill_child(sup, "web")
                await wait_for(sup, "exited", child="web", events=events)
                again = await sup.wait_ready("web")
                ready_event = await wait_for(sup, "ready", child="web", events=events)
                row = sup.child_info("web")
                status = await anyio.to_thread.run_sync(get, again["http"])
                sup.stop()
    assert again == first == row.ports
    assert row.pid != old_pid
    assert row.restarts == 1
    assert status == 200
    # The ready event of the restarted run, with its path and the ports as its value.
    assert (ready_event.path, ready_event.restarts, ready_event.value) == ("web", 1, first)


async def test_a_sibling_gets_the_port_through_from_ready() -> None:
    """``FromReady("web", key="http")``: the port, for a Python child that connects to it."""
    client = ChildSpec(
        "client",
        f"{T}:connect_to",
        kwargs={"port": FromReady("web", key="http")},
        restart="transient",
        significant=True,  # its end ends the tree
    )
    with anyio.fail_after(30):
        sup = Supervisor([web(), client])
        results = await sup.run()
    assert results["client"] == sup.child_info("web").ports["http"]


async def test_a_program_gets_a_siblings_ready_value_in_its_argv_and_env(tmp_path: Path) -> None:
    """``FromReady`` as a program's argument and env value: the value's text, at each start."""
    seen = tmp_path / "seen"
    client = ChildSpec(
        "client",
        command=[
            "sh",
            "-c",
            'echo "$1 $WEB_PORT $WEB_HOST" > "$2.new" && mv "$2.new" "$2"; exec sleep 100',
            "sh",
            FromReady("web", key="http"),
            str(seen),
        ],
        env={"WEB_PORT": FromReady("web", key="http"), "WEB_HOST": "127.0.0.1"},
        ready=ready.Path(str(seen)),
        ready_timeout=20,
    )
    with anyio.fail_after(30):
        async with Supervisor([web(), client], strategy="rest_for_one") as sup:
            await sup.wait_ready("client")
            port = sup.child_info("web").ports["http"]
            first = seen.read_text().split()
            seen.unlink()
            with sup.events() as events:
                web_pid = sup.child_info("web").pid
                assert web_pid is not None
                os.kill(web_pid, signal.SIGKILL)  # rest_for_one: the client starts again after it
                async for event in events:
                    if (event.kind, event.child, event.restarts) == ("ready", "client", 1):
                        break
            again = seen.read_text().split()
            sup.stop()
    assert first == again == [str(port), str(port), "127.0.0.1"]


async def test_a_value_with_braces_is_text_in_a_program_with_ports() -> None:
    """A sibling's value that looks like a placeholder is not filled with the program's port."""
    children = [
        ChildSpec("env", f"{T}:announce", args=("{http} {{x}}",), ready_timeout=10),
        web(
            "client",
            command=[sys.executable, "-m", "http.server", "{http}", "--bind", "127.0.0.1"],
            env={"SEEN": FromReady("env")},
        ),
    ]
    with anyio.fail_after(30):
        async with Supervisor(children) as sup:
            await sup.wait_ready("client")
            pid = sup.child_info("client").pid
            assert pid is not None
            environ = proc_strings(pid, "environ")
            sup.stop()
    assert "SEEN={http} {{x}}" in environ


async def test_a_program_given_a_value_that_is_not_text_is_told_to_pick_a_key() -> None:
    client = ChildSpec("client", command=["echo", FromReady("web")], restart="transient")
    with anyio.fail_after(30), pytest.raises(InitializationFailedError) as caught:
        await Supervisor([web(), client]).run()
    message = str(caught.value)
    assert "child 'client': command[1] is FromReady(source='web', key=None)" in message
    assert "whose value is dict" in message
    assert "key=" in message


def test_a_program_itself_cannot_be_a_ready_value() -> None:
    with pytest.raises(TypeError, match="only its arguments may be a sibling's ready value"):
        ChildSpec("client", command=[FromReady("web"), "x"])


async def test_each_port_name_gets_its_own_port() -> None:
    spec = ChildSpec(
        "two",
        command=["sh", "-c", 'echo "a={a} b={b}"; exec sleep 100'],
        ports=["a", "b"],
        ready=ready.Line(r"a=\d+ b=\d+"),
        ready_timeout=10,
        shutdown=1,
    )
    with anyio.fail_after(20):
        async with Supervisor([spec]) as sup:
            ports = await sup.wait_ready("two")
            sup.stop()
    assert set(ports) == {"a", "b"}
    assert ports["a"] != ports["b"]


async def test_placeholders_fill_a_line_and_a_path(tmp_path: Path) -> None:
    """ready.Line and ready.Path may name the ports too: the filled-in text is awaited."""
    said = ChildSpec(
        "said",
        command=["sh", "-c", "echo 'serving on 127.0.0.1:{p}'; exec sleep 100"],
        ports=["p"],
        ready=ready.Line(r"127\.0\.0\.1:{p}$"),
        ready_timeout=10,
        shutdown=1,
    )
    made = ChildSpec(
        "made",
        command=["sh", "-c", f"touch {tmp_path}/sock-{{q}}; exec sleep 100"],
        ports=["q"],
        ready=ready.Path(f"{tmp_path}/sock-{{q}}"),
        ready_timeout=10,
        shutdown=1,
    )
    with anyio.fail_after(20):
        async with Supervisor([said, made]) as sup:
            p = (await sup.wait_ready("said"))["p"]
            q = (await sup.wait_ready("made"))["q"]
            sup.stop()
    assert (tmp_path / f"sock-{q}").exists()
    assert p != q


def _ephemeral() -> tuple[int, int]:
    """The kernel's ephemeral range, read here (not through the code under test)."""
    first, last = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(first), int(last)


def _moved(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if "was taken while it was down" in r.getMessage()
    ]


def test_picked_ports_lie_outside_the_ephemeral_range() -> None:
    """Where connect() takes its local ports, a pick never looks: no client takes one meanwhile."""
    first, last = _ephemeral()
    picked = pick_ports({f"p{i}": 0 for i in range(200)})
    try:
        assert len(set(picked.values())) == 200
        for port in picked.values():
            assert 1024 <= port <= 65535
            assert not first <= port <= last
        assert set(picked.values()) <= HANDED_OUT
        assert pick_ports(picked) == picked  # free still: kept
    finally:
        forget(picked.values())
    assert not set(picked.values()) & HANDED_OUT


@pytest.mark.parametrize("holder", ["client", "listener"])
async def test_a_kept_port_taken_while_the_child_is_down_is_replaced_and_published(
    holder: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone takes the port during the backoff: the restart gets a new port, and says so.

    ``client``: a connection whose local port is the kept one (the
    scenario found in review: before, every restart failed to bind it until the
    supervisor gave up). ``listener``: another server took it.
    """
    slow = Backoff(base=0.5, cap=0.5, jitter=0)
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen()
    taker = socket.socket()
    with peer, taker, anyio.fail_after(40):
        async with Supervisor([web()], backoff=slow, max_restarts=3, max_seconds=30) as sup:
            first = (await sup.wait_ready("web"))["http"]
            with sup.events() as events:
                await kill_child(sup, "web")
                await wait_for(sup, "restarting", child="web", events=events)
                taker.bind(("127.0.0.1", first))  # within the backoff of 0.5 s
                if holder == "client":
                    taker.connect(peer.getsockname())
                else:
                    taker.listen()
                again = await sup.wait_ready("web")
                ready_event = await wait_for(sup, "ready", child="web", events=events)
            row = sup.child_info("web")
            assert row.pid is not None
            argv = proc_strings(row.pid, "cmdline")
            status = await anyio.to_thread.run_sync(get, again["http"])
            sup.stop()
    port = again["http"]
    assert port != first
    assert again == row.ports == row.ready_value == ready_event.value == {"http": port}
    assert argv[3] == str(port)
    assert (row.restarts, status) == (1, 200)
    first_, last = _ephemeral()
    assert not first_ <= port <= last
    assert _moved(caplog) == [
        f"child 'web': its port 'http' ({first}) was taken while it was down; "
        f"it gets port {port} now"
    ]


async def test_a_kept_port_still_free_is_kept_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tested again before the restart, found free: the same port, and nothing said."""
    with anyio.fail_after(40):
        async with Supervisor([web()]) as sup:
            first = await sup.wait_ready("web")
            with sup.events() as events:
                await kill_child(sup, "web")
                await wait_for(sup, "exited", child="web", events=events)
                again = await sup.wait_ready("web")
            sup.stop()
    assert again == first
    assert _moved(caplog) == []


async def test_a_childs_ports_are_forgotten_when_it_is_retired() -> None:
    """HANDED_OUT holds a port while its child may run again, not for the process's life."""
    with anyio.fail_after(30):
        async with Supervisor([web()]) as sup:
            port = (await sup.wait_ready("web"))["http"]
            during = port in HANDED_OUT
            sup.stop()
    assert during
    assert port not in HANDED_OUT


async def test_a_pick_that_finds_every_candidate_taken_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More candidates than tries (two, one try), each held by a listener: a start error.

    (Where the tries cover every candidate, the kernel picks instead:
    ``test_ports_range.py``.)
    """
    monkeypatch.setattr(_platform, "ephemeral_port_range", lambda: (1024, 65533))
    monkeypatch.setattr(_ports, "ATTEMPTS", 1)
    with socket.socket() as held, socket.socket() as other:
        for sock, port in ((held, 65535), (other, 65534)):
            # A test before may have left the port in TIME_WAIT (a program there).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
        with pytest.raises(OSError, match="1 ports tried"):
            pick_ports({"a": 0})
        with (
            anyio.fail_after(30),
            pytest.raises(
                InitializationFailedError, match=r"'web' could not be started: .*no free TCP port"
            ),
        ):
            async with Supervisor([web()]):
                pass


def test_the_loopback_warning_is_for_a_program_on_another_machine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Ray node's 127.0.0.1 is not the driver's: warned; the same address here is fine."""
    log = logging.getLogger("gymnasiarch.supervisor")
    there = SimpleNamespace(on_this_machine=False, node_ip="10.0.0.5")
    here = SimpleNamespace(on_this_machine=True, node_ip="10.0.0.5")
    warn_loopback(log, "web", there, {"host": "127.0.0.1", "port": 8080})
    warn_loopback(log, "web", there, {"host": "10.0.0.5", "port": 8080})
    warn_loopback(log, "web", here, {"host": "127.0.0.1", "port": 8080})
    warn_loopback(log, "web", there, "/run/web.sock")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "child 'web' listens on 127.0.0.1 port 8080 of node 10.0.0.5 only"
    )


@pytest.mark.parametrize(
    ("changes", "kind", "field", "message"),
    [
        ({"ready": ready.Port("{api}")}, FieldValueError, "ready", "{api} is not one of"),
        ({"ports": ["http", "http"]}, FieldValueError, "ports", "duplicate port name 'http'"),
        ({"ports": ["1st"]}, FieldValueError, "ports", "identifier"),
        ({"ports": ["a-b"]}, FieldValueError, "ports", "identifier"),
        ({"ports": "http"}, FieldTypeError, "ports", "list of names"),
        ({"ports": [8080]}, FieldTypeError, "ports", "names (strings)"),
        # A typo anywhere a port is filled in, not only in ready.Port.
        (
            {"command": ["python3", "-m", "http.server", "{htp}"]},
            FieldValueError,
            "command[3]",
            "{htp} is not one of the child's ports (declared: 'http'); add 'htp' to ports, "
            "or write {{htp}} for the text {htp}",
        ),
        ({"env": {"PORT": "{htp}"}}, FieldValueError, "env.PORT", "{htp} is not one of"),
        ({"ready": ready.Path("/tmp/s-{htp}")}, FieldValueError, "ready", "{htp} is not one of"),
        ({"ready": ready.Line("on {htp}$")}, FieldValueError, "ready", "{htp} is not one of"),
        # A declared port used nowhere would be published as the child's address.
        (
            {"command": ["python3", "-m", "http.server", "8765"], "ready": ready.Port(8765)},
            FieldValueError,
            "ports",
            "'http' is used in none of command, env, ready",
        ),
        ({"ports": ["http", "spare"]}, FieldValueError, "ports", "'spare' is used in none of"),
        # Ray's ready value {"host": address, <name>: port} has a "host" key: refused everywhere.
        ({"ports": ["http", "host"]}, FieldValueError, "ports", "cannot be named 'host'"),
    ],
)
def test_bad_ports_fail_where_the_spec_is_written(
    changes: dict[str, Any], kind: type[FieldError], field: str, message: str
) -> None:
    with pytest.raises(kind, match=re.escape(f"child 'web': {field}: ")) as caught:
        web(**changes)
    assert caught.value.field == field
    assert message in caught.value.message


def test_braces_that_name_no_placeholder_are_allowed_and_left_alone() -> None:
    """JSON, ``{1}``, ``{}`` and the escape ``{{name}}`` are not placeholders; no ports: no fill."""
    spec = web(env={"J": '{"port": {http}, "n": {1}, "e": {}}', "T": "{{when}}"})
    assert spec.env == {"J": '{"port": {http}, "n": {1}, "e": {}}', "T": "{{when}}"}
    assert fill('{"port": {http}, "n": {1}} {{http}} ${{HOME}} {{{x}}}', {"http": 8}) == (
        '{"port": 8, "n": {1}} {http} ${HOME} {{x}}'
    )
    # A child without ports is given its command as written: no placeholder, no escape.
    plain = ChildSpec("plain", command=["echo", "{api}", "{{api}}"], env={"X": "{typo}"})
    assert fill_command(plain.command or (), {}) == ("echo", "{api}", "{{api}}")


async def test_an_escaped_placeholder_reaches_the_program_as_text() -> None:
    """``${{HOME}}`` in a child with ports is the shell's ``${HOME}``; ``{p}`` is the port."""
    spec = ChildSpec(
        "esc",
        command=["sh", "-c", 'echo "$J ${{HOME}} {{lit}} {p}"; exec sleep 100'],
        env={"J": '{"port": {p}}', "HOME": "/home/x"},
        ports=["p"],
        ready=ready.Line(r'^\{"port": {p}\} /home/x \{lit\} {p}$'),
        ready_timeout=10,
        shutdown=1,
    )
    with anyio.fail_after(20):
        async with Supervisor([spec]) as sup:
            value = await sup.wait_ready("esc")
            sup.stop()
    assert set(value) == {"p"}


def test_ports_are_for_programs_only() -> None:
    with pytest.raises(FieldValueError, match="applies only to a child with a command") as caught:
        ChildSpec("py", f"{B}:sleep_forever", ports=["api"])
    assert caught.value.field == "ports"


def _tree(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tree.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_a_tree_file_takes_ports(tmp_path: Path) -> None:
    path = _tree(
        tmp_path,
        """
        [[child]]
        name = "sim"
        command = ["python3", "-m", "http.server", "{api}", "--bind", "127.0.0.1"]
        ports = ["api"]
        env = { SIM_PORT = "{api}" }
        ready = { port = "{api}" }
        """,
    )
    (sim,) = load_tree(path, resolve=True).children
    assert isinstance(sim, ChildSpec)
    assert sim.ports == ("api",)
    assert sim.ready == ready.Port("{api}")


@pytest.mark.parametrize(
    ("lines", "key", "line", "message"),
    [
        ('ports = "api"', "child[0].ports", 4, "expected a list of names"),
        ('ports = ["api", "api"]', "child[0].ports", 4, "duplicate port name 'api'"),
        ('ports = ["api"]\nready = { port = "{web}" }', "child[0].ready", 5, "{web} is not one"),
        ('ports = ["api"]\nenv = { X = "{apy}" }', "child[0].env.X", 5, "{apy} is not one"),
        ('ports = ["api"]\nready = { path = "/s-{apy}" }', "child[0].ready", 5, "{apy} is not"),
        ('ports = ["api", "web"]', "child[0].ports", 4, "'web' is used in none of command"),
        ('ports = ["host"]', "child[0].ports", 4, "a port cannot be named 'host'"),
    ],
)
def test_check_reports_bad_ports_with_key_path_and_line(
    tmp_path: Path, lines: str, key: str, line: int, message: str
) -> None:
    path = _tree(tmp_path, f'[[child]]\nname = "sim"\ncommand = ["sleep", "{{api}}"]\n{lines}\n')
    with pytest.raises(TreeFileError) as caught:
        load_tree(path)
    assert (caught.value.key, caught.value.line) == (key, line)
    assert message in str(caught.value)
    done = subprocess.run(
        [sys.executable, "-m", "gymnasiarch", "check", str(path)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{key} (line {line}): " in done.stderr
    assert message in done.stderr


def test_check_points_at_the_line_of_a_command_with_a_typo(tmp_path: Path) -> None:
    """An item of a list (``command[1]``) is reported on the line of its list."""
    path = _tree(
        tmp_path, '[[child]]\nname = "sim"\nports = ["api"]\ncommand = ["sleep", "{apy}"]\n'
    )
    with pytest.raises(TreeFileError) as caught:
        load_tree(path)
    assert (caught.value.key, caught.value.line) == ("child[0].command[1]", 4)
    assert "{apy} is not one of the child's ports (declared: 'api')" in str(caught.value)


# -- wait_ready -------------------------------------------------------------------------


async def test_wait_ready_returns_at_once_for_a_ready_child() -> None:
    """A child that is ready now: its value without a wait (even in a cancelled scope)."""
    with anyio.fail_after(30):
        async with Supervisor([web()]) as sup:
            value = await sup.wait_ready("web")
            with anyio.CancelScope() as scope:
                scope.cancel()
                again = await sup.wait_ready("web")  # no checkpoint: nothing to wait for
            sup.stop()
    assert again == value


async def test_wait_ready_waits_for_the_restarted_run() -> None:
    """Between a crash and its restart (a backoff long enough to be seen), it waits."""
    slow = Backoff(base=0.5, cap=0.5, jitter=0)
    with anyio.fail_after(40):
        async with Supervisor([web()], backoff=slow) as sup:
            first = await sup.wait_ready("web")
            with sup.events() as events:
                await kill_child(sup, "web")
                await wait_for(sup, "restarting", child="web", events=events)
                assert sup.child_info("web").state == "restarting"
                value = await sup.wait_ready("web")
                row = sup.child_info("web")  # read as wait_ready returns: the restarted run
                sup.stop()
    assert value == first
    assert (row.state, row.restarts) == ("running", 1)


async def test_wait_ready_names_an_unknown_path() -> None:
    group = Supervisor([ChildSpec("inner", f"{B}:ready_then_sleep", ready_timeout=10)], name="grp")
    with anyio.fail_after(30):
        async with Supervisor([group]) as sup:
            for path in ("nope", "grp/nope", "grp/inner/deeper"):
                with pytest.raises(LookupError) as caught:
                    await sup.wait_ready(path)
                assert isinstance(caught.value, KeyError)  # as child_info and terminate_child
                assert "grp" in str(caught.value) or "nope" in str(caught.value)
            sup.stop()


async def test_wait_ready_raises_when_the_tree_stops_while_it_waits() -> None:
    """A waiter for a child due for a restart hears the tree stop: an error, not a hang."""
    slow = Backoff(base=1.0, cap=1.0, jitter=0)
    caught: list[BaseException] = []

    async def waiter(sup: Supervisor, *, task_status: TaskStatus[None]) -> None:
        task_status.started()  # the wait below is reached before the starter resumes
        try:
            await sup.wait_ready("web")
        except ChildEndedError as error:
            caught.append(error)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group, Supervisor([web()], backoff=slow) as sup:
            await sup.wait_ready("web")
            with sup.events() as events:
                await kill_child(sup, "web")
                await wait_for(sup, "restarting", child="web", events=events)
                await group.start(waiter, sup)
                sup.stop()
    (error,) = caught
    assert error.child == "web"
    assert "will not be ready" in str(error)
    assert "stopped" in str(error)
    with pytest.raises(ChildEndedError):
        await sup.wait_ready("web")  # and after the end, at once


async def test_wait_ready_raises_when_the_supervisor_gives_up_meanwhile(tmp_path: Path) -> None:
    """The restart cannot even launch (its cwd is gone): the waiter gets the end, with why."""
    folder = tmp_path / "site"
    folder.mkdir()
    slow = Backoff(base=0.5, cap=0.5, jitter=0)
    caught: list[BaseException] = []

    async def waiter(sup: Supervisor, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await sup.wait_ready("web")
        except ChildEndedError as error:
            caught.append(error)

    async def scenario(group: TaskGroup) -> None:
        async with Supervisor([web(cwd=folder)], backoff=slow) as sup:
            await sup.wait_ready("web")
            with sup.events() as events:
                await kill_child(sup, "web")
                await wait_for(sup, "restarting", child="web", events=events)
                await group.start(waiter, sup)
                folder.rmdir()
                await sup.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            with pytest.raises(PrematureTaskDeathError):
                await scenario(group)
    (error,) = caught
    assert "gave up" in str(error)
    assert isinstance(error.__cause__, PrematureTaskDeathError)


async def test_wait_ready_raises_for_a_temporary_child_that_ended() -> None:
    spec = ChildSpec("once", f"{B}:exit_with", args=(3,), restart="temporary")
    with anyio.fail_after(30):
        async with Supervisor([spec, web()]) as sup:
            with sup.events(replay=True) as events:
                await wait_for(sup, "exited", child="once", events=events)
                with pytest.raises(ChildEndedError, match="'once' will not be ready") as caught:
                    await sup.wait_ready("once")
                sup.stop()
    assert caught.value.exitcode == 3


async def test_wait_ready_for_a_python_child_in_a_nested_group() -> None:
    """A target child two levels down, across its own restart and its group's restart."""
    group = Supervisor(
        [ChildSpec("agent-1", f"{B}:ready_then_sleep", args=("hello",), ready_timeout=10)],
        name="agents",
        max_restarts=0,  # a crash of agent-1 makes the group give up: the root restarts it
    )
    with anyio.fail_after(40):
        async with Supervisor([group], max_restarts=3) as sup:
            assert await sup.wait_ready("agents/agent-1") == "hello"
            with sup.events() as events:
                await kill_child(sup, "agents/agent-1")
                await wait_for(sup, "exited", child="agents/agent-1", events=events)
                # Its group gave up on it; the root restarts the group, and it comes back.
                value = await sup.wait_ready("agents/agent-1")
                group_row = sup.child_info("agents")
                row = sup.child_info("agents/agent-1")
                sup.stop()
    assert value == "hello"
    assert group_row.restarts == 1
    assert row.state == "running"


async def test_wait_ready_before_the_tree_starts() -> None:
    """Called before ``async with``: the records the start makes are waited on, not the old."""
    group = Supervisor(
        [ChildSpec("agent-1", f"{B}:ready_then_sleep", args=("hi",), ready_timeout=10)],
        name="agents",
    )
    sup = Supervisor([web(), group])
    got: list[Any] = []
    both = anyio.Event()

    async def waiter(path: str, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        got.append((path, await sup.wait_ready(path)))
        if len(got) == 2:
            both.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            await tasks.start(waiter, "agents/agent-1")
            await tasks.start(waiter, "web")
            async with sup:
                await both.wait()  # both came as the tree started
                ports = sup.child_info("web").ports
                sup.stop()
    assert sorted(got) == [("agents/agent-1", "hi"), ("web", ports)]


async def test_ports_are_kept_across_a_restart_of_the_group() -> None:
    """The group is restarted by its parent (new records): its program keeps its port."""
    group = Supervisor([web()], name="site", max_restarts=0)
    with anyio.fail_after(40):
        async with Supervisor([group], max_restarts=3) as sup:
            first = await sup.wait_ready("site/web")
            with sup.events() as events:
                await kill_child(sup, "site/web")
                await wait_for(sup, "exited", child="site/web", events=events)
                again = await sup.wait_ready("site/web")
            status = await anyio.to_thread.run_sync(get, again["http"])
            group_restarts = sup.child_info("site").restarts
            sup.stop()
    assert again == first
    assert group_restarts == 1
    assert status == 200


async def test_a_value_with_a_nul_given_to_a_program_is_one_clear_error() -> None:
    """No argv or environment holds a NUL: the start fails saying so, not a crash loop."""
    children = [
        ChildSpec("env", f"{T}:announce", args=("a\0b",), ready_timeout=10),
        ChildSpec("client", command=["echo", FromReady("env")], restart="transient"),
    ]
    with anyio.fail_after(30), pytest.raises(InitializationFailedError) as caught:
        await Supervisor(children).run()
    assert "command[1] is FromReady(source='env', key=None), whose value holds a NUL" in str(
        caught.value
    )
