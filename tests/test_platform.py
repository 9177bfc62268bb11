"""The Linux-only calls of gymnasiarch._platform, against real processes and sockets.

Also the checks that used to be written twice and now live there once: who
is at the other end of a Unix socket, and whether a directory is private;
and the one frame encoder of the wire (its records frames byte for byte).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute

from gymnasiarch import _platform
from gymnasiarch._cli import control
from gymnasiarch._wire import frames, serving
from gymnasiarch._wire.frames import WireError

NOBODY = 65534


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child of ours that waits, with a mark in its environment; reaped at the end.

    Given once it has said so: Popen returns when the exec has begun, and until the
    kernel has set the new program up, /proc shows neither its environment nor its name.
    """
    env = {**os.environ, "GYMNASIARCH_TEST_MARK": "here"}
    child = subprocess.Popen(
        ["sh", "-c", "echo up; read line"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"up\n"
        yield child
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()


def test_proc_reads_describe_a_living_child(sleeper: subprocess.Popen[bytes]) -> None:
    """State, parent, group, start time, environment, command line and name, from /proc."""
    info = _platform.proc_stat(sleeper.pid)
    assert info is not None
    assert (info.pid, info.ppid, info.pgid) == (sleeper.pid, os.getpid(), os.getpgrp())
    assert info.state in "RS"
    assert 0 < info.start <= _platform.boot_ticks()
    assert sleeper.pid in _platform.proc_children(os.getpid())
    assert _platform.proc_environ(sleeper.pid, "GYMNASIARCH_TEST_MARK") == "here"
    assert _platform.proc_environ(sleeper.pid, "GYMNASIARCH_NO_SUCH_MARK") is None
    assert _platform.proc_cmdline(sleeper.pid) == "sh -c echo up; read line"
    assert _platform.proc_comm(sleeper.pid) == "sh"
    assert _platform.zombie_exit_code(sleeper.pid) is None  # alive: no status to read
    assert sleeper.pid in _platform.proc_pids()
    assert _platform.proc_uid(sleeper.pid) == os.getuid()


def test_a_zombie_shows_its_status_until_its_pidfd_reaps_it(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """Killed, not reaped: /proc has its status and comm; reap_pidfd takes it, once."""
    pidfd = _platform.pidfd_open(sleeper.pid)
    try:
        _platform.pidfd_send_signal(pidfd, signal.SIGKILL)
        with anyio.from_thread.start_blocking_portal() as portal:
            portal.call(anyio.wait_readable, pidfd)  # its exit, on the pidfd
        info = _platform.proc_stat(sleeper.pid)
        assert info is not None
        assert info.state == "Z"
        assert _platform.zombie_exit_code(sleeper.pid) == -signal.SIGKILL
        assert _platform.proc_comm(sleeper.pid) == "sh"  # a zombie keeps its name
        assert _platform.proc_cmdline(sleeper.pid) == ""  # but not its command line
        assert _platform.reap_pidfd(pidfd) == -signal.SIGKILL
        assert _platform.proc_stat(sleeper.pid) is None
        assert _platform.reap_pidfd(pidfd) is None  # nothing left to reap
    finally:
        os.close(pidfd)
        sleeper.returncode = -signal.SIGKILL  # reaped here: the fixture must not wait for it


def test_a_pid_that_is_gone_gives_nothing() -> None:
    """A process that is gone: None, empty, or ProcessLookupError for a pidfd."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert _platform.proc_stat(child.pid) is None
    assert child.pid not in _platform.proc_pids()
    assert _platform.proc_uid(child.pid) is None
    assert _platform.proc_children(child.pid) == []
    assert _platform.proc_cmdline(child.pid) == ""
    assert _platform.proc_comm(child.pid) == ""
    assert _platform.zombie_exit_code(child.pid) is None
    with pytest.raises(ProcessLookupError):
        _platform.pidfd_open(child.pid)


def test_the_subreaper_flag_is_set_read_and_cleared() -> None:
    """PR_SET/GET_CHILD_SUBREAPER, from a process of its own (the flag is per process)."""
    code = (
        "from gymnasiarch import _platform as p\n"
        "seen = [p.is_child_subreaper()]\n"
        "p.set_child_subreaper(True); seen.append(p.is_child_subreaper())\n"
        "p.set_child_subreaper(False); seen.append(p.is_child_subreaper())\n"
        "print(seen)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "[False, True, False]"


# -- the peer check, once ---------------------------------------------------------------


def test_the_peer_of_a_socket_pair_is_us() -> None:
    """SO_PEERCRED: our pid, uid and gid; not another user."""
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    with ours, theirs:
        assert _platform.peer_credentials(ours) == (os.getpid(), os.getuid(), os.getgid())
        assert _platform.peer_is_other_user(ours) is None


def _connect_as_nobody(name: str) -> int:
    """Fork a process that becomes nobody, connects to *name* and waits for the hang-up."""
    with warnings.catch_warnings():
        # It only makes system calls and exits: other threads' locks do not matter.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(name)
                sock.recv(1)
            code = 0
        finally:
            os._exit(code)
    return pid


@pytest.mark.skipif(os.getuid() != 0, reason="becoming another user needs root")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_peer_of_another_user_is_refused(backend: str) -> None:
    """A client running as nobody: the platform names its uid, the servers' check refuses it."""
    # An abstract name (a NUL first): no file permissions stand in the way.
    name = f"\0gymnasiarch-test-{os.getpid()}-{backend}"

    async def main() -> tuple[int | None, str, str, int | None]:
        async with await anyio.create_unix_listener(name) as listener:
            pidfd = _platform.pidfd_open(_connect_as_nobody(name))
            code = None
            try:
                with anyio.fail_after(20):
                    stream = await listener.accept()
                async with stream:
                    uid = _platform.peer_is_other_user(stream.extra(SocketAttribute.raw_socket))
                    with pytest.raises(WireError) as refused:
                        serving.check_peer_user(stream)
                    peer = serving.describe_peer(stream)
                with anyio.fail_after(20):  # it ends when we hang up
                    await anyio.wait_readable(pidfd)
                code = _platform.reap_pidfd(pidfd)
            finally:
                if code is None:  # something failed first: end it, and reap it
                    _platform.pidfd_send_signal(pidfd, signal.SIGKILL)
                    with anyio.CancelScope(shield=True):
                        await anyio.wait_readable(pidfd)
                    _platform.reap_pidfd(pidfd)
                os.close(pidfd)
            return uid, str(refused.value), peer, code

    uid, why, peer, code = anyio.run(main, backend=backend)
    assert uid == NOBODY
    assert why == f"peer runs as user {NOBODY}, not as us"
    assert peer.startswith("pid ")
    assert code == 0  # it did connect as nobody


# -- the private-directory check, once ----------------------------------------------------


def test_a_private_directory_is_made_with_its_parents(tmp_path: Path) -> None:
    """Made 0700 (the parents too), and accepted as it is the next time."""
    path = tmp_path / "a" / "b"
    _platform.ensure_private_directory(path, parents=True)
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o700, 0o700)
    _platform.ensure_private_directory(path)


def _open(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o755)
    return path


def _symlink(path: Path) -> Path:
    target = path.with_name("target")
    target.mkdir(mode=0o700)
    path.symlink_to(target)
    return path


def _others(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    return path


def _file(path: Path) -> Path:
    path.write_text("")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("make", [_open, _symlink, _others, _file])
def test_what_is_not_a_private_directory_of_ours_is_refused(make: object, tmp_path: Path) -> None:
    """Open to others, a symlink, another user's, not a directory: refused, by every user of it."""
    if make is _others and os.getuid() != 0:
        pytest.skip("giving a directory away needs root")
    path = make(tmp_path / "d")  # type: ignore[operator]
    with pytest.raises(PermissionError, match="not a private directory of ours"):
        _platform.ensure_private_directory(path)
    server = control.ControlServer(object(), path / "control.sock")  # type: ignore[arg-type]
    with pytest.raises(control.ControlError, match="not a private directory of ours"):
        anyio.run(server.serve)


# -- the one frame encoder ------------------------------------------------------------------


ROWS = [[f"record {i}", i, None, {"k": "é"}] for i in range(16)]


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_a_records_frame_is_the_message_a_plain_encoder_makes(count: int) -> None:
    """Byte for byte: JSON and msgpack records frames, for each size of msgpack array."""
    rows = ROWS[:count] if count <= len(ROWS) else [[i % 10] for i in range(count)]
    plain = {"t": "records", "s": 7, "r": rows}
    as_json = [json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() for row in rows]
    expected = json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode()
    assert frames.records_frame(as_json, 7, packed=False) == frames.frame(expected)
    assert frames.encode(plain) == frames.frame(expected)
    assert frames.frame(expected)[: frames.HEADER.size] == len(expected).to_bytes(4, "big")
    if not frames.reads_msgpack():
        return
    packed = [frames.msgpack_pack(row) for row in rows]
    frame = frames.records_frame(packed, 7, packed=True)
    assert frame == frames.frame(frames.msgpack_pack(plain))
    assert frames.decode(frame[frames.HEADER.size :]) == plain
