"""External programs as children (issue 16): real programs, real signals."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from gymnasiarch import Backoff, ChildSpec, Supervisor
from gymnasiarch._backends.fake import FakeBackend
from gymnasiarch._cli.control import status_rows
from gymnasiarch.cli import _status_table
from gymnasiarch.exceptions import (
    FieldTypeError,
    FieldValueError,
    InitializationFailedError,
    PrematureTaskDeathError,
)
from gymnasiarch.ready import Line, Notify, Port
from gymnasiarch.ready import Path as Path_
from gymnasiarch.testing import _descendants, kill_child, wait_for
from gymnasiarch.testing import _wait_gone as _gone_within
from gymnasiarch.treefile import TreeFileError, load_tree

FAST = Backoff(base=0.01, cap=0.01, jitter=0)


def test_a_child_has_exactly_one_of_target_and_command() -> None:
    with pytest.raises(FieldValueError, match=r"child 'x'.*exactly one of target and command"):
        ChildSpec("x")
    with pytest.raises(FieldValueError, match=r"child 'x'.*got both"):
        ChildSpec("x", "os:getpid", command=["true"])
    assert ChildSpec("env", "os:getpid").target == "os:getpid"  # positional, as before


def test_a_command_is_a_list_never_a_shell_string() -> None:
    with pytest.raises(FieldTypeError, match=r"as a list \(\['sleep', '1'\]\)"):
        ChildSpec("x", command="sleep 1")  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match="non-empty list"):
        ChildSpec("x", command=[])
    with pytest.raises(FieldTypeError, match="env"):
        ChildSpec("x", command=["true"], env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(FieldValueError, match="applies only to a child with a command"):
        ChildSpec("x", "os:getpid", cwd="/")


def test_stop_signal_takes_names_and_signals() -> None:
    assert ChildSpec("x", command=["true"], stop_signal="SIGINT").stop_signal == signal.SIGINT
    assert ChildSpec("x", command=["true"], stop_signal="quit").stop_signal == signal.SIGQUIT
    assert ChildSpec("x", command=["true"]).stop_signal == signal.SIGTERM
    with pytest.raises(FieldValueError, match="no such signal"):
        ChildSpec("x", command=["true"], stop_signal="SIGNOPE")


async def test_a_program_runs_under_its_own_name_and_stops_with_its_group(
    tmp_path: Path,
) -> None:
    # Ready once the shell has started its grandchild (and said so in a file).
    flag = tmp_path / "forked"
    script = f"sleep 1000 & : > {flag}; wait"  # a builtin: no short-lived grandchild
    spec = ChildSpec("s", command=["sh", "-c", script], ready=Path_(str(flag)), shutdown=5)
    async with Supervisor([spec]) as sup:
        (row,) = [r for r in sup.walk() if r.name == "s"]
        pid = row.pid
        assert pid is not None
        comm = Path(f"/proc/{pid}/comm").read_text()  # noqa: ASYNC240 - a /proc file
        assert comm.strip() == "sh"  # the title is the program's own
        grandchildren = list(_descendants(pid))
        assert grandchildren
        assert os.getpgid(grandchildren[0]) == pid  # the program leads its own group
    assert _gone_within([pid, *grandchildren], 2) == []


async def test_a_stubborn_program_is_killed_after_the_grace(tmp_path: Path) -> None:
    flag = tmp_path / "trapped"
    script = f'trap "" TERM; touch {flag}; sleep 100'
    spec = ChildSpec("stubborn", command=["sh", "-c", script], ready=Path_(str(flag)), shutdown=0.3)
    sup = Supervisor([spec])
    with sup.events() as events:
        async with sup:
            pass
        exits = [e async for e in _drained(events) if e.kind == "exited"]
    assert [e.signum for e in exits] == [signal.SIGKILL]


async def _drained(events):  # type: ignore[no-untyped-def]
    while True:
        try:
            yield events.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return


async def test_stop_signal_is_sent_instead_of_sigterm(tmp_path: Path) -> None:
    flag = tmp_path / "trapped"
    script = f'trap "exit 0" INT; touch {flag}; while :; do sleep 0.05; done'
    spec = ChildSpec(
        "int",
        command=["sh", "-c", script],
        ready=Path_(str(flag)),
        stop_signal="SIGINT",
        shutdown=5,
    )
    sup = Supervisor([spec])
    with sup.events() as events:
        async with sup:
            pass
        exits = [e async for e in _drained(events) if e.kind == "exited"]
    assert [(e.exitcode, e.signum) for e in exits] == [(0, None)]


async def test_env_and_cwd_reach_the_program(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gymnasiarch.child")
    # Set after the fork server started: the program must see the supervisor's
    # environment as it is, or removing a variable proves nothing.
    os.environ["GYMNASIARCH_TEST_GONE"] = "still here"
    os.environ["GYMNASIARCH_TEST_KEPT"] = "kept"
    try:
        spec = ChildSpec(
            "envy",
            command=[
                "sh",
                "-c",
                'echo "$FOO|${GYMNASIARCH_TEST_GONE-unset}|$GYMNASIARCH_TEST_KEPT|$PWD"',
            ],
            env={"FOO": "bar", "GYMNASIARCH_TEST_GONE": None},
            cwd=tmp_path,
            restart="transient",
            significant=True,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait()
    finally:
        del os.environ["GYMNASIARCH_TEST_GONE"]
        del os.environ["GYMNASIARCH_TEST_KEPT"]
    lines = [r.getMessage() for r in caplog.records if r.name == "gymnasiarch.child.envy"]
    assert f"bar|unset|kept|{tmp_path}" in lines


async def test_a_missing_program_is_a_start_failure() -> None:
    spec = ChildSpec("ghost", command=["gymnasiarch-no-such-program", "--x"])
    with pytest.raises(InitializationFailedError, match=r"gymnasiarch-no-such-program.*Errno 2"):
        async with Supervisor([spec]):
            pass


async def test_a_file_that_is_not_executable_is_a_start_failure(tmp_path: Path) -> None:
    script = tmp_path / "plain.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    spec = ChildSpec("plain", command=[str(script)])
    with pytest.raises(InitializationFailedError, match=r"plain.sh.*Errno 13"):
        async with Supervisor([spec]):
            pass


async def test_a_missing_cwd_is_a_start_failure(tmp_path: Path) -> None:
    spec = ChildSpec("lost", command=["true"], cwd=tmp_path / "gone")
    with pytest.raises(InitializationFailedError, match=r"cwd.*gone"):
        async with Supervisor([spec]):
            pass


async def test_a_program_that_cannot_be_execd_on_restart_gives_up_at_once(
    tmp_path: Path,
) -> None:
    # Runs once, then makes itself non-executable and fails: the restart cannot exec.
    script = tmp_path / "once.sh"
    script.write_text('#!/bin/sh\nchmod -x "$0"\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    spec = ChildSpec("once", command=[str(script)])
    sup = Supervisor([spec], max_restarts=100, max_seconds=60, backoff=FAST)
    with sup.events() as events:
        with pytest.raises(PrematureTaskDeathError) as caught:
            async with sup:
                await anyio.sleep_forever()
        starts = [e async for e in _drained(events) if e.kind == "started"]
    assert "once.sh" in str(caught.value)
    assert "Errno 13" in str(caught.value)
    assert len(starts) == 2  # the first run and the one restart that could not exec


async def test_a_failing_program_gives_up_with_its_exit_code_and_stderr() -> None:
    spec = ChildSpec("three", command=["sh", "-c", "echo broken-thing >&2; exit 3"])
    sup = Supervisor([spec], max_restarts=2, max_seconds=60, backoff=FAST)
    with pytest.raises(PrematureTaskDeathError) as caught:
        async with sup:
            await anyio.sleep_forever()
    error = caught.value
    assert error.exitcode == 3
    assert error.output is not None
    assert "broken-thing" in error.output


async def test_output_inherit_works(capfd: pytest.CaptureFixture[str]) -> None:
    spec = ChildSpec(
        "loud",
        command=["sh", "-c", "echo to-the-terminal"],
        output="inherit",
        restart="transient",
        significant=True,
    )
    async with Supervisor([spec]) as sup:
        await sup.wait()
    assert "to-the-terminal" in capfd.readouterr().out


SUPERVISOR_SCRIPT = textwrap.dedent(
    """
    import json, sys, anyio
    from gymnasiarch import ChildSpec, Supervisor
    from gymnasiarch.ready import Path
    FLAG = sys.argv[1]

    async def main():
        specs = [
            ChildSpec(f"p{i}", command=["sh", "-c", f"sleep 1000 & touch {FLAG}{i}; wait"],
                      ready=Path(f"{FLAG}{i}"))
            for i in range(3)
        ]
        async with Supervisor(specs, start_method=sys.argv[2]) as sup:
            print(json.dumps([r.pid for r in sup.walk() if r.pid]), flush=True)
            await anyio.sleep_forever()

    anyio.run(main)
    """
)


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_programs_die_with_a_sigkilled_supervisor(tmp_path: Path, method: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_SCRIPT, str(tmp_path / "forked"), method],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session: our group is not signalled
    )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        children = json.loads(proc.stdout.readline())
        proc.stdout.close()
        pids = [*children, *(p for c in children for p in _descendants(c))]
        assert len(pids) >= 6
        proc.kill()
        proc.wait()
        assert _gone_within(pids, 2) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _gone_within(pids, 0):
            with contextlib.suppress(ProcessLookupError):  # it may end (be reaped) meanwhile
                os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_ready_port_waits_for_a_listening_server() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    spec = ChildSpec("web", command=command, ready=Port(port), ready_timeout=20)
    sup = Supervisor([spec])
    with sup.events() as events:
        async with sup:
            # Ready means listening: a connection now is accepted at once.
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.aclose()
            ready = [e async for e in _drained(events) if e.kind == "ready"]
    assert [e.value for e in ready] == [port]


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
    sock.send(b"STOPPING=1\\nSTATUS=done")
    """
)


async def test_ready_notify_hears_ready_and_keeps_the_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "gymnasiarch.child")
    spec = ChildSpec(
        "notifier",
        command=[sys.executable, "-c", NOTIFY_SCRIPT],
        ready=Notify(),
        ready_timeout=20,
        restart="transient",
        significant=True,
    )
    sup = Supervisor([spec])
    with sup.events() as events:
        async with sup:
            ready = [e async for e in _drained(events) if e.kind == "ready"]
            assert [e.value for e in ready] == ["serving"]  # the STATUS as READY=1 came
            await sup.wait()
        # Kept after READY=1, to the program's last word; `status` shows it.
        (row,) = sup.walk()
        assert row.notify_status == "done"
        assert status_rows(sup)[0]["status"] == "done"


async def test_ready_line_waits_for_a_matching_line() -> None:
    script = "echo starting; sleep 0.2; echo 'listening on port 1234' >&2; sleep 1000"
    spec = ChildSpec(
        "liner", command=["sh", "-c", script], ready=Line(r"port (\d+)"), ready_timeout=20
    )
    sup = Supervisor([spec])
    with sup.events() as events:
        async with sup:
            ready = [e async for e in _drained(events) if e.kind == "ready"]
    assert [e.value for e in ready] == ["port 1234"]


async def test_a_program_not_ready_in_time_is_a_start_failure(tmp_path: Path) -> None:
    spec = ChildSpec(
        "late", command=["sleep", "1000"], ready=Path_(str(tmp_path / "never")), ready_timeout=0.2
    )
    with pytest.raises(InitializationFailedError, match=r"late.*not ready.*0.2 s"):
        async with Supervisor([spec]):
            pass


@pytest.mark.parametrize("kind", ["path", "port"])
async def test_a_program_that_ends_before_it_is_ready_says_why(tmp_path: Path, kind: str) -> None:
    script = "echo cannot-bind >&2; exit 4"
    ready = Path_(str(tmp_path / "x")) if kind == "path" else Port(_free_port())
    spec = ChildSpec("quitter", command=["sh", "-c", script], ready=ready)
    with pytest.raises(InitializationFailedError, match="exit code 4") as caught:
        async with Supervisor([spec]):
            pass
    assert caught.value.output is not None
    assert "cannot-bind" in caught.value.output


ONE_SHOT_SERVER = textwrap.dedent(
    """
    import socket
    server = socket.create_server(("127.0.0.1", 0))
    print("port", server.getsockname()[1], flush=True)
    client, _ = server.accept()
    while client.recv(1024):
        pass
    """
)


async def _run_scenarios(count_normal_exits: bool, scenarios: int) -> int:
    """Run *scenarios* against four one-shot servers; how many scenarios were served."""
    specs = [
        ChildSpec(
            f"sim{i}",
            command=[sys.executable, "-c", ONE_SHOT_SERVER],
            ready=Line(r"^port \d+$"),
            ready_timeout=20,
            count_normal_exits=count_normal_exits,
        )
        for i in range(4)
    ]
    sup = Supervisor(specs, max_restarts=3, max_seconds=60, start_order="parallel")
    served = 0
    with sup.events(replay=True) as events:
        async with sup:
            ports: list[int] = []
            async for event in events:
                if event.kind == "ready":
                    ports.append(int(event.value.split()[1]))
                if len(ports) == 4:
                    for port in ports:  # a scenario: each server serves one client
                        stream = await anyio.connect_tcp("127.0.0.1", port)
                        await stream.send(b"step")
                        await stream.aclose()
                    served, ports = served + 1, []
                    if served == scenarios:
                        break
    return served


async def test_one_shot_servers_whose_normal_exits_do_not_count() -> None:
    assert await _run_scenarios(count_normal_exits=False, scenarios=3) == 3


async def test_one_shot_servers_exhaust_the_budget_where_normal_exits_count() -> None:
    with pytest.raises(PrematureTaskDeathError, match="restarts within"):
        await _run_scenarios(count_normal_exits=True, scenarios=3)


def _tree(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tree.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_tree_files_describe_programs(tmp_path: Path) -> None:
    path = _tree(
        tmp_path,
        f"""
        [[child]]
        name = "web"
        command = ["python3", "-m", "http.server", "6391"]
        env = {{ LANG = "C" }}
        cwd = "{tmp_path}"
        stop_signal = "SIGINT"
        ready = {{ port = 6391 }}

        [[child]]
        name = "db"
        command = ["sh", "-c", "exec sleep 100"]
        ready = {{ notify = true }}
        count_normal_exits = false

        [[child]]
        name = "sock"
        command = ["sleep", "100"]
        ready = {{ path = "/run/x.sock" }}

        [[child]]
        name = "log"
        command = ["sleep", "100"]
        ready = {{ line = "listening" }}
        """,
    )
    web, db, sock, log = load_tree(path).children
    assert isinstance(web, ChildSpec)
    assert web.command == ("python3", "-m", "http.server", "6391")
    assert web.env == {"LANG": "C"}
    assert web.cwd == str(tmp_path)
    assert web.stop_signal == signal.SIGINT
    assert web.ready == Port(6391)
    assert isinstance(db, ChildSpec)
    assert db.ready == Notify()
    assert db.count_normal_exits is False
    assert isinstance(sock, ChildSpec)
    assert sock.ready == Path_("/run/x.sock")
    assert isinstance(log, ChildSpec)
    assert log.ready == Line("listening")


@pytest.mark.parametrize(
    ("child", "key", "message"),
    [
        ('command = "sleep 1"', "child[0].command", "as a list"),
        ('command = ["sleep"]\nready = { port = 1, path = "/x" }', "child[0].ready", "one of"),
        ('command = ["sleep"]\nready = { port = 70000 }', "child[0].ready.port", "65535"),
        ('command = ["sleep"]\nready = { line = "(" }', "child[0].ready.line", "regular"),
        ('command = ["sleep"]\nready = { notify = 1 }', "child[0].ready.notify", "true"),
        ("", "child[0]", "'command'"),
    ],
)
def test_tree_file_errors_name_the_key(tmp_path: Path, child: str, key: str, message: str) -> None:
    path = _tree(tmp_path, f'[[child]]\nname = "p"\n{child}\n')
    with pytest.raises(TreeFileError, match=re.escape(message)) as caught:
        load_tree(path)
    assert caught.value.key == key


def test_check_reports_a_missing_program(tmp_path: Path) -> None:
    path = _tree(tmp_path, '[[child]]\nname = "p"\ncommand = ["gymnasiarch-no-such-program"]\n')
    load_tree(path)  # without resolve, the file is fine
    with pytest.raises(TreeFileError, match="gymnasiarch-no-such-program") as caught:
        load_tree(path, resolve=True)
    assert caught.value.key == "child[0].command"
    assert caught.value.line == 3


async def test_a_command_child_needs_the_local_backend() -> None:
    spec = ChildSpec("p", command=["true"])
    with pytest.raises(InitializationFailedError, match="needs the local backend"):
        async with Supervisor([spec], backend=FakeBackend()):
            pass


async def _notify_and_line_tree() -> list[object]:
    specs = [
        ChildSpec(
            "notifier",
            command=[sys.executable, "-c", NOTIFY_SCRIPT],
            ready=Notify(),
            restart="transient",
        ),
        ChildSpec(
            "liner", command=["sh", "-c", "echo up; sleep 1000"], ready=Line("^up$"), shutdown=1
        ),
    ]
    sup = Supervisor(specs)
    with sup.events() as events:
        async with sup:
            ready = [e async for e in _drained(events) if e.kind == "ready"]
    return [e.value for e in ready]


def test_programs_under_trio() -> None:
    assert anyio.run(_notify_and_line_tree, backend="trio") == ["serving", "up"]


def test_the_program_example_serves_its_client() -> None:
    """examples/program.py: http.server as a command child, a Python client given its port."""
    example = Path(__file__).parent.parent / "examples" / "program.py"
    run = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True
    )
    assert re.search(r"GET / on port \d+: 200", run.stdout), run.stdout + run.stderr


def test_the_status_table_shows_a_programs_status_where_there_is_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = {"name": "db", "pid": 7, "state": "running", "uptime": 1.0, "restarts": 0}
    _status_table([row])
    assert "status" not in capsys.readouterr().out  # as before, for Python children
    _status_table([{**row, "status": "Ready to accept connections"}, {**row, "name": "sim"}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "status"
    assert lines[1].endswith("Ready to accept connections")
    assert lines[2].rstrip().endswith("-")


async def test_a_daemon_that_left_the_programs_group_is_stopped_with_it(tmp_path: Path) -> None:
    flag = tmp_path / "escaped"
    # The escapee writes its own pid (kept by the exec) and renames it into place, so the flag
    # appears whole; reading descendants instead raced with short-lived helpers like `touch`.
    leave = f"echo $$ > {flag}.new && mv {flag}.new {flag}; exec sleep 1000"
    script = f"setsid sh -c '{leave}' & wait"
    spec = ChildSpec("leaver", command=["sh", "-c", script], ready=Path_(str(flag)), shutdown=2)
    async with Supervisor([spec]) as sup:
        (row,) = sup.walk()
        assert row.pid is not None
        escaped = int(flag.read_text())
        assert os.getsid(escaped) != os.getsid(row.pid)  # setsid: a session (and group) of its own
    assert _gone_within([escaped], 2) == []


async def test_a_cwd_gone_before_a_restart_gives_up_with_the_reason(tmp_path: Path) -> None:
    """The directory is removed while the program runs: its restart cannot be made."""
    where = tmp_path / "work"
    where.mkdir()
    spec = ChildSpec("mover", command=["sh", "-c", 'rmdir "$PWD"; exit 1'], cwd=where)
    with anyio.fail_after(30), pytest.raises(PrematureTaskDeathError, match="not a directory"):
        async with Supervisor([spec]) as sup:
            await sup.wait()


REDIS = shutil.which("redis-server")


async def _ping(port: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"PING\r\n")
        return await stream.receive()


@pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed here (.ci/run installs it)"
)
async def test_redis_speaks_sd_notify_and_serves_again_after_a_sigkill(tmp_path: Path) -> None:
    """A real server: ready when it says READY=1, restarted after SIGKILL, serving again."""
    assert REDIS is not None
    port = _free_port()
    spec = ChildSpec(
        "redis",
        command=[
            *(REDIS, "--port", str(port), "--bind", "127.0.0.1", "--supervised", "systemd"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        ready=Notify(),
        ready_timeout=20,
    )
    with anyio.fail_after(60):
        async with Supervisor([spec]) as sup:
            assert await _ping(port) == b"+PONG\r\n"
            first = sup.child_info("redis")
            with sup.events() as events:
                await kill_child(sup, "redis")
                ready = await wait_for(sup, "ready", child="redis", events=events)
            assert ready.pid != first.pid
            assert await _ping(port) == b"+PONG\r\n"
            status = sup.child_info("redis").notify_status
            sup.stop()
    assert status is not None
