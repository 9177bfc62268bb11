"""The control socket of ``gymnasiarch run``: status, stop and restart from another shell.

``run`` listens on a Unix socket in a private directory (0700, ours), by
default ``$XDG_RUNTIME_DIR/gymnasiarch/control.sock`` or
``/tmp/gymnasiarch-<uid>/control.sock``, and writes a fresh secret next to
it (``control.key``, mode 0600). A client proves it can read that file by
answering the server's challenge, exactly as a child does with its log
ticket; on the socket the peer's user id must be ours too. Each connection
carries one command and its reply, JSON both.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteStream, TaskStatus

from gymnasiarch import _platform
from gymnasiarch._supervisor.supervisor import Supervisor
from gymnasiarch._wire import frames
from gymnasiarch._wire.frames import WireError
from gymnasiarch._wire.serving import accept_forever, authenticate, describe_peer, read_message

logger = logging.getLogger("gymnasiarch.control")

_TICKET = "control"
_TIMEOUT = 5.0


class ControlError(Exception):
    """The control socket cannot be used; the message says why."""


def default_path() -> Path:
    """Where ``run`` listens and the other commands look, unless told otherwise."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) / "gymnasiarch" if runtime else Path(tempfile.gettempdir())
    if not runtime:
        folder = folder / f"gymnasiarch-{os.getuid()}"
    return folder / "control.sock"


def key_path(path: Path) -> Path:
    """The secret's file, next to the socket."""
    return path.with_suffix(".key")


def _private_folder(folder: Path) -> None:
    """Make *folder* (0700) or check that an existing one is ours and private."""
    try:
        _platform.ensure_private_directory(folder, parents=True)
    except PermissionError as error:
        raise ControlError(str(error)) from None


def _in_use(path: Path) -> bool:
    """True if a live server answers at *path*; a stale socket is removed."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError as error:
            if error.errno in (errno.ECONNREFUSED, errno.ENOENT):
                path.unlink(missing_ok=True)
                return False
            raise
    return True


class ControlServer:
    """Serve status, stop and restart commands for one running supervisor."""

    def __init__(self, supervisor: Supervisor, path: Path | None = None) -> None:
        self.supervisor = supervisor
        self.path = path or default_path()
        self._secret = frames.new_secret()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; the socket and key file are removed at the end.

        Raises:
            ControlError: Another ``run`` serves at the path, or its directory
                is not private.
        """
        _private_folder(self.path.parent)
        if _in_use(self.path):
            raise ControlError(f"another gymnasiarch run is serving at {self.path}")
        secret_file = key_path(self.path)
        secret_file.unlink(missing_ok=True)
        descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(self._secret.hex())
        try:
            async with (
                await anyio.create_unix_listener(self.path, mode=0o600) as listener,
                anyio.create_task_group() as connections,
            ):
                task_status.started()
                await accept_forever(listener, self._serve_connection, connections, "control")
        finally:
            self.path.unlink(missing_ok=True)
            secret_file.unlink(missing_ok=True)

    async def _serve_connection(self, stream: ByteStream) -> None:
        peer = describe_peer(stream)
        async with stream:
            try:
                _, received = await authenticate(
                    stream,
                    lambda ticket: self._secret if ticket == _TICKET else None,
                    handshake_timeout=_TIMEOUT,
                    frame_timeout=_TIMEOUT,
                )
                with anyio.fail_after(_TIMEOUT):
                    command = await read_message(received, frame_timeout=_TIMEOUT)
                assert command is not None  # idle_ok is off
                reply = await self._execute(command)
                await stream.send(frames.encode(reply))
            except (WireError, TimeoutError, anyio.IncompleteRead) as error:
                logger.warning("control connection from %s closed: %s", peer, error or "stalled")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
                logger.warning("control connection from %s failed: %s", peer, error)
            except Exception:
                # One connection's trouble must not take the control socket down.
                logger.exception("control connection from %s closed: handling it failed", peer)

    async def _execute(self, command: dict[str, Any]) -> dict[str, Any]:
        kind = command["t"]
        if kind == "status":
            return {"t": "reply", "ok": True, "children": status_rows(self.supervisor)}
        if kind == "stop" and command.get("child") is None:
            logger.warning("stop asked for over the control socket: shutting down")
            self.supervisor.stop()
            return {"t": "reply", "ok": True}
        if kind in ("stop", "start", "restart"):
            name = str(command.get("child"))
            try:
                await self._on_child(kind, name)
            except (KeyError, RuntimeError) as error:
                return {"t": "reply", "ok": False, "error": str(error.args[0])}
            done = {"stop": "stopped", "start": "started", "restart": "restarted"}[kind]
            logger.warning("child %r %s over the control socket", name, done)
            return {"t": "reply", "ok": True}
        return {"t": "reply", "ok": False, "error": f"unknown command {kind!r}"}

    async def _on_child(self, kind: str, name: str) -> None:
        """``stop`` (it stays stopped), ``start`` (one that is not running), ``restart`` a child.

        Raises:
            KeyError: No child is at *name*.
            RuntimeError: It cannot be done now (said why).
        """
        if kind == "restart":
            await self.supervisor.restart_child(name)
            return
        state = self.supervisor.child_info(name).state
        if kind == "stop":
            if state in ("terminated", "exited"):
                raise RuntimeError(f"child {name!r} is not running ({state})")
            await self.supervisor.terminate_child(name)
        elif state in ("exited", "terminated"):
            await self.supervisor.restart_child(name)
        else:
            raise RuntimeError(
                f"child {name!r} is {state}, not stopped: `gymnasiarch restart {name}` "
                "stops it and starts it again"
            )


def status_rows(supervisor: Supervisor) -> list[dict[str, Any]]:
    """Every child of the tree as plain data, nested ones named by their path ``group/child``."""
    return [
        {
            "name": info.path,
            "pid": info.pid,
            "state": info.state,
            "uptime": info.uptime,
            "restarts": info.restarts,
            "crashes": info.crashes,
            "last_exit": info.last_exit.describe() if info.last_exit else None,
            "status": info.notify_status,  # a program's last sd_notify STATUS
            "memory": info.memory,  # resident bytes of its group, read now
            "cpu_seconds": info.cpu_seconds,
            "ports": info.ports,  # a program's ports picked by the supervisor
            # What it passed to ready(value): an address its siblings were given.
            "ready_value": _plain(info.ready_value),
        }
        for info in supervisor.walk()
    ]


_MAX_VALUE_TEXT = 4096  # characters of a ready value a status row carries


def _plain(value: Any) -> Any:
    """*value* if JSON carries it as it is, else its ``repr`` (a ready value may be any object).

    A big one (over a few KiB of JSON) is cut to text: a status reply is one
    frame, and one child's megabyte must not take everybody's status away.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value)
        value = text
    if len(text) > _MAX_VALUE_TEXT:
        return f"{text[: _MAX_VALUE_TEXT - 1]}…"
    return value


# -- the client's side ---------------------------------------------------------------


def request(path: Path, message: dict[str, Any]) -> dict[str, Any]:
    """Send one command to the ``run`` serving at *path*; return its reply.

    Raises:
        ControlError: Nothing serves there, or it did not answer properly.
    """
    try:
        secret = bytes.fromhex(key_path(path).read_text())
    except (OSError, ValueError):
        raise ControlError(f"no running supervisor at {path}") from None
    try:
        with contextlib.closing(
            frames.connect(str(path), _TICKET, secret, timeout=_TIMEOUT)
        ) as sock:
            sock.settimeout(_TIMEOUT * 6)  # a restart waits for the child's shutdown
            sock.sendall(frames.encode(message))
            return frames.decode(frames.receive_frame(sock))
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"no running supervisor at {path}") from None
    except (OSError, WireError) as error:
        raise ControlError(f"the supervisor at {path} did not answer: {error}") from None
