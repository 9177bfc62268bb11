"""Ports chosen by the supervisor (``ChildSpec(ports=[...])``): picked, and filled in.

A program child names its ports; a free TCP port is picked for each at its
first start (on this machine by the supervisor, on a Ray node by the actor
that runs it) and filled into its command, env values and ready kind
wherever ``{name}`` stands. Only a declared name's placeholder is touched:
commands often carry JSON or a format of their own, and nothing is escaped.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping

from gymnasiarch import ready as ready_kinds


def pick_ports(names: Iterable[str]) -> dict[str, int]:
    """A free TCP port of 127.0.0.1 for each of *names*, all different.

    Each is what the kernel gives a socket bound to port 0; the sockets are
    closed before the program starts, for it to bind the port itself. Until
    it does, another process may take the port (a connect() is given a port
    of the same range): the window is one exec long, the kernel hands out
    those ports in a spread-out order, and a program that does lose the race
    fails to bind, which is a crash like any other, restarted on the same
    port. Ports this process handed out before are not handed out again:
    the sockets of one pick are held together, and earlier picks are kept
    in :data:`HANDED_OUT`.
    """
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            while True:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)  # held while we pick: the kernel gives it to no one else
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
                if port not in HANDED_OUT:
                    break
            ports[name] = port
            HANDED_OUT.add(port)
    finally:
        for sock in held:
            sock.close()
    return ports


#: Every port :func:`pick_ports` gave a child of this process: not given to another.
HANDED_OUT: set[int] = set()


def pick_node_ports(wanted: dict[str, int]) -> dict[str, int]:
    """A free TCP port of this node for each name of *wanted*: its port there if still free.

    *wanted* maps each name to the port it had (0 for none yet). A port is
    free when a socket binds it on the wildcard address (free for whichever
    address the program binds); ``SO_REUSEADDR`` lets the connections in
    TIME_WAIT of the program's last run not count. One that is not free (on
    another node now, or taken meanwhile) is replaced by what the kernel gives a
    socket bound to port 0. The sockets of one pick are held together, so the
    names get different ports, and closed before the program starts, for it
    to bind them itself: the same one-exec window as on one machine
    (:func:`pick_ports`).
    """
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for name, port in wanted.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))  # noqa: S104 - a test of the port, never listened on
            except OSError:
                if port == 0:
                    raise
                sock.bind(("0.0.0.0", 0))  # noqa: S104
            ports[name] = sock.getsockname()[1]
    finally:
        for sock in held:
            sock.close()
    return ports


def fill(text: str, ports: Mapping[str, int]) -> str:
    """*text* with ``{name}`` replaced by the port of that name; other braces as they are.

    Commands often carry JSON (``'{"port": 1}'``) or a format of their own:
    only a placeholder of a declared port is touched, and nothing is escaped.
    """
    if not ports or "{" not in text:
        return text
    return ready_kinds.PLACEHOLDER.sub(
        lambda match: str(ports[match.group(1)]) if match.group(1) in ports else match.group(0),
        text,
    )


def fill_command(command: Iterable[str], ports: Mapping[str, int]) -> tuple[str, ...]:
    """A program's argv with its ports filled in."""
    return tuple(fill(part, ports) for part in command)


def fill_env(
    env: dict[str, str | None] | None, ports: Mapping[str, int]
) -> dict[str, str | None] | None:
    """A program's env with its ports filled into the values (not the names)."""
    if env is None or not ports:
        return env
    return {key: None if value is None else fill(value, ports) for key, value in env.items()}


def fill_ready(
    kind: ready_kinds.ReadyKind | None, ports: Mapping[str, int]
) -> ready_kinds.ReadyKind | None:
    """A program's ready kind with its ports filled in: a ``Port``'s, a ``Path``'s, a ``Line``'s."""
    if not ports:
        return kind
    if isinstance(kind, ready_kinds.Port):
        return kind.substitute(ports)  # its placeholder was checked with the spec
    if isinstance(kind, ready_kinds.Path):
        return ready_kinds.Path(fill(str(kind), ports))
    if isinstance(kind, ready_kinds.Line):
        return ready_kinds.Line(fill(kind.regex, ports))
    return kind
