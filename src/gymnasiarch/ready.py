"""When is an external program ready? The readiness kinds, and how each is awaited.

A Python child says so itself (``child_context().ready()``); a program
started as a command cannot, so its spec says what to wait for:

- :class:`Notify`: the program speaks systemd's sd_notify protocol and sends
  ``READY=1`` to the datagram socket named in ``NOTIFY_SOCKET``
  (:class:`NotifySocket`);
- :class:`Port`: a process of the program's own process group listens on a
  TCP port (:func:`wait_port`), read from the kernel's socket tables, never
  by connecting;
- :class:`Path`: a file or Unix socket appears at a path (:func:`wait_path`);
- :class:`Line`: a line of its output matches a regular expression
  (:class:`LineMatcher`).

The kinds are frozen values, checked when they are made: a bad port, path
or expression fails where it is written, with one error that names it. The
waiters run under asyncio and trio alike (anyio), are event-driven where the
kernel allows (the notify socket, inotify, the output the caller feeds in)
and wait as long as it takes: the caller bounds them, with its
``ready_timeout``, as in ``with anyio.fail_after(ready_timeout): await
wait_port(...)``. ``ChildSpec(command=..., ready=...)`` will use them; until
then they are usable on their own, for a process the caller started in its
own process group (``start_new_session=True``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

import anyio

from gymnasiarch import _platform
from gymnasiarch._platform import Listener
from gymnasiarch.exceptions import FieldTypeError, FieldValueError

__all__ = [
    "Line",
    "LineMatcher",
    "Listener",
    "Notify",
    "NotifyMessage",
    "NotifySocket",
    "Path",
    "Port",
    "ReadyKind",
    "wait_path",
    "wait_port",
]

_T = TypeVar("_T")

#: The re-reads of a socket table (or of a path without inotify) start this
#: soon and back off, doubling, to at most every this often: a program is
#: seen a millisecond after it listens when it is quick, and a slow one
#: costs 20 reads a second.
_FIRST_LOOK = 0.001
_LAST_LOOK = 0.05

#: A port's placeholder: ``{name}``, the name an identifier. Braces around
#: anything else (JSON's ``{"port": 1}``, ``{1}``, ``{}``) are not one.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: A placeholder (group 2), or its escape (group 1): in a child with ports,
#: ``{{name}}`` is the text ``{name}`` (a shell's ``${{HOME}}``, a format's
#: ``{{x}}``). Searched left to right, an escape is taken before the
#: placeholder inside it.
PLACEHOLDER_OR_ESCAPE = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNIX_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path), the terminating NUL included


# -- the kinds ----------------------------------------------------------------------


@dataclass(frozen=True)
class Notify:
    """Ready when the program sends ``READY=1`` over the sd_notify protocol.

    The program finds the socket's path in its ``NOTIFY_SOCKET`` variable,
    as under systemd's ``Type=notify``: Redis with ``--supervised
    systemd``, PostgreSQL, and any program that calls ``sd_notify(3)`` or
    runs ``systemd-notify --ready`` (see :class:`NotifySocket` for who is
    believed). ``STATUS=`` lines show as the child's status; ``STOPPING=1``
    and ``WATCHDOG=1`` are accepted. With the spec's ``watchdog=``,
    ``WATCHDOG=1`` is the keep-alive and ``WATCHDOG=trigger`` has the
    program found hung at once; a ``WATCHDOG_USEC=`` sent at run time is
    ignored (the spec's period stays).
    """


@dataclass(frozen=True)
class Port:
    """Ready when a process of the program's own process group listens on *port*.

    Checked in the kernel's socket tables, never by connecting: a probe
    connection ends a server that serves one client and exits (a
    mosaik-api-v3 simulator started with ``--remote`` dies 34 ms after a
    connect-and-close), and it succeeds when some *other* process holds the
    port, while the program dies with EADDRINUSE. See :func:`wait_port`.

    Args:
        port: A TCP port (1-65535), or a placeholder ``"{name}"`` for a port
            the supervisor picks for the child and substitutes
            (:meth:`substitute`).
        host: The address the program listens on, an IP address: a socket
            bound to it, or to the wildcard (``0.0.0.0``, ``::``), counts.

    Raises:
        FieldTypeError: *port* is neither an int nor a string.
        FieldValueError: *port* is out of range or not a ``"{name}"``, or
            *host* is not an IP address.
    """

    port: int | str
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        port = self.port
        if isinstance(port, str):
            if PLACEHOLDER.fullmatch(port) is None:
                raise FieldValueError(
                    "port",
                    f"expected a number or a placeholder like '{{api}}', got {port!r}",
                    "Port",
                )
        elif isinstance(port, bool) or not isinstance(port, int):
            raise FieldTypeError("port", f"expected a port number, got {port!r}", "Port")
        elif not 1 <= port <= 65535:
            raise FieldValueError("port", f"expected a port from 1 to 65535, got {port!r}", "Port")
        if not isinstance(self.host, str):
            raise FieldTypeError("host", f"expected an IP address, got {self.host!r}", "Port")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise FieldValueError(
                "host",
                f"expected an IP address such as '127.0.0.1' or '::1', got {self.host!r}",
                "Port",
            ) from None

    @property
    def placeholder(self) -> str | None:
        """The name in a ``"{name}"`` port, or None for a port number."""
        if isinstance(self.port, str):
            match = PLACEHOLDER.fullmatch(self.port)
            return match.group(1) if match else None
        return None

    @property
    def number(self) -> int:
        """The port number.

        Raises:
            FieldValueError: The port is still a placeholder.
        """
        if isinstance(self.port, str):
            raise FieldValueError(
                "port", f"{self.port!r} is a placeholder: substitute the port first", "Port"
            )
        return self.port

    def substitute(self, ports: Mapping[str, int]) -> Port:
        """This check with its placeholder replaced by ``ports[name]`` (itself if a number).

        Raises:
            FieldValueError: *ports* has no port of that name, or the port
                given is not a valid one.
        """
        name = self.placeholder
        if name is None:
            return self
        if name not in ports:
            known = ", ".join(sorted(ports)) or "none"
            raise FieldValueError("port", f"no port named {name!r} (known: {known})", "Port")
        return Port(ports[name], self.host)


@dataclass(frozen=True)
class Path:
    """Ready when something (a file, a Unix socket, a directory) exists at *path*.

    Awaited with inotify on the directory it is to appear in (see
    :func:`wait_path`). A regular file counts as soon as it is created,
    which may be before the program has written it: a program that writes
    a file and renames it into place is seen only once it is complete.

    Args:
        path: An absolute path (the program's working directory and ours
            may differ). A ``str`` or a :class:`os.PathLike`; kept as ``str``.

    Raises:
        FieldTypeError: *path* is not a path.
        FieldValueError: It is relative, empty, or holds a NUL.
    """

    path: str | os.PathLike[str]

    def __post_init__(self) -> None:
        if not isinstance(self.path, str | os.PathLike):
            raise FieldTypeError("path", f"expected a path, got {self.path!r}", "Path")
        text = os.fspath(self.path)
        if not isinstance(text, str):
            raise FieldTypeError("path", f"expected a text path, got {self.path!r}", "Path")
        if "\0" in text:
            raise FieldValueError("path", f"must not hold a NUL character, got {text!r}", "Path")
        if not os.path.isabs(text):
            raise FieldValueError(
                "path",
                f"expected an absolute path (the program's working directory may differ "
                f"from ours), got {text!r}",
                "Path",
            )
        object.__setattr__(self, "path", os.path.normpath(text))

    def __str__(self) -> str:
        return os.fspath(self.path)


@dataclass(frozen=True)
class Line:
    """Ready when a line the program writes to stdout or stderr matches *regex*.

    ``re.search`` semantics: the expression may match anywhere in the line
    (anchor it with ``^...$`` for the whole line); the line ending is not
    part of the line. Fed by the output pump (see :class:`LineMatcher`).

    A program may print its line a moment *before* it does what the line
    says: mosaik-api-v3 logs that it listens about 2 ms before it calls
    ``listen()``. Where a client must connect at once, prefer :class:`Port`.

    Args:
        regex: A regular expression, compiled here.

    Raises:
        FieldTypeError: *regex* is not a string.
        FieldValueError: It does not compile (the message says where and why).
    """

    regex: str
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.regex, str):
            raise FieldTypeError(
                "regex", f"expected a regular expression, got {self.regex!r}", "Line"
            )
        try:
            pattern = re.compile(self.regex)
        except re.error as exc:
            raise FieldValueError(
                "regex", f"{self.regex!r} is not a regular expression: {exc}", "Line"
            ) from None
        object.__setattr__(self, "pattern", pattern)


#: What a program's ``ready=`` may be (None: ready once it has been exec'd).
ReadyKind = Notify | Port | Path | Line


# -- waiting, bounded ---------------------------------------------------------------


async def _look_again(check: Callable[[], _T | None]) -> _T:
    """``check()`` until it gives something, re-reading with a bounded backoff.

    Only for what the kernel cannot announce (a socket table) or where
    inotify is missing: the first look is at once, then 1 ms, doubling to
    at most 50 ms apart.
    """
    delay = _FIRST_LOOK
    while (found := check()) is None:
        await anyio.sleep(delay)
        delay = min(delay * 2, _LAST_LOOK)
    return found


# -- Port ---------------------------------------------------------------------------


def _serves(listener: str, host: str) -> bool:
    """Whether a socket bound to the address *listener* accepts connections to *host*."""
    bound = ipaddress.ip_address(listener)
    if isinstance(bound, ipaddress.IPv6Address) and bound.ipv4_mapped is not None:
        bound = bound.ipv4_mapped
    wanted = ipaddress.ip_address(host)
    # A wildcard socket serves every address of its family; an IPv6 one
    # serves IPv4 too unless IPV6_V6ONLY (which the tables do not show).
    return bound == wanted or (bound.is_unspecified and bound.version in (wanted.version, 6))


def _group_listener(port: int, host: str, pgid: int, tables_of: int | None) -> Listener | None:
    """A socket listening on *host*:*port* that a process of group *pgid* holds, or None."""
    # The tables first: while nobody listens on the port (the common case
    # while a program starts), the group's processes need not be read.
    candidates = {
        listener.inode: listener
        for listener in _platform.tcp_listeners(port, tables_of)
        if _serves(listener.host, host)
    }
    if not candidates:
        return None
    for pid in _platform.proc_group(pgid):
        held = _platform.proc_socket_inodes(pid) & candidates.keys()
        if held:
            return candidates[min(held)]
    return None


async def wait_port(port: Port, pgid: int) -> Listener:
    """Wait until a process of process group *pgid* listens on *port*; that socket.

    *pgid* is the group of the program, whose leader it is (a process
    started with ``start_new_session=True`` or ``process_group=0``): a
    socket counts when one of the group's processes holds it, so a server
    that a shell script started counts, and a port that some *other*
    process holds never does.

    How: the kernel's tables of listening sockets (``/proc/PID/net/tcp``
    and ``tcp6``, in the leader's network namespace) give the inodes of
    the sockets listening on the port; the group's processes (``/proc/*/stat``)
    and their descriptors (``/proc/PID/fd``) say whose they are. Nothing
    connects to the port. The kernel announces no new listener, so the
    tables are re-read with a short backoff (at once, then 1 ms doubling to
    50 ms), while the leader's pidfd is watched: the wait ends as soon as
    the socket is found or the leader exits.

    Args:
        port: What to wait for; a placeholder must have been substituted.
        pgid: The program's process group (its leader's pid).

    Raises:
        ProcessLookupError: The leader exited (or was gone) before that.
        FieldValueError: *port* is a placeholder still.
    """
    number = port.number
    what = f"port {port.host}:{number}: no process of group {pgid} listening"
    try:
        pidfd = _platform.pidfd_open(pgid)
    except ProcessLookupError:
        raise ProcessLookupError(f"{what}: process {pgid} is gone") from None
    try:
        delay = _FIRST_LOOK
        while True:
            found = _group_listener(number, port.host, pgid, pgid)
            if found is not None:
                return found
            # Sleep on the leader's pidfd: its exit ends the wait at once.
            with anyio.move_on_after(delay):
                await anyio.wait_readable(pidfd)
                # A last look (in our own tables: an exited leader's are
                # gone): what it left behind in its group may listen.
                found = _group_listener(number, port.host, pgid, None)
                if found is not None:
                    return found
                raise ProcessLookupError(f"{what}: process {pgid} exited")
            delay = min(delay * 2, _LAST_LOOK)
    finally:
        os.close(pidfd)


# -- Path ---------------------------------------------------------------------------

_WATCHED = (
    _platform.IN_CREATE
    | _platform.IN_MOVED_TO
    | _platform.IN_ATTRIB  # a symlink's target made, a directory's rights given
    | _platform.IN_DELETE_SELF
    | _platform.IN_MOVE_SELF
)


def _nearest_folder(path: str) -> str:
    """The deepest directory above *path* that exists now (``/`` at worst)."""
    folder = os.path.dirname(path)
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return folder


def _present(path: str) -> str | None:
    return path if os.path.exists(path) else None


async def wait_path(path: Path) -> str:
    """Wait until something exists at *path*; the path.

    How: an inotify watch on the directory it is to appear in, awaited as
    a readable descriptor, and a look right after arming it (it may be
    there already). While that directory does not exist yet, the nearest
    one above it that does is watched, and the watch moves down as the
    directories appear. Every event is only a reason to look again, so
    none is missed and none is trusted. Where inotify is missing (not
    Linux, or the user's inotify limits reached), the path is looked at
    again with a short backoff (1 ms doubling to 50 ms).

    A symlink counts once its target exists; the target's directory is not
    watched, so a symlink made before its target is seen at the next event
    in the link's directory, or with the backoff.
    """
    target = os.fspath(path.path)
    try:
        inotify = _platform.inotify_init()
    except OSError:
        return await _look_again(lambda: _present(target))
    try:
        while True:
            try:
                # Adding a watch again on a directory watched already gives
                # the same watch: cheap, and it re-arms one that a deleted
                # and re-made directory lost.
                _platform.inotify_add_watch(inotify, _nearest_folder(target), _WATCHED)
            except FileNotFoundError:
                continue  # removed since we looked: find the nearest again
            except OSError:  # out of watches, or a directory we may not read
                return await _look_again(lambda: _present(target))
            # After arming: what appeared before the watch is seen here, what
            # appears after it wakes the descriptor. A stat, not a blocking wait.
            if _present(target) is not None:
                return target
            await anyio.wait_readable(inotify)
            _platform.inotify_drain(inotify)
    finally:
        os.close(inotify)


# -- Line ---------------------------------------------------------------------------


class LineMatcher:
    """Matches a program's output against a :class:`Line`, one line at a time.

    The output pump calls :meth:`feed` with each line of the program's
    stdout and stderr; a waiter awaits :meth:`wait`. Only the first match
    counts: later lines are not searched (``feed`` costs nothing then).
    Made anywhere; :meth:`wait` and :meth:`feed` belong to one event loop.
    """

    def __init__(self, line: Line) -> None:
        if not isinstance(line, Line):
            raise FieldTypeError("line", f"expected a ready.Line, got {line!r}", "LineMatcher")
        self.line = line
        #: The first match, once a line matched.
        self.match: re.Match[str] | None = None
        self._event: anyio.Event | None = None

    def feed(self, text: str) -> re.Match[str] | None:
        """Search one line (its line ending is dropped); the match if it is the first one."""
        if self.match is not None:
            return None
        found = self.line.pattern.search(text.rstrip("\r\n"))
        if found is not None:
            self.match = found
            if self._event is not None:
                self._event.set()
        return found

    async def wait(self) -> re.Match[str]:
        """The first matching line's match, once one has been fed."""
        if self.match is None:
            if self._event is None:
                self._event = anyio.Event()  # made in the loop that awaits it
            await self._event.wait()
        assert self.match is not None  # set before the event is
        return self.match


# -- Notify -------------------------------------------------------------------------

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_NOTIFY_MAX = 4096  # systemd's own limit for one notification (NOTIFY_BUFFER_MAX)
#: ``SO_TIMESTAMPNS`` (and its message, ``SCM_TIMESTAMPNS``), which the
#: socket module does not name: the kernel stamps each datagram with the
#: realtime clock when it is sent (queued to us), as a ``struct timespec``
#: (two C longs). 35 on Linux's generic and x86 ABIs; where the option is
#: refused, messages are untimed (NotifyMessage.received_at None).
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
#: Room for the ancillary data of one datagram: its stamp, then its sender.
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_UCRED.size)


@dataclass(frozen=True)
class NotifyMessage:
    """One sd_notify datagram, parsed: what a program told its supervisor.

    The keys of ``sd_notify(3)`` that a supervisor acts on or shows; other
    keys are ignored. A datagram may hold several ``KEY=VALUE`` lines (the
    last of a key wins); a value that is not what its key needs (a
    ``MAINPID`` that is no number) is ignored too.
    """

    sender: int  #: the pid of the process that sent it (the kernel's word)
    ready: bool = False  #: ``READY=1``: startup is done
    status: str | None = None  #: ``STATUS=...``: a line of free text for humans
    stopping: bool = False  #: ``STOPPING=1``: the program is shutting down
    reloading: bool = False  #: ``RELOADING=1``: it is reloading its configuration
    watchdog: bool = False  #: ``WATCHDOG=1``: a watchdog keep-alive
    #: ``WATCHDOG=trigger``: act as if the watchdog had expired (the program is hung)
    watchdog_trigger: bool = False
    mainpid: int | None = None  #: ``MAINPID=``: the program's main process, if not the sender
    errno: int | None = None  #: ``ERRNO=``: why it failed, as an errno
    watchdog_usec: int | None = None  #: ``WATCHDOG_USEC=``: a new watchdog interval
    extend_timeout_usec: int | None = None  #: ``EXTEND_TIMEOUT_USEC=``: more time to start
    #: When the kernel received it, in ``time.monotonic()`` seconds (from
    #: its ``SO_TIMESTAMPNS`` stamp, never before the socket's previous read
    #: found its queue empty): a watchdog keep-alive counts when it was
    #: sent, not when a busy supervisor read it. None where the kernel gave
    #: no stamp (or a nonsense one), and for a message parsed by hand: when
    #: it was sent is unknown then (its read is no bound of it). Not compared.
    received_at: float | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, data: bytes, sender: int, received_at: float | None = None) -> NotifyMessage:
        """The message that the datagram *data* from process *sender* carries.

        *received_at*: when it arrived (``time.monotonic()`` seconds), if known.
        """
        values: dict[str, str] = {}
        for line in data.decode(errors="replace").split("\n"):
            key, equals, value = line.partition("=")
            if equals:
                values[key] = value
        fields: dict[str, object] = {}
        for key, name in (
            ("READY", "ready"),
            ("STOPPING", "stopping"),
            ("RELOADING", "reloading"),
        ):
            if key in values:
                fields[name] = values[key] == "1"
        if "WATCHDOG" in values:
            fields["watchdog"] = values["WATCHDOG"] == "1"
            fields["watchdog_trigger"] = values["WATCHDOG"] == "trigger"
        if "STATUS" in values:
            fields["status"] = values["STATUS"]
        for key, name in (
            ("MAINPID", "mainpid"),
            ("ERRNO", "errno"),
            ("WATCHDOG_USEC", "watchdog_usec"),
            ("EXTEND_TIMEOUT_USEC", "extend_timeout_usec"),
        ):
            with contextlib.suppress(KeyError, ValueError):
                fields[name] = int(values[key])
        return cls(sender, **fields, received_at=received_at)  # type: ignore[arg-type]


def _bind_notify_socket(path: str) -> tuple[socket.socket, str]:
    """A non-blocking Unix datagram socket bound at *path* that hears who sends."""
    if len(os.fsencode(path)) >= _UNIX_PATH_MAX:
        raise FieldValueError(
            "directory",
            f"{path!r} is too long for a Unix socket ({_UNIX_PATH_MAX - 1} bytes at most)",
            "NotifySocket",
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        # Before bind: every datagram that can arrive carries its sender.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # And when it was sent: a watchdog beat is timed by it (NotifyMessage.received_at).
        with contextlib.suppress(OSError):  # refused (another ABI's number): untimed
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    return sock, path


#: A kernel stamp further than this from the realtime clock's now, either
#: way, is no stamp (0, garbage): its datagram is taken as unstamped.
_STAMP_SANE = 24 * 3600.0


def _monotonic_from(stamp: float | None, floor: float) -> float | None:
    """The realtime *stamp* of a datagram on the monotonic clock; None without a sane one.

    The kernel stamps with the realtime clock only; the two clocks' offset
    is read now, a microsecond apart. A stamp is never later than now (a
    realtime clock stepped back since it was taken), nor earlier than
    *floor*: when a read last found the queue empty, so the datagram came
    after it (a realtime clock stepped forward since it was taken, by NTP
    or a VM's resume, makes the stamp look that much older).
    """
    if stamp is None:
        return None
    now = time.monotonic()
    age = time.time() - stamp
    if stamp <= 0 or abs(age) > _STAMP_SANE:
        return None
    return max(floor, min(now, now - age))


class NotifySocket:
    """The supervisor's end of the sd_notify protocol: a datagram socket, and who is believed.

    A Unix datagram socket bound in a private directory (mode 0700, ours):
    put :attr:`path` into the program's ``NOTIFY_SOCKET`` and start it in
    its own process group; then :meth:`believe` that group, and
    :meth:`receive` (or iterate, or :meth:`wait_ready`), in one task at a
    time. Made anywhere; received from in one event loop.

    Who is believed: the kernel stamps every datagram with its sender's
    pid (``SO_PASSCRED``, ``SCM_CREDENTIALS``: the sender cannot forge it),
    and only a sender that is the group's leader or a member of the group
    (its ``/proc/PID/stat``) is believed. Anything else (another program,
    a sibling whose ``NOTIFY_SOCKET`` leaked to it, a sender that exited
    before its datagram was read, such as a short-lived ``systemd-notify``
    helper other than the leader) is dropped and counted in
    :attr:`rejected`. The private directory keeps other users from sending
    at all. Datagrams longer than *max_size* bytes are dropped (counted
    too), and file descriptors sent along (``FDSTORE=1``) are closed.
    Each message says when the kernel received it
    (:attr:`NotifyMessage.received_at`, from ``SO_TIMESTAMPNS``), however
    late it is read (where the kernel stamps).

    Args:
        pgid: The program's process group, if known already (see :meth:`believe`).
        directory: Where to make the socket: a directory that is private and
            ours, or is made so (see ``_platform.ensure_private_directory``).
            By default a new temporary directory, removed on :meth:`close`.
        max_size: The longest datagram accepted, in bytes.

    Raises:
        PermissionError: *directory* is not a private directory of ours.
        FieldValueError: The socket's path would be too long for a Unix socket.
    """

    def __init__(
        self,
        pgid: int | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        max_size: int = _NOTIFY_MAX,
    ) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise FieldValueError(
                "max_size", f"expected bytes >= 1, got {max_size!r}", "NotifySocket"
            )
        self.max_size = max_size
        self.pgid = pgid
        #: Datagrams dropped: from a sender not believed, too long, or without credentials.
        self.rejected = 0
        #: The last ``STATUS=`` a believed sender gave (None before any).
        self.status: str | None = None
        #: Whether a believed sender has said ``READY=1``.
        self.ready = False
        #: When a read last found no datagram queued (``time.monotonic()``):
        #: one read later arrived after it, whatever its stamp says.
        self._empty_at = time.monotonic()
        self._own_directory = directory is None
        if directory is None:
            folder = tempfile.mkdtemp(prefix="gymnasiarch-notify-")
        else:
            folder = os.fspath(directory)
        try:
            _platform.ensure_private_directory(folder)
            # A directory of the caller's may hold several: each its own name.
            name = "notify" if directory is None else f"notify-{os.urandom(6).hex()}"
            sock, path = _bind_notify_socket(os.path.join(folder, name))
        except BaseException:
            if self._own_directory:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self._folder = folder
        self._sock: socket.socket | None = sock
        #: The socket's path: the value of ``NOTIFY_SOCKET`` for the program.
        self.path = path

    def believe(self, pgid: int) -> None:
        """Believe the processes of group *pgid* (the program's, once started), and only them."""
        self.pgid = pgid

    def _believed(self, pid: int) -> bool:
        if self.pgid is None or pid <= 0:  # 0: a sender in a pid namespace we cannot see
            return False
        if pid == self.pgid:
            return True
        info = _platform.proc_stat(pid)
        return info is not None and info.pgid == self.pgid

    def _take(self, sock: socket.socket) -> NotifyMessage | None:
        """The next datagram queued, parsed if believed; None if it was dropped."""
        data, ancillary, flags, _ = sock.recvmsg(self.max_size, _ANCILLARY)
        sender: int | None = None
        stamp: float | None = None
        for level, kind, payload in ancillary:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                sender = _UCRED.unpack_from(payload)[0]
            elif kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                stamp = seconds + nanoseconds / 1e9
            elif kind == socket.SCM_RIGHTS:  # descriptors handed to us: not ours to keep
                count = len(payload) // 4
                for fd in struct.unpack(f"{count}i", payload[: count * 4]):
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if sender is None or flags & socket.MSG_TRUNC or not self._believed(sender):
            self.rejected += 1
            return None
        message = NotifyMessage.parse(data, sender, _monotonic_from(stamp, self._empty_at))
        if message.status is not None:
            self.status = message.status
        if message.ready:
            self.ready = True
        return message

    async def receive(self) -> NotifyMessage:
        """The next message from a believed sender (others are dropped on the way).

        Raises:
            anyio.ClosedResourceError: The socket is closed (or is, by
                :meth:`aclose`, while waiting).
        """
        while True:
            sock = self._sock
            if sock is None:
                raise anyio.ClosedResourceError
            try:
                message = self._take(sock)
            except BlockingIOError:
                self._empty_at = time.monotonic()  # what comes next came after this
                await anyio.wait_readable(sock)
                continue
            if message is not None:
                return message

    def pending(self) -> list[NotifyMessage]:
        """The messages from believed senders queued now, without waiting (others dropped).

        Why: a supervisor whose event loop was busy reads what a program
        sent in time before it judges the program (its watchdog), in the
        same step. Not while another task is in :meth:`receive`'s read; a
        task that awaits the socket to be readable is fine.
        """
        found: list[NotifyMessage] = []
        sock = self._sock
        while sock is not None:
            try:
                message = self._take(sock)
            except BlockingIOError:
                self._empty_at = time.monotonic()  # what comes next came after this
                break
            if message is not None:
                found.append(message)
        return found

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> NotifyMessage:
        try:
            return await self.receive()
        except anyio.ClosedResourceError:
            raise StopAsyncIteration from None

    async def wait_ready(self) -> NotifyMessage:
        """Receive until a believed sender says ``READY=1``; that message.

        The messages received on the way (``STATUS=`` lines) update
        :attr:`status` as ever.
        """
        while not (message := await self.receive()).ready:
            pass
        return message

    def close(self) -> None:
        """Close the socket and remove its file (and its directory, if made here). Idempotent.

        Not while a task awaits :meth:`receive`: use :meth:`aclose` then.
        """
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self._own_directory:
            shutil.rmtree(self._folder, ignore_errors=True)

    async def aclose(self) -> None:
        """:meth:`close`, waking a task that awaits :meth:`receive` (it ends its iteration)."""
        if self._sock is not None:
            anyio.notify_closing(self._sock)
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
