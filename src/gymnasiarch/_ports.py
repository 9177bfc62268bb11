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

#: Picked ports are this one or above where the ephemeral range leaves room
#: (:data:`ENOUGH` ports): below are the ports servers are commonly set up on
#: (5432, 6379, 8080, ...) and Ray's worker ports (10002-19999 by default).
LOWEST = 20000

#: Only where the range leaves fewer than :data:`ENOUGH` ports from
#: :data:`LOWEST` up, the ports from this one up are candidates too: clear of
#: most servers' usual ports, though not of Ray's worker ports (a port one of
#: them holds is found taken, and another drawn). Where it leaves fewer from
#: here too, every port from 1024 up.
LOWER = 10000

#: How many candidate ports a floor must leave to be kept to.
ENOUGH = 1000

#: Ports tried at random for one name before the pick gives up.
ATTEMPTS = 100

# The process layer's: a Ray host relays it to the supervisor with its child's output.
logger = logging.getLogger("gymnasiarch.process.ports")

# Not the module's generator: a caller's random.seed() must not make two
# processes pick alike.
_RANDOM = random.SystemRandom()


def candidate_ports() -> list[range]:
    """The ports a pick draws from: from :data:`LOWEST` up, outside the ephemeral range.

    The kernel gives a ``connect()`` its local port from the ephemeral range
    (:func:`gymnasiarch._platform.ephemeral_port_range`): a port picked there
    could be taken by any outgoing connection while its program is down.
    Where the range leaves fewer than :data:`ENOUGH` ports from
    :data:`LOWEST` up (a range of 15000-65000 leaves 535), the ports from
    :data:`LOWER` up are candidates too, and where that still leaves fewer,
    every port from 1024 up outside the range; empty if it leaves none at
    all (``1024 65535``, a common tuning: :func:`pick_ports` then lets the
    kernel choose).
    """
    first, last = _platform.ephemeral_port_range()
    ranges: list[range] = []
    for floor in (LOWEST, LOWER, 1024):
        below = range(floor, max(floor, min(first, 65536)))
        ranges = [r for r in (below, range(max(last + 1, floor), 65536)) if r]
        if sum(len(r) for r in ranges) >= ENOUGH:
            break
    return ranges


def _port_at(ranges: list[range], index: int) -> int:
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


def _new_port(
    name: str, ranges: list[range], address: str, taken: set[int]
) -> tuple[socket.socket, bool]:
    """A socket bound to a free port of *ranges* not *taken*, and whether the kernel picked it.

    Up to :data:`ATTEMPTS` candidates are tried, each once; where that is
    all of them (a range that leaves only a few ports outside it, say one)
    and none was free, the kernel picks instead, as where there are none.
    """
    total = sum(len(r) for r in ranges)
    for index in _RANDOM.sample(range(total), min(total, ATTEMPTS)):
        port = _port_at(ranges, index)
        if port not in taken and (sock := _held(port, address)) is not None:
            return sock, False
    if total <= ATTEMPTS:  # every candidate was tried
        for _ in range(ATTEMPTS):
            sock = _held(0, address)  # 0: the kernel picks, in the ephemeral range
            if sock is not None and sock.getsockname()[1] not in taken:
                return sock, True
            if sock is not None:  # the kernel's pick, but handed to a child whose program is down
                sock.close()
    first, last = _platform.ephemeral_port_range()
    raise OSError(
        errno.EADDRINUSE,
        f"no free TCP port for {name!r} {'in' if total <= ATTEMPTS else 'outside'} the "
        f"ephemeral range {first}-{last} (ip_local_port_range): {ATTEMPTS} ports tried",
    )


def pick_ports(
    wanted: Mapping[str, int], *, address: str = WILDCARD, holder: object = None
) -> dict[str, int]:
    """A free TCP port for each name of *wanted*: its port there if still free.

    *wanted* maps each name to the port it had (0 for none yet). A port is
    free when a socket with ``SO_REUSEADDR`` binds it on *address* (by
    default the wildcard: free for whichever address the program binds);
    a kept port that is not free (another process listens there, or holds
    it), or that was handed out to another *holder* meanwhile (its own
    were forgotten, and the other's program is down), is replaced, so a
    restart does not fail on it again and again. A new port is drawn at
    random from :func:`candidate_ports`, outside the kernel's ephemeral
    range, so no outgoing ``connect()`` is given it while its program is
    down; not one :data:`HANDED_OUT` already. Where the range leaves no
    port outside it, or only a few (at most :data:`ATTEMPTS`), all tried
    and taken, the kernel picks one (a bind to port 0), with a WARNING:
    such a port is in the range.

    *holder* is who the ports are for (a supervisor's child): a kept port
    :data:`HANDED_OUT` holds for another is not kept. Without one, a kept
    port handed out without one counts as the caller's.

    The test sockets of one pick are held together (the names get different
    ports) and closed before the program starts, for it to bind the ports
    itself: until it does, only a process that binds that very port can
    take it (and the next restart tests it again).

    Raises:
        OSError: ``EADDRINUSE``, naming the name and the range, when
            :data:`ATTEMPTS` ports tried for one name were all taken.
    """
    ranges: list[range] | None = None
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    by_kernel: list[str] = []
    try:
        for name, kept in wanted.items():
            mine = bool(kept) and (kept not in HANDED_OUT or _HOLDERS.get(kept) is holder)
            sock = _held(kept, address) if mine else None
            if sock is None:
                if ranges is None:
                    ranges = candidate_ports()
                sock, kernels = _new_port(name, ranges, address, HANDED_OUT | set(ports.values()))
                if kernels:
                    by_kernel.append(name)
            held.append(sock)
            ports[name] = sock.getsockname()[1]
            if mine and ports[name] != kept:
                forget([kept])  # someone else's now
    finally:
        for sock in held:
            sock.close()
    HANDED_OUT.update(ports.values())
    for port in ports.values():
        if holder is None:
            _HOLDERS.pop(port, None)
        else:
            _HOLDERS[port] = holder
    if by_kernel:
        first, last = _platform.ephemeral_port_range()
        logger.warning(
            "the ephemeral port range %d-%d (net.ipv4.ip_local_port_range) leaves %s "
            "outside it: the kernel picked %s, in that range, where an outgoing connection "
            "may be given the port while its program is down (a restart then moves it); "
            "narrow the range to leave room",
            first,
            last,
            f"no free port (of {sum(len(r) for r in ranges)})" if ranges else "no port",
            ", ".join(f"{ports[name]} for {name!r}" for name in by_kernel),
        )
    return ports


#: The ports :func:`pick_ports` gave the children of this process that may
#: run again: not given to another. A child's go when it is retired
#: (:func:`forget`); a kept port comes back with its child's next pick.
HANDED_OUT: set[int] = set()

# Who each port of HANDED_OUT is held for, where a pick said (see pick_ports).
_HOLDERS: dict[int, object] = {}


def forget(ports: Iterable[int]) -> None:
    """*ports* may be handed out again: their child will not run (unless started anew)."""
    for port in ports:
        HANDED_OUT.discard(port)
        _HOLDERS.pop(port, None)


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


def escape(text: str) -> str:
    """*text* as :func:`fill` gives it back: each ``{name}`` and ``{{name}}`` in it escaped.

    For a value put into a program's texts before its ports are filled in
    (a sibling's ready value): its braces are text, not placeholders.
    """
    return ready_kinds.PLACEHOLDER_OR_ESCAPE.sub(lambda match: f"{{{match.group(0)}}}", text)


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
