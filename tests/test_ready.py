"""gymnasiarch.ready: the readiness kinds of programs, against real programs and sockets.

Every program runs in its own process group (as a supervised command will)
and is killed with its whole group at the end of its test.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from gymnasiarch import _platform, ready
from gymnasiarch.exceptions import FieldTypeError, FieldValueError

BACKENDS = ["asyncio", "trio"]
T = TypeVar("T")


# -- helpers ------------------------------------------------------------------------


@contextlib.contextmanager
def program(
    *argv: str, env: dict[str, str] | None = None, stdout: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run *argv* in a process group of its own; kill the whole group at the end."""
    child = subprocess.Popen(
        argv, start_new_session=True, env={**os.environ, **(env or {})}, stdout=stdout
    )
    try:
        yield child
    finally:
        _kill_group(child)


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    # The group's other members are awaited on their pidfds (reaped here if
    # this process is a subreaper that inherited them), so none outlives it.
    pidfds = []
    for pid in _platform.proc_group(child.pid):
        if pid != child.pid:
            with contextlib.suppress(ProcessLookupError):
                pidfds.append(_platform.pidfd_open(pid))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    if child.stdout is not None:
        child.stdout.close()
    for pidfd in pidfds:
        select.select([pidfd], [], [], 10)
        _platform.reap_pidfd(pidfd)
        os.close(pidfd)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(backend: str, body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``body()`` under *backend* (asyncio or trio)."""
    return anyio.run(body, backend=backend)


async def not_done_within(seconds: float, wait: Awaitable[object]) -> bool:
    """True if *wait* was still waiting after *seconds* (it is cancelled then)."""
    with anyio.move_on_after(seconds) as scope:
        await wait
    return scope.cancelled_caught


#: Binds *port* at once, listens after a delay, prints when it listened, then serves one
#: client and exits 0 (a one-shot server, as a mosaik simulator is).
ONE_SHOT_SERVER = textwrap.dedent(
    """
    import socket, sys, time
    server = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((sys.argv[1], int(sys.argv[2])))
    time.sleep(float(sys.argv[3]))
    server.listen()
    print(time.monotonic(), flush=True)
    client, _ = server.accept()
    client.close()
    """
)


# -- the kinds, and bad input -------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "names"),
    [
        (lambda: ready.Port(0), FieldValueError, "port: expected a port from 1 to 65535, got 0"),
        (lambda: ready.Port(70000), FieldValueError, "got 70000"),
        (lambda: ready.Port(True), FieldTypeError, "expected a port number, got True"),
        (
            lambda: ready.Port(8080.0),  # type: ignore[arg-type]
            FieldTypeError,
            "got 8080.0",
        ),
        (lambda: ready.Port("api"), FieldValueError, "placeholder like '{api}', got 'api'"),
        (lambda: ready.Port("{1x}"), FieldValueError, "got '{1x}'"),
        (lambda: ready.Port(80, host="localhost"), FieldValueError, "host: expected an IP"),
        (lambda: ready.Line("(unclosed"), FieldValueError, "'(unclosed' is not a regular expr"),
        (
            lambda: ready.Line(b"x"),  # type: ignore[arg-type]
            FieldTypeError,
            "regex: expected a regular expression",
        ),
        (lambda: ready.Path("run/sock"), FieldValueError, "expected an absolute path"),
        (lambda: ready.Path(""), FieldValueError, "expected an absolute path"),
        (lambda: ready.Path("/run/\0"), FieldValueError, "NUL"),
        (
            lambda: ready.Path(3),  # type: ignore[arg-type]
            FieldTypeError,
            "path: expected a path, got 3",
        ),
        (lambda: ready.Port("{api}").number, FieldValueError, "substitute the port first"),
        (lambda: ready.Port("{api}").substitute({"db": 1}), FieldValueError, "no port named"),
        (lambda: ready.Port("{api}").substitute({"api": 0}), FieldValueError, "got 0"),
    ],
)
def test_bad_input_is_one_error_that_names_it(
    make: Callable[[], object], error: type[Exception], names: str
) -> None:
    """Each kind checks itself where it is written: the field, the value, and why."""
    with pytest.raises(error) as caught:
        make()
    assert names in str(caught.value)


def test_the_kinds_are_frozen_values() -> None:
    """Equal when they say the same thing, hashable, immutable; placeholders substitute."""
    assert ready.Port(8080) == ready.Port(8080, "127.0.0.1")
    assert ready.Port("{api}", "::1").substitute({"api": 8080}) == ready.Port(8080, "::1")
    assert ready.Port(8080).substitute({}) == ready.Port(8080)
    assert ready.Port("{api}").placeholder == "api"
    assert ready.Port(8080).placeholder is None
    assert ready.Path(Path("/run/x/../sock")).path == "/run/sock"
    assert ready.Line("^up$") == ready.Line("^up$")
    assert len({ready.Notify(), ready.Notify(), ready.Port(1), ready.Line("a")}) == 3
    with pytest.raises(AttributeError):
        ready.Port(1).port = 2  # type: ignore[misc]


# -- Port ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_port_is_ready_only_once_the_program_listens(backend: str) -> None:
    """Bound at once but listening 0.3 s later: ready after the listen, and never probed."""
    port = free_port()
    args = (sys.executable, "-c", ONE_SHOT_SERVER, "127.0.0.1", str(port), "0.3")
    with program(*args, stdout=subprocess.PIPE) as child:

        async def main() -> tuple[float, ready.Listener]:
            with anyio.fail_after(10):
                listener = await ready.wait_port(ready.Port(port), child.pid)
            return time.monotonic(), listener

        seen, listener = run(backend, main)
        assert child.stdout is not None
        listened = float(child.stdout.readline())
        assert listened <= seen
        assert (listener.host, listener.port) == ("127.0.0.1", port)
        assert listener.inode in _platform.proc_socket_inodes(child.pid)
        # Nobody connected: the one-shot server still waits for its client...
        time.sleep(0.2)
        assert child.poll() is None
        # ...and ends once one comes, as a probe would have made it.
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert child.wait(timeout=10) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_server_in_a_shell_script_is_ready(backend: str) -> None:
    """The listener is the leader's child (python under sh): the group counts, not the pid."""
    port = free_port()
    script = f"{sys.executable} -m http.server {port} --bind 127.0.0.1; exit 0"
    with program("sh", "-c", script, stdout=subprocess.DEVNULL) as child:

        async def main() -> ready.Listener:
            with anyio.fail_after(20):
                return await ready.wait_port(ready.Port(port), child.pid)

        listener = run(backend, main)
        assert isinstance(listener, ready.Listener)
        holders = [p for p in _platform.proc_group(child.pid) if p != child.pid]
        assert any(listener.inode in _platform.proc_socket_inodes(p) for p in holders)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_port_another_process_holds_is_not_ready(backend: str) -> None:
    """We listen on the port; the program does not: a connect probe would say ready, we don't."""
    with socket.socket() as ours:
        ours.bind(("127.0.0.1", 0))
        ours.listen()
        port = ours.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # a probe would succeed
        with program("sleep", "60") as child:

            async def main() -> bool:
                return await not_done_within(0.3, ready.wait_port(ready.Port(port), child.pid))

            assert run(backend, main) is True
            assert child.poll() is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_connection_from_the_port_is_no_listener(backend: str) -> None:
    """The program holds a socket on the port, connected out of it: not listening, not ready."""
    port = free_port()
    with socket.socket() as ours:
        ours.bind(("127.0.0.1", 0))
        ours.listen()
        code = (
            "import socket, sys, time\n"
            "client = socket.socket()\n"
            f"client.bind(('127.0.0.1', {port}))\n"
            f"client.connect(('127.0.0.1', {ours.getsockname()[1]}))\n"
            "print('connected', flush=True)\n"
            "time.sleep(60)\n"
        )
        with program(sys.executable, "-c", code, stdout=subprocess.PIPE) as child:
            assert child.stdout is not None
            assert child.stdout.readline() == b"connected\n"
            ours.accept()[0].close()

            async def main() -> bool:
                return await not_done_within(0.3, ready.wait_port(ready.Port(port), child.pid))

            assert run(backend, main) is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wildcard_listener_serves_the_host(backend: str) -> None:
    """A program that listens on :: (or 0.0.0.0) is ready for Port(port, '127.0.0.1')."""
    port = free_port()
    args = (sys.executable, "-c", ONE_SHOT_SERVER, "::", str(port), "0")
    with program(*args, stdout=subprocess.DEVNULL) as child:

        async def main() -> ready.Listener:
            with anyio.fail_after(10):
                return await ready.wait_port(ready.Port(port), child.pid)

        listener = run(backend, main)
        assert isinstance(listener, ready.Listener)
        assert listener.host == "::"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_port_wait_ends_when_the_leader_exits(backend: str) -> None:
    """A program that exits without listening ends the wait at once, on its pidfd."""
    port = free_port()
    with program(sys.executable, "-c", "import time; time.sleep(0.2)") as child:

        async def main() -> float:
            start = time.monotonic()
            with anyio.fail_after(10), pytest.raises(ProcessLookupError, match="exited"):
                await ready.wait_port(ready.Port(port), child.pid)
            return time.monotonic() - start

        assert run(backend, main) < 5


def test_the_port_wait_refuses_a_placeholder_and_a_gone_group() -> None:
    """A port not substituted yet, and a leader that is gone: one clear error each."""
    with pytest.raises(FieldValueError, match="placeholder"):
        anyio.run(ready.wait_port, ready.Port("{api}"), os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessLookupError, match="is gone"):
        anyio.run(ready.wait_port, ready.Port(8080), child.pid)


# -- Notify -------------------------------------------------------------------------

NOTIFIER = textwrap.dedent(
    """
    import os, socket, sys, time
    time.sleep(0.1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for message in sys.argv[1:]:
            sock.sendto(message.encode(), os.environ["NOTIFY_SOCKET"])
    time.sleep(60)
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_notify_ready_and_status_lines(backend: str) -> None:
    """READY=1 with a STATUS in one datagram, then STATUS lines, watchdog, stopping."""
    sock = ready.NotifySocket()
    folder = os.path.dirname(sock.path)
    with sock:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(sock.path).st_mode)
        messages = [
            "READY=1\nSTATUS=warming up\nX_UNKNOWN=yes\nnot a pair",
            "STATUS=serving",
            "WATCHDOG=1\nMAINPID=4242\nWATCHDOG_USEC=oops",
            "STOPPING=1",
        ]
        env = {"NOTIFY_SOCKET": sock.path}
        with program(sys.executable, "-c", NOTIFIER, *messages, env=env) as child:
            sock.believe(child.pid)

            async def main() -> list[ready.NotifyMessage]:
                with anyio.fail_after(10):
                    first = await sock.wait_ready()
                    return [first] + [await sock.receive() for _ in range(3)]

            got = run(backend, main)
        assert got == [
            ready.NotifyMessage(child.pid, ready=True, status="warming up"),
            ready.NotifyMessage(child.pid, status="serving"),
            ready.NotifyMessage(child.pid, watchdog=True, mainpid=4242),
            ready.NotifyMessage(child.pid, stopping=True),
        ]
        assert (sock.ready, sock.status, sock.rejected) == (True, "serving", 0)
    assert not os.path.exists(sock.path)
    assert not os.path.exists(folder)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sender_outside_the_group_is_not_believed(backend: str) -> None:
    """READY=1 from us and from another program's group is dropped; a group member's counts."""
    with ready.NotifySocket() as sock:
        env = {"NOTIFY_SOCKET": sock.path}
        # The leader (sh) says nothing; its child, in the group, says READY=1 later.
        script = f"sleep 1; exec {sys.executable} -c '{NOTIFIER}' READY=1"
        with program("sh", "-c", f"({script}); sleep 60", env=env) as child:
            sock.believe(child.pid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ours:
                ours.sendto(b"READY=1\nSTATUS=from the test", sock.path)
            outsider = (sys.executable, "-c", NOTIFIER, "READY=1\nSTATUS=from outside")
            with program(*outsider, env=env):

                async def main() -> ready.NotifyMessage:
                    with anyio.fail_after(10):
                        return await sock.wait_ready()

                message = run(backend, main)
            assert isinstance(message, ready.NotifyMessage)
            assert message.sender != child.pid
            assert _platform.proc_group(child.pid).count(message.sender) == 1
        assert (sock.rejected, sock.status) == (2, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_oversized_datagram_is_dropped(backend: str) -> None:
    """A datagram longer than max_size is counted and dropped, never half-parsed."""
    with ready.NotifySocket(max_size=64) as sock:
        env = {"NOTIFY_SOCKET": sock.path}
        messages = ["READY=1\nSTATUS=" + "x" * 100, "STATUS=short", "READY=1"]
        with program(sys.executable, "-c", NOTIFIER, *messages, env=env) as child:
            sock.believe(child.pid)

            async def main() -> ready.NotifyMessage:
                with anyio.fail_after(10):
                    return await sock.wait_ready()

            assert run(backend, main) == ready.NotifyMessage(child.pid, ready=True)
        assert (sock.rejected, sock.status) == (1, "short")


@pytest.mark.parametrize("backend", BACKENDS)
def test_aclose_ends_an_iteration_and_nothing_is_believed_without_a_group(backend: str) -> None:
    """No group given: our own READY=1 is dropped; aclose wakes the task that listens."""

    sock = ready.NotifySocket()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ours:
        ours.sendto(b"READY=1", sock.path)

    async def main() -> tuple[list[ready.NotifyMessage], int]:
        got: list[ready.NotifyMessage] = []

        async def listen() -> None:
            async for message in sock:
                got.append(message)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(listen)
                await anyio.wait_all_tasks_blocked()  # the listener read ours, and waits
                rejected = sock.rejected
                await sock.aclose()
        return got, rejected

    assert run(backend, main) == ([], 1)
    assert not os.path.exists(sock.path)


def test_a_notify_socket_in_a_directory_of_the_callers(tmp_path: Path) -> None:
    """A private directory given is used (and kept); an open one, or too long a path, is refused."""
    private = tmp_path / "notify"
    with ready.NotifySocket(directory=private) as sock:
        assert os.path.dirname(sock.path) == str(private)
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert private.is_dir()
    assert list(private.iterdir()) == []
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(PermissionError, match="not a private directory"):
        ready.NotifySocket(directory=shared)
    deep = tmp_path / ("d" * 100)
    with pytest.raises(FieldValueError, match="too long for a Unix socket"):
        ready.NotifySocket(directory=deep)


def test_a_notify_message_parses_what_sd_notify_sends() -> None:
    """Several lines, the last of a key wins; unknown keys and bad numbers are ignored."""
    data = b"STATUS=a=b\nREADY=0\nREADY=1\nERRNO=2\nMAINPID=x\nEXTEND_TIMEOUT_USEC=5\nFOO=1\n"
    assert ready.NotifyMessage.parse(data, 7) == ready.NotifyMessage(
        7, ready=True, status="a=b", errno=2, extend_timeout_usec=5
    )
    assert ready.NotifyMessage.parse(b"WATCHDOG=trigger\nRELOADING=1", 1).watchdog_trigger
    assert ready.NotifyMessage.parse(b"\xff\xfe", 1) == ready.NotifyMessage(1)


# -- Path ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_path_ready_when_a_program_creates_the_file(backend: str, tmp_path: Path) -> None:
    """A file made 0.2 s later by another program: seen when it is there, not before."""
    target = tmp_path / "pid"
    with program("sh", "-c", f"sleep 0.2; : > {target}; sleep 60"):

        async def main() -> str:
            with anyio.fail_after(10):
                return await ready.wait_path(ready.Path(target))

        assert run(backend, main) == str(target)
        assert target.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_path_ready_for_a_unix_socket_in_a_directory_made_later(
    backend: str, tmp_path: Path
) -> None:
    """The socket's directories do not exist yet: the watch moves down as they appear."""
    target = tmp_path / "run" / "app" / "control.sock"
    script = textwrap.dedent(
        f"""
        import os, socket, time
        time.sleep(0.1)
        os.makedirs({str(target.parent.parent)!r})
        time.sleep(0.1)
        os.mkdir({str(target.parent)!r})
        time.sleep(0.1)
        server = socket.socket(socket.AF_UNIX)
        server.bind({str(target)!r})
        time.sleep(60)
        """
    )
    with program(sys.executable, "-c", script):

        async def main() -> str:
            with anyio.fail_after(10):
                return await ready.wait_path(ready.Path(target))

        assert run(backend, main) == str(target)
        assert stat.S_ISSOCK(target.stat().st_mode)


@pytest.mark.parametrize("backend", BACKENDS)
def test_path_that_exists_already_or_never_appears(backend: str, tmp_path: Path) -> None:
    """There already: ready at once. Never made: still waiting when the caller gives up."""
    there = tmp_path / "there"
    there.touch()

    async def main() -> tuple[str, bool]:
        with anyio.fail_after(1):
            found = await ready.wait_path(ready.Path(there))
        missing = ready.wait_path(ready.Path(tmp_path / "missing" / "file"))
        return found, await not_done_within(0.3, missing)

    assert run(backend, main) == (str(there), True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_path_without_inotify_looks_again_with_a_backoff(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where inotify cannot be had (not Linux, limits reached), the path is still seen."""

    def no_inotify() -> int:
        raise OSError(38, "inotify_init1 is not available here")

    monkeypatch.setattr(_platform, "inotify_init", no_inotify)
    target = tmp_path / "late"
    with program("sh", "-c", f"sleep 0.2; : > {target}; sleep 60"):

        async def main() -> str:
            with anyio.fail_after(10):
                return await ready.wait_path(ready.Path(target))

        assert run(backend, main) == str(target)


# -- Line ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_line_matches_a_programs_output(backend: str) -> None:
    """Lines of a real program fed one by one: the first match wakes the waiter."""
    code = (
        "import time\n"
        "for line in ['starting', 'loading 3 models', 'listening on 127.0.0.1:4242', 'x']:\n"
        "    print(line, flush=True); time.sleep(0.05)\n"
    )

    async def main() -> tuple[str, str, list[str]]:
        matcher = ready.LineMatcher(ready.Line(r"listening on [\d.]+:(?P<port>\d+)"))
        fed: list[str] = []
        async with await anyio.open_process(
            [sys.executable, "-c", code], stderr=subprocess.DEVNULL
        ) as process:
            assert process.stdout is not None

            async def pump() -> None:
                pending = ""
                async for chunk in TextReceiveStream(process.stdout):  # type: ignore[arg-type]
                    *lines, pending = (pending + chunk).split("\n")
                    for line in lines:
                        fed.append(line)
                        matcher.feed(line + "\n")

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(pump)
                with anyio.fail_after(10):
                    match = await matcher.wait()
        return match.group(0), match.group("port"), fed

    whole, port, fed = run(backend, main)
    assert (whole, port) == ("listening on 127.0.0.1:4242", "4242")
    assert fed[-1] == "x"


def test_only_the_first_matching_line_counts() -> None:
    """Later lines are not searched; a match before anyone waits is kept for the waiter."""
    matcher = ready.LineMatcher(ready.Line("^ready$"))
    assert matcher.feed("not ready") is None
    first = matcher.feed("ready\r\n")
    assert first is not None
    assert matcher.feed("ready") is None
    assert anyio.run(matcher.wait) is first
    with pytest.raises(FieldTypeError, match=r"expected a ready\.Line"):
        ready.LineMatcher("^ready$")  # type: ignore[arg-type]
