"""Ports chosen by the supervisor (``ChildSpec(ports=[...])``): picked, and filled in.

A program child names its ports; a free TCP port is picked for each at its
first start (on this machine by the supervisor, on a Ray node by the actor
that runs it), tested again before each restart, and filled into its
command, env values and ready kind wherever ``{name}`` stands. Only braces
around an identifier are touched (commands often carry JSON); ``{{name}}``
is the text ``{name}``. A child without ports is left as it is.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import random
import re
import socket
from collections.abc import Iterable, Mapping

from gymnasiarch import _platform
from gymnasiarch import ready as ready_kinds

#: The address a port is tested on: the wildcard, which a listener on any
#: address of the machine keeps from being bound.
WILDCARD = "0.0.0.0"  # noqa: S104 - a test bind, never listened on

#: Picked ports are this one or above where the ephemeral range leaves room:
#: below are the ports servers are commonly set up on (5432, 6379, 8080, ...)
#: and Ray's worker ports (10002-19999 by default).
LOWEST = 20000

#: Ports tried at random for one name before the pick gives up.
ATTEMPTS = 100

# Not the module's generator: a caller's random.seed() must not make two
# processes pick alike.
_RANDOM = random.SystemRandom()


def candidate_ports() -> list[range]:
    """The ports a pick draws from: from :data:`LOWEST` up, outside the ephemeral range.

    The kernel gives a ``connect()`` its local port from the ephemeral range
    (:func:`gymnasiarch._platform.ephemeral_port_range`): a port picked there
    could be taken by any outgoing connection while its program is down.
    From 1024 up if the range leaves nothing above :data:`LOWEST`; empty if it
    leaves nothing at all.
    """
    first, last = _platform.ephemeral_port_range()
    for floor in (LOWEST, 1024):
        ranges = [range(floor, min(first, 65536)), range(max(last + 1, floor), 65536)]
        if any(ranges):
            return [r for r in ranges if r]
    return []


def _draw(ranges: list[range]) -> int:
    index = _RANDOM.randrange(sum(len(r) for r in ranges))
    for candidates in ranges:
        if index < len(candidates):
            return candidates[index]
        index -= len(candidates)
    raise AssertionError("unreachable: the index is below the total")


def _held(port: int, address: str) -> socket.socket | None:
    """A socket bound to *port* of *address*, or None where the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The TIME_WAIT connections of the program's last run do not count; a
    # listener, or a socket bound without this option (a client's), does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        return None
    return sock


def pick_ports(wanted: Mapping[str, int], *, address: str = WILDCARD) -> dict[str, int]:
    """A free TCP port for each name of *wanted*: its port there if still free.

    *wanted* maps each name to the port it had (0 for none yet). A port is
    free when a socket with ``SO_REUSEADDR`` binds it on *address* (by
    default the wildcard: free for whichever address the program binds);
    a kept port that is not free (another process listens there, or holds
    it) is replaced, so a restart does not fail on it again and again. A
    new port is drawn at random from :func:`candidate_ports`, outside the
    kernel's ephemeral range, so no outgoing ``connect()`` is given it
    while its program is down; not one :data:`HANDED_OUT` already.

    The test sockets of one pick are held together (the names get different
    ports) and closed before the program starts, for it to bind the ports
    itself: until it does, only a process that binds that very port can
    take it (and the next restart tests it again).

    Raises:
        OSError: ``EADDRINUSE``, naming the name and the range, when
            :data:`ATTEMPTS` ports drawn for one name were all taken, or
            the ephemeral range leaves no port outside it.
    """
    ranges: list[range] | None = None
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for name, kept in wanted.items():
            sock = _held(kept, address) if kept else None
            tries = 0
            while sock is None:
                if ranges is None:
                    ranges = candidate_ports()
                if not ranges or tries == ATTEMPTS:
                    first, last = _platform.ephemeral_port_range()
                    raise OSError(
                        errno.EADDRINUSE,
                        f"no free TCP port for {name!r} outside the ephemeral range "
                        f"{first}-{last} (ip_local_port_range): "
                        + (f"{ATTEMPTS} ports tried" if ranges else "it leaves none"),
                    )
                tries += 1
                port = _draw(ranges)
                if port not in HANDED_OUT and port not in ports.values():
                    sock = _held(port, address)
            held.append(sock)
            ports[name] = sock.getsockname()[1]
            if kept and ports[name] != kept:
                HANDED_OUT.discard(kept)  # someone else's now
    finally:
        for sock in held:
            sock.close()
    HANDED_OUT.update(ports.values())
    return ports


#: The ports :func:`pick_ports` gave the children of this process that may
#: run again: not given to another. A child's go when it is retired
#: (:func:`forget`); a kept port comes back with its child's next pick.
HANDED_OUT: set[int] = set()


def forget(ports: Iterable[int]) -> None:
    """*ports* may be handed out again: their child will not run (unless started anew)."""
    HANDED_OUT.difference_update(ports)


def warn_moved(
    logger: logging.Logger, child: str, kept: Mapping[str, int], ports: Mapping[str, int]
) -> None:
    """Log a WARNING for each port of *child* that a pick replaced (it was taken)."""
    for name, port in ports.items():
        old = kept.get(name, 0)
        if old and old != port:
            logger.warning(
                "child %r: its port %r (%d) was taken while it was down; it gets port %d now",
                child,
                name,
                old,
                port,
            )


def warn_loopback(logger: logging.Logger, child: str, run: object, found: object) -> None:
    """Log a WARNING when a program on another machine was found listening on loopback only.

    *run* is the program's run (a Ray run has ``on_this_machine`` and
    ``node_ip``); *found*, what its ``ready.Port`` check found on that node
    (``{"host": address, "port": port}``). A ``host`` of ``127.0.0.1`` or
    ``::1`` is the node's own, which the driver cannot reach from its machine.
    """
    if getattr(run, "on_this_machine", True) or not isinstance(found, dict):
        return  # on this machine loopback is reachable; a path, a line: no address
    host = found.get("host")
    try:
        loopback = isinstance(host, str) and ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address: not ours to judge
        return
    if loopback:
        logger.warning(
            "child %r listens on %s port %s of node %s only: unreachable from the driver's "
            "machine and the other nodes; bind it to 0.0.0.0 or the node's address",
            child,
            host,
            found.get("port"),
            getattr(run, "node_ip", None),
        )


def fill(text: str, ports: Mapping[str, int]) -> str:
    """*text* with ``{name}`` replaced by the port of that name, ``{{name}}`` by ``{name}``.

    Commands often carry JSON (``'{"port": 1}'``) or a format of their own:
    only braces around an identifier are touched. ``{{name}}`` is how a
    child with ports writes the text ``{name}`` (the spec refuses a
    ``{name}`` that is not one of its ports); a ``{name}`` of no port is
    left as it is. Without *ports* nothing is touched, escapes included.
    """
    if not ports or "{" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        if escaped is not None:
            return f"{{{escaped}}}"
        return str(ports[name]) if name in ports else match.group(0)

    return ready_kinds.PLACEHOLDER_OR_ESCAPE.sub(one, text)


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
