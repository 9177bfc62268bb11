"""The Linux-only system calls gymnasiarch makes, in one place, each with what happens elsewhere.

As trio fences its ``_subprocess_platform``, the calls that only Linux has
(pidfds, ``/proc``, ``prctl``, signal-driven I/O, ``SO_PEERCRED``,
``close_range``) live here, each behind a function whose docstring says
what it does, why gymnasiarch needs it, and what it does on a system
without it. The callers hold the policy; this module holds the mechanism.

A leaf: it imports nothing of ours (and no event loop), so the child's
bootstrap and the fork server, which load it before any child starts, pay
for it once. The C library is opened once here, at import, for the same
reason: in the fork server, not in every child.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LINUX = sys.platform.startswith("linux")

# linux/prctl.h and linux/close_range.h
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_CLOSE_RANGE_CLOEXEC = 4
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

# Opened once, at import (in the fork server, rather than in every child).
_LIBC = ctypes.CDLL(None, use_errno=True) if LINUX else None


def _libc_close_range() -> Any:  # a ctypes function, or None
    if _LIBC is None:
        return None
    try:
        close_range = _LIBC.close_range  # glibc 2.34 and later
    except AttributeError:
        return None
    close_range.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
    close_range.restype = ctypes.c_int
    return close_range


_CLOSE_RANGE = _libc_close_range()


# -- pidfds -----------------------------------------------------------------------


def pidfd_open(pid: int) -> int:
    """A pidfd of *pid*: a descriptor that becomes readable when the process exits.

    Why: a process exit is awaited on a descriptor through the event loop
    (no polling, no SIGCHLD handler), and a pidfd names the process itself,
    not a pid that may be reused once it is reaped.

    Elsewhere (or on Linux before 5.3): raises :class:`OSError`, as it does
    for a pid that is gone (:class:`ProcessLookupError`).
    """
    opener = getattr(os, "pidfd_open", None)
    if opener is None:  # pragma: no cover - Linux 5.3+ has it
        raise OSError(38, "pidfd_open is not available here")  # ENOSYS
    fd: int = opener(pid)
    return fd


def pidfd_send_signal(pidfd: int, signum: int) -> None:
    """Send *signum* to the process behind *pidfd*.

    Why: unlike ``os.kill(pid)`` it cannot hit a process that took over a
    reaped child's pid. Raises :class:`ProcessLookupError` once the process
    has exited. There is no pidfd without Linux, so callers never get here.
    """
    signal.pidfd_send_signal(pidfd, signum)


def reap_pidfd(pidfd: int) -> int | None:
    """Reap the exited process behind *pidfd* if it is our child; its exit code, else None.

    Why: only that one process is reaped, never with ``waitpid(-1)``,
    which would take the exit status of somebody else's child (the
    application's, or multiprocessing's). A process that is not our child
    (its parent reaps it) or has not exited yet gives None. The code is
    negative for a signal, as ``Popen.returncode`` is.
    """
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return -result.si_status


# -- /proc ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """What gymnasiarch reads of one ``/proc/PID/stat``."""

    pid: int
    state: str  # "R", "S", "Z" (a zombie), ...
    ppid: int
    pgid: int
    start: int  # clock ticks after boot


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            # After the name, which may hold spaces and parentheses itself.
            return file.read().rpartition(b")")[2].split()
    except OSError:
        return None


def proc_pids() -> list[int]:
    """Every process's pid, from the listing of ``/proc``.

    Why: the pytest plugin's leftover check looks at every process started
    during a test, wherever it went. Elsewhere: an empty list.
    """
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def proc_uid(pid: int) -> int | None:
    """The user *pid* runs as (the owner of ``/proc/PID``), or None once it is gone (or elsewhere).

    Why: another user's processes are none of ours to look into.
    """
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def proc_stat(pid: int) -> ProcInfo | None:
    """State, parent, process group and start time of *pid*, from ``/proc/PID/stat``.

    Why: to tell processes that left a child's group, zombies, and whether
    a pid still names the process seen before (same start time).
    Elsewhere, or for a process that is gone: None.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # state ppid pgrp session tty tpgid flags ... starttime (the 20th after the name).
    return ProcInfo(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]))


def zombie_exit_code(pid: int) -> int | None:
    """The exit code of *pid* if it is a zombie now, read without reaping it.

    Why: the fork server reaps our children and only then writes their exit
    code to us; Linux shows a zombie's wait status in ``/proc/PID/stat``
    (its 52nd field, since 3.5), so the process layer need not wait for the
    server once the child's pidfd fires. The pid cannot be someone else's:
    a zombie keeps it until reaped. None for a living or reaped process,
    an older kernel, or elsewhere (the server's word is awaited then).
    """
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 50 or fields[0] != b"Z":
        return None
    return os.waitstatus_to_exitcode(int(fields[49]))


def zombie_cpu_seconds(pid: int) -> float | None:
    """The CPU seconds (user and system) *pid* used, if it is a zombie now.

    Why: a child SIGKILLed by the kernel at the hard ``RLIMIT_CPU`` (a
    ``limits.cpu_seconds`` it outran, handling its SIGXCPU) looks like any
    other SIGKILL; its CPU time, still in ``/proc/PID/stat`` until it is
    reaped, tells them apart. Its own time only, not its waited-for
    children's: the limit is per process. None for a living or reaped
    process, or elsewhere.
    """
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 13 or fields[0] != b"Z":
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def zombie_cpu_soft_limit(pid: int) -> int | None:
    """The soft ``RLIMIT_CPU`` of *pid*, in seconds, if it is a zombie now.

    Why: the kernel raises a process's soft CPU limit by a second at each
    SIGXCPU, and kills it at the hard limit, both by its own count of the
    CPU time (in ticks). Under load that count runs ahead of the exact time
    :func:`zombie_cpu_seconds` reads (a third of a second in 6 s, measured):
    a soft limit raised to the hard one is the kernel's word that it counted
    to within a second of it. None for a living, reaped or unlimited process,
    or elsewhere.
    """
    fields = _stat_fields(pid)
    if fields is None or not fields or fields[0] != b"Z":
        return None
    for line in _read(f"/proc/{pid}/limits").decode(errors="replace").splitlines():
        if line.startswith("Max cpu time"):
            soft = line.removeprefix("Max cpu time").split()[0]
            return int(soft) if soft.isdigit() else None
    return None


def boot_ticks() -> int:
    """Now, in the unit of :attr:`ProcInfo.start`: clock ticks since boot.

    Why: "started no earlier than this child" compares a process's start
    time against a moment of ours. ``CLOCK_BOOTTIME`` is Linux's; elsewhere
    the call raises, and no caller gets here (no ``/proc``).
    """
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def proc_children(pid: int) -> list[int]:
    """The direct children of *pid*, from ``/proc/PID/task/*/children``.

    Why: to find a child's descendants (every thread's: a worker thread may
    have forked). Needs ``CONFIG_PROC_CHILDREN``; elsewhere, or for a
    process that is gone, an empty list.
    """
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        found.extend(int(child) for child in _read(f"/proc/{pid}/task/{task}/children").split())
    return found


def proc_environ(pid: int, name: str) -> str | None:
    """The value of *name* in *pid*'s environment as the kernel shows it (``/proc/PID/environ``).

    Why: an exec'd descendant of a child carries the child's mark there
    (see :mod:`gymnasiarch._process.subreaper`). Only the environment the process
    was exec'd with, readable by its own user. None if absent, unreadable,
    or elsewhere.
    """
    prefix = name.encode() + b"="
    for entry in _read(f"/proc/{pid}/environ").split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def proc_cmdline(pid: int) -> str:
    """*pid*'s command line as one string, from ``/proc/PID/cmdline``.

    Why: a process title (``setproctitle``) shows there, and a forked,
    not exec'd, descendant keeps its parent's. Arguments are joined by
    spaces. Empty for a zombie, a process that is gone, or elsewhere.
    """
    return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def proc_comm(pid: int) -> str:
    """*pid*'s command name (``/proc/PID/comm``, at most 15 bytes), kept by a zombie too.

    Why: a zombie has no command line left, and the fork server's spare is
    known by its comm alone. Empty for a process that is gone, or elsewhere.
    """
    return _read(f"/proc/{pid}/comm").strip().decode(errors="replace")


# -- prctl ------------------------------------------------------------------------


def _prctl(option: int, arg: int | ctypes.c_int | ctypes._Pointer[ctypes.c_int]) -> None:
    if _LIBC is None:  # pragma: no cover - Linux only
        raise OSError(38, "prctl is Linux's")  # ENOSYS
    if _LIBC.prctl(option, arg, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send *signum* to this process when its parent thread ends.

    ``prctl(PR_SET_PDEATHSIG)``. Why: a child must not outlive a supervisor
    killed with SIGKILL. The signal belongs to the *thread* that forked us
    (hence children start only from the event loop's thread), and it is
    cleared by a fork, not by an exec. Returns False where it is not
    available (not Linux) or the call failed; the caller's other guard
    (EOF on the parent's pipe) works everywhere.
    """
    try:
        _prctl(_PR_SET_PDEATHSIG, signum)
    except OSError:
        return False
    return True


def is_child_subreaper() -> bool:
    """Whether this process is a child subreaper now (``PR_GET_CHILD_SUBREAPER``).

    Why: to give an embedding application its own setting back. False
    elsewhere: there is no such flag.
    """
    if not LINUX:
        return False
    value = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.pointer(value))
    return bool(value.value)


def set_child_subreaper(on: bool) -> None:
    """Make this process a child subreaper (*on*) or not (``PR_SET_CHILD_SUBREAPER``).

    Why: an orphaned descendant of a supervised child (a daemon that left
    its group) is then reparented to us rather than to init, so it can be
    found, stopped and reaped. Raises :class:`OSError` where the call
    fails; callers check :data:`LINUX` first (elsewhere escapees are out of
    reach, see docs/supervising.md).
    """
    _prctl(_PR_SET_CHILD_SUBREAPER, 1 if on else 0)


# -- descriptors ------------------------------------------------------------------


def signal_on_readable(fd: int, signum: int, owner: int) -> bool:
    """Have the kernel send *signum* to *owner* when *fd* becomes readable (or hits EOF).

    Signal-driven I/O: ``F_SETSIG``, ``F_SETOWN`` (a negative *owner* is a
    process group), then ``O_ASYNC``. Why: a child's parent-death guard
    on its parent's pipe then needs no watcher thread (a thread costs
    0.4 ms per start and its stack in every child), and with SIGKILL the
    kernel carries it out even for an interpreter stuck in C code.
    Returns False where ``F_SETSIG`` is missing (not Linux): the caller
    watches the pipe with a thread instead.
    """
    set_signal = getattr(fcntl, "F_SETSIG", None)
    if set_signal is None:
        return False
    fcntl.fcntl(fd, set_signal, signum)
    fcntl.fcntl(fd, fcntl.F_SETOWN, owner)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    return True


def cloexec_from(first: int) -> None:
    """Make every descriptor from *first* up close-on-exec.

    Why: what a child was handed (its channel, the resource tracker's
    pipe, fds passed by ``SCM_RIGHTS``) must not pass on to the programs
    its target executes. One ``close_range(CLOSE_RANGE_CLOEXEC)`` call on
    Linux 5.11+ with glibc 2.34+; otherwise a walk of ``/proc/self/fd``;
    without ``/proc`` (not Linux), nothing.
    """
    if _CLOSE_RANGE is not None and _CLOSE_RANGE(first, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC) == 0:
        return
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own fd, closed by now
                if int(name) >= first:
                    os.set_inheritable(int(name), False)


# -- who is at the other end, and whose is a directory -----------------------------


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """pid, uid and gid of the process at the other end of the Unix socket *sock*.

    ``SO_PEERCRED``: what the kernel recorded when the peer connected. Why:
    only our own user may talk to the fork server, the log server or the
    control socket over a Unix socket. None where ``SO_PEERCRED`` is
    missing (not Linux); a socket that is not a Unix one raises
    :class:`OSError`.
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # pragma: no cover - Linux has it
        return None
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))
    return pid, uid, gid


def peer_is_other_user(sock: socket.socket) -> int | None:
    """The uid of *sock*'s peer if it runs as another user than we do, else None.

    The one peer check of the fork server, the log server and the control
    socket. None also where the kernel cannot tell (see
    :func:`peer_credentials`): the private directory is the guard there.
    """
    credentials = peer_credentials(sock)
    if credentials is None:  # pragma: no cover - Linux has it
        return None
    uid = credentials[1]
    return uid if uid != os.getuid() else None


def ensure_private_directory(path: str | os.PathLike[str], *, parents: bool = False) -> None:
    """Make the directory *path* (mode 0700), or check that an existing one is ours and private.

    Why: a socket in it hands out file descriptors (the fork server) or
    accepts commands and records: another user must not be able to put
    one there or reach ours. A symlink in its place is refused (it could be
    pointed elsewhere later), as is a directory of another user or one
    that others may enter. With *parents*, missing parents are made too
    (0700 as well). POSIX: the same everywhere.

    Raises:
        PermissionError: *path* is not a private directory of ours.
    """
    if parents:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{os.fspath(path)} is not a private directory of ours (mode 0700, our uid)"
        )


@contextlib.contextmanager
def file_locked(path: str, operation: int, *, create: bool) -> Iterator[bool]:
    """Hold ``flock`` *operation* on the file at *path*; yield whether it is still that file.

    Why: a lock file that its last user removes (with its directory, so
    that nothing is left behind) may be removed while another process waits
    for its lock; that process then holds the lock of a file nobody else
    will find, while a newcomer makes a new one. Yields False in that case,
    and when there is no file at *path* (and *create* is false, or its
    directory is gone): the caller makes it again, or leaves. POSIX.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, operation)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            yield False
        else:
            held = os.fstat(fd)
            yield (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
    finally:
        os.close(fd)  # and with it the lock


# -- the ports the kernel gives out itself -----------------------------------------

#: Linux's default ``ip_local_port_range``, for a system that does not say.
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)


def ephemeral_port_range() -> tuple[int, int]:
    """The first and last port the kernel gives a socket that did not bind one (inclusive).

    Why: a ``connect()`` without a ``bind()``, and a bind to port 0, get
    their local port from this range (``/proc/sys/net/ipv4/ip_local_port_range``),
    so a port picked for a program to bind later is picked outside it: no
    outgoing connection can take it meanwhile. Elsewhere, or unreadable:
    Linux's default, :data:`DEFAULT_EPHEMERAL_PORTS`.
    """
    fields = _read("/proc/sys/net/ipv4/ip_local_port_range").split()
    try:
        first, last = (int(field) for field in fields)
    except ValueError:  # not two numbers (no such file)
        return DEFAULT_EPHEMERAL_PORTS
    return first, last


# -- who listens where: the kernel's socket tables ----------------------------------

_TCP_LISTEN = "0A"  # include/net/tcp_states.h: TCP_LISTEN, as /proc/net/tcp prints it


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening TCP socket, as ``/proc/net/tcp`` or ``/proc/net/tcp6`` shows it."""

    host: str  # the local address, "127.0.0.1", "::", "::ffff:127.0.0.1", ...
    port: int
    inode: int  # the socket's inode: "socket:[INODE]" in its owner's /proc/PID/fd


def _proc_address(text: str) -> str:
    # The kernel prints each 32-bit word of the (network order) address as
    # a host-order integer in hex ("0100007F" is 127.0.0.1 here).
    words = [int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8)]
    family = socket.AF_INET if len(words) == 1 else socket.AF_INET6
    return socket.inet_ntop(family, b"".join(words))


def tcp_listeners(port: int, pid: int | None = None) -> list[Listener]:
    """The TCP sockets listening on *port*, from ``/proc/[PID/]net/tcp`` and ``tcp6``.

    Why: a program is ready when it listens, and this tells so without
    connecting to it (a probe connection ends a server that serves one
    client, and succeeds when another process holds the port). With *pid*
    the tables of that process's network namespace are read (a child may
    have its own), else ours. Each socket's inode says whose it is (see
    :func:`proc_socket_inodes`). Elsewhere, or for a pid that is gone: an
    empty list.
    """
    root = "/proc/net" if pid is None else f"/proc/{pid}/net"
    found: list[Listener] = []
    for table in ("tcp", "tcp6"):
        for row in _read(f"{root}/{table}").splitlines()[1:]:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = row.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN.encode():
                continue
            address, _, hex_port = fields[1].decode().partition(":")
            if int(hex_port, 16) == port:
                found.append(Listener(_proc_address(address), port, int(fields[9])))
    return found


def proc_socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets *pid* holds open, from its ``/proc/PID/fd/*`` links.

    Why: a socket of the kernel's tables (:func:`tcp_listeners`) belongs to
    whichever processes hold a descriptor of it, whose links read
    ``socket:[INODE]``. Readable for our own user's processes (and root's
    for all). Empty for a process that is gone, one we may not look into,
    or elsewhere.
    """
    inodes: set[int] = set()
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def proc_group(pgid: int) -> list[int]:
    """The pids of the processes in process group *pgid* (the pgrp field of ``/proc/*/stat``).

    Why: a supervised child runs in its own group, with whatever it forked:
    "the child" is the group, not only its leader (a shell script's server
    is its grandchild). There is no index by group: every process's stat
    is read. Elsewhere: an empty list.
    """
    found: list[int] = []
    for pid in proc_pids():
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 2 and int(fields[2]) == pgid:
            found.append(pid)
    return found


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_usage(leader: int) -> tuple[int, float] | None:
    """Resident bytes and CPU seconds of the process group that *leader* leads.

    Why: a child's memory and CPU time (``which_children()``, ``status``)
    and its ``max_memory`` are its whole group's: a shell script's server
    is its grandchild. Read from ``/proc/PID/stat`` (``rss``, ``utime``,
    ``stime``, and ``cutime``/``cstime`` for the children each member has
    waited for) of the leader and of its descendants that are in its group,
    found through ``/proc/PID/task/*/children``: the cost grows with the
    child's own processes (about 25 µs for a child of one process, measured),
    not with the machine's, as a scan of every ``/proc/*/stat`` for the
    group would. A member whose parent left the group or died (reparented
    to the supervisor) is not found. Summed RSS is an upper bound: a page
    shared by several members (or, copy-on-write, with the fork server)
    counts once for each. None for a leader that is gone, or elsewhere.
    """
    fields = _stat_fields(leader)
    if fields is None or len(fields) < 22:
        return None
    pages = int(fields[21])
    ticks = sum(int(value) for value in fields[11:15])
    seen = {leader}
    waiting = proc_children(leader)
    while waiting:
        pid = waiting.pop()
        if pid in seen:
            continue
        seen.add(pid)
        member = _stat_fields(pid)
        if member is None or len(member) < 22 or int(member[2]) != leader:
            continue  # gone, or left the group (with what it started)
        pages += int(member[21])
        ticks += sum(int(value) for value in member[11:15])
        waiting.extend(proc_children(pid))
    return pages * _PAGE_SIZE, ticks / _CLOCK_TICKS


# -- resource limits ----------------------------------------------------------------

#: What each key of ``ChildSpec.limits`` sets. Memory is ``RLIMIT_DATA``, not
#: ``RLIMIT_AS``: since Linux 4.7 it counts private writable memory (the heap,
#: malloc's arenas as they are used, thread stacks), where ``RLIMIT_AS`` counts
#: every mapping, reserved or not: a Python child with four idle threads
#: measured 397 MiB of address space (each thread: its 8 MiB stack and a
#: 64 MiB malloc arena reserved) for 62 MiB of data and 25 MiB resident.
RESOURCE_LIMITS = {
    "memory": resource.RLIMIT_DATA,
    "open_files": resource.RLIMIT_NOFILE,
    "cpu_seconds": resource.RLIMIT_CPU,
    "core_dumps": resource.RLIMIT_CORE,
}
#: CPU seconds between SIGXCPU (the soft limit) and SIGKILL (the hard one):
#: the kernel kills at once where both are equal, and a child that handles
#: SIGXCPU (to save its work) needs a moment.
CPU_HARD_MARGIN = 5


def set_resource_limits(limits: dict[str, int | bool]) -> None:
    """Set this process's limits (``setrlimit``) as a child's ``limits`` say.

    Why: the kernel enforces them in the child and in everything it starts
    (they survive fork and exec), where the supervisor could only sample.
    Soft and hard limits alike, so that the child cannot lift them again;
    except ``cpu_seconds``, whose hard limit is :data:`CPU_HARD_MARGIN`
    seconds later, and ``core_dumps = True``, which raises the soft limit to
    the hard one. POSIX's ``setrlimit``; ``RLIMIT_DATA`` counts all private
    writable memory on Linux 4.7 and later (only the heap before).

    Raises:
        ValueError: A limit above the hard limit this process has, which
            only a privileged process may raise, or one larger than
            ``setrlimit`` takes (a C long: ``OverflowError``, from a spec
            not made by ``ChildSpec``, which refuses such); the message
            names it as ``limits.<key>``.
    """
    for key, value in limits.items():
        which = RESOURCE_LIMITS[key]
        _, hard = resource.getrlimit(which)
        if key == "core_dumps":
            soft, new_hard = (hard, hard) if value else (0, 0)
        elif key == "cpu_seconds":
            soft, new_hard = int(value), int(value) + CPU_HARD_MARGIN
        else:
            soft, new_hard = int(value), int(value)
        try:
            resource.setrlimit(which, (soft, new_hard))
        except (ValueError, OSError, OverflowError) as error:
            shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
            raise ValueError(
                f"limits.{key} = {value!r} cannot be set: {error} (the hard limit here is {shown})"
            ) from None


# -- inotify ------------------------------------------------------------------------

# linux/inotify.h
IN_ATTRIB = 0x00000004
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def _libc_call(name: str, *args: Any) -> int:
    function = getattr(_LIBC, name, None) if _LIBC is not None else None
    if function is None:
        raise OSError(38, f"{name} is not available here")  # ENOSYS
    result: int = function(*args)
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


_TFD_TIMER_ABSTIME = 1


def timerfd_create() -> int:
    """A new timer on ``CLOCK_MONOTONIC`` (the clock of ``time.monotonic()``), disarmed.

    Non-blocking and close-on-exec. Why: a child's watchdog deadline is one
    kernel timer that the child itself moves at each beat (it holds the
    descriptor too) and that the supervisor awaits as a readable
    descriptor: it wakes the supervisor only when the child missed its
    deadline, never per beat. Raises :class:`OSError` where it is missing.
    """
    flags = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_NONBLOCK, TFD_CLOEXEC
    return _libc_call("timerfd_create", ctypes.c_int(time.CLOCK_MONOTONIC), ctypes.c_int(flags))


#: The step in which an expired timer counts how late its reader is (see
#: :func:`timerfd_expire_at`): the resolution of a hung child's "no beat for".
TIMERFD_LATE_STEP = 0.001


def timerfd_expire_at(fd: int, when: float) -> None:
    """Arm the timer *fd* to expire at *when* (``time.monotonic()`` seconds).

    Re-arming moves the deadline and forgets an expiry not yet read. A
    *when* already past expires at once. After *when* it counts on in steps
    of :data:`TIMERFD_LATE_STEP`, so the count that the first read returns
    says how late the reader was (``(count - 1) * step``). Why: the kernel
    computes that count at the read (no wake-up per step), where a reader
    woken late by a busy event loop has no other way to know when the
    deadline passed.
    """
    seconds = int(when)  # > 0: CLOCK_MONOTONIC counts from the boot (all zero would disarm)
    value = _Itimerspec(
        _Timespec(0, int(TIMERFD_LATE_STEP * 1e9)),
        _Timespec(seconds, int((when - seconds) * 1e9)),
    )
    _libc_call(
        "timerfd_settime",
        ctypes.c_int(fd),
        ctypes.c_int(_TFD_TIMER_ABSTIME),
        ctypes.byref(value),
        None,
    )


def timerfd_disarm(fd: int) -> None:
    """Disarm the timer *fd*: it expires no more (an expiry not yet read is forgotten)."""
    value = _Itimerspec(_Timespec(0, 0), _Timespec(0, 0))
    _libc_call("timerfd_settime", ctypes.c_int(fd), ctypes.c_int(0), ctypes.byref(value), None)


def inotify_init() -> int:
    """A new inotify descriptor, non-blocking and close-on-exec (``inotify_init1``).

    Why: the appearance of a file is awaited as the descriptor becoming
    readable, through the event loop, rather than by looking again and
    again. Raises :class:`OSError` where inotify is missing (not Linux, or
    a kernel without it) or the user's instance limit is reached: callers
    fall back to re-checking with a bounded backoff.
    """
    return _libc_call("inotify_init1", ctypes.c_int(_IN_NONBLOCK | _IN_CLOEXEC))


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    """Watch the directory or file *path* for the events in *mask*; the watch's number.

    Why: see :func:`inotify_init`. Raises :class:`OSError` for a path that
    is missing or unreadable, or once the user's watch limit is reached.
    """
    return _libc_call(
        "inotify_add_watch", ctypes.c_int(fd), os.fsencode(path), ctypes.c_uint32(mask)
    )


def inotify_drain(fd: int) -> int:
    """Read and discard every event queued on the inotify descriptor *fd*; how many bytes.

    Why: an event only says "look again" to its callers, who then check
    the path itself; the queue is emptied so that the descriptor is not
    readable again for events already seen.
    """
    total = 0
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return total
        if not chunk:
            return total
        total += len(chunk)


#: The signals a supervised child answers in its main thread.
CHILD_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


@contextlib.contextmanager
def signals_blocked(signums: frozenset[int] = CHILD_SIGNALS) -> Iterator[None]:
    """Block *signums* in this thread while a helper thread is started (``pthread_sigmask``).

    A new thread inherits its creator's signal mask. The kernel gives a
    process-directed signal to any thread that does not block it; when that
    is a helper thread, CPython only flags the signal, and the main thread
    runs its handler once its blocking call (a ``time.sleep(3600)`` in the
    target) returns: a SIGTERM could wait an hour. Helper threads started
    under this block leave those signals to the main thread, whose sleep they
    interrupt. Signals arriving meanwhile stay pending and are delivered when
    the block ends. POSIX; a no-op where ``pthread_sigmask`` is missing.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    old = mask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)
