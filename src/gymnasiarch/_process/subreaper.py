"""Escapees: processes that left a child's process group, and the subreaper that keeps them ours.

A child's subprocesses share its process group, and every stop signals the
whole group. A daemon leaves it: it forks, calls ``setsid()``, forks again and
its middle process exits (or ``setsid cmd &`` from a shell does the same).
Without more, the daemon is reparented to init and outlives the tree.

Linux has the answer: a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``)
becomes the new parent of every orphaned descendant. While a
:class:`~gymnasiarch.LocalBackend` is prepared, the supervisor's
process is one (:func:`acquire` / :func:`release`, which restore the flag the
process had before: an embedding application gets its own setting back).
An escaped process then is a direct child of the supervisor's process, and we
tell which supervised child it came from by what it inherited from it:

* ``GYMNASIARCH_CHILD=<supervisor pid>:<child pid>`` in its environment
  (:func:`mark_descendants` sets it in every child's ``os.environ``). Only an
  *exec'd* descendant shows it in ``/proc/PID/environ``: ``setproctitle``
  reuses the environment's memory for the title, so a child's own entry
  there is zeros (measured).
* The child's process title, ``gymnasiarch[name]``, in ``/proc/PID/cmdline``:
  a descendant that forked without exec (a Python daemon) still shows it
  (measured), and it was started no earlier than the child.

:func:`escapees` finds them: the descendants of a child that left its group,
and our direct children that carry its marks. The process layer signals them
with the child's group and reaps them (``waitpid`` of their own pid only,
never ``waitpid(-1)``, which would take the exit status of somebody else's
child: the application's, or multiprocessing's). :func:`reap_strays` reaps
the zombies that are ours by construction (a dead fork server's spare).

Out of reach, documented in ``docs/supervising.md``: a process that escapes
into another PID namespace; an exec'd escapee that cleared its environment,
or a forked one that changed its title, by the time its child stops (it
stays ours, but is left alone); one that escaped while no tree ran; and the
zombie of an escapee that ended on its own before any scan saw it alive (a
zombie has neither environment nor title: we do not reap what we cannot
prove is ours). Everything here is Linux-only; elsewhere the functions do
nothing and return nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Collection

from gymnasiarch import _platform
from gymnasiarch._platform import ProcInfo, boot_ticks, reap_pidfd
from gymnasiarch._process.marks import MARKER, mark_descendants

# boot_ticks and reap_pidfd moved to _platform; the process layer finds them here.
__all__ = [
    "MARKER",
    "Escapees",
    "ProcInfo",
    "acquire",
    "boot_ticks",
    "child_title",
    "children",
    "descendants",
    "environ_marker",
    "escapees",
    "is_subreaper",
    "mark_descendants",
    "nothing_escaped",
    "reap_pidfd",
    "reap_strays",
    "release",
    "stat",
    "title",
]

# MARKER and mark_descendants live in _process.marks (the child sets the mark); here too.

_LINUX = _platform.LINUX
# A zombie keeps its comm; ours is the first 15 bytes of the server's title.
_FORKSERVER_COMM = "gymnasiarch-for"


class _Holders:
    """Who holds the subreaper flag now, and what the process had before the first."""

    lock = threading.Lock()
    count = 0
    previous = False


# Escapees seen (pid -> start time): one whose zombie came to us after its
# child's watcher let it go (its parent died later) is reaped by reap_strays.
_escaped: dict[int, int] = {}


def is_subreaper() -> bool:
    """Whether this process is a child subreaper now (Linux; False elsewhere)."""
    return _platform.is_child_subreaper()


def acquire() -> None:
    """Make this process a child subreaper until the matching :func:`release`.

    Calls nest (nested supervisors, the pytest plugin's check around them):
    the first remembers the flag as it was, the last :func:`release` puts
    it back. Linux only: does nothing elsewhere.

    What it does to the process: an orphaned descendant of *any* of its
    subprocesses (not only supervised children) becomes its child, and a
    zombie of such an orphan waits for this process to reap it. We reap
    those that are ours; others stay zombies until :func:`release` and the
    process's exit (see docs/supervising.md, "Limits").
    """
    if not _LINUX:
        return
    with _Holders.lock:
        if _Holders.count == 0:
            _Holders.previous = is_subreaper()
            if not _Holders.previous:
                _platform.set_child_subreaper(True)
        _Holders.count += 1


def release() -> None:
    """Undo one :func:`acquire`; the last one restores the process's own setting."""
    if not _LINUX:
        return
    with _Holders.lock:
        if _Holders.count == 0:
            return
        _Holders.count -= 1
        if _Holders.count == 0 and not _Holders.previous:
            _platform.set_child_subreaper(False)


# -- what /proc says ------------------------------------------------------------


def stat(pid: int) -> ProcInfo | None:
    """State, parent, group and start time (clock ticks after boot) of *pid*, or None."""
    return _platform.proc_stat(pid)


def children(pid: int) -> list[int]:
    """The direct children of *pid* (every thread's: a worker thread may have forked)."""
    return _platform.proc_children(pid)


def descendants(pid: int) -> list[int]:
    """Every descendant of *pid*, parents before their children."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children(parent)]
        found.extend(frontier)
    return found


def environ_marker(pid: int) -> str | None:
    """The value of :data:`MARKER` in *pid*'s environment as the kernel shows it, or None."""
    return _platform.proc_environ(pid, MARKER)


def title(pid: int) -> str:
    """*pid*'s command line as one string (a process title has no NULs but the padding)."""
    return _platform.proc_cmdline(pid)


def child_title(name: str) -> str:
    """The process title every supervised child gives itself (see gymnasiarch.spawn)."""
    return f"gymnasiarch[{name}]"


# -- escapees ----------------------------------------------------------------


def escapees(
    pid: int,
    name: str,
    start: int | None,
    known: Collection[int] = (),
    *,
    group: bool = False,
    adopter: int | None = None,
) -> set[int]:
    """The processes that came from the child *pid* (named *name*) and left its group.

    *start* is the child's start time (``/proc/PID/stat``), None if unknown;
    *known* are pids never to count (other runs, the fork server). Found:
    the child's descendants outside its process group, our direct children
    that carry its marks (and their descendants). With *group* (once the
    child has exited), also the members of its group that were reparented
    to us, zombies included: somebody has to reap them.

    *adopter* is the subreaper the child's orphans go to where that is not
    this process: a Ray node's shared fork server, whose children are the
    children of every actor on the node (it reaps them itself). There, an
    escapee is known by its exact mark only (``GYMNASIARCH_CHILD=<our
    pid>:<child pid>``, which an exec'd escapee shows): a title is no proof
    among other actors' children, which may bear the same one.
    """
    if not _LINUX:
        return set()
    found = {p for p in descendants(pid) if (info := stat(p)) is not None and info.pgid != pid}
    ours = os.getpid()
    marker = f"{ours}:{pid}"
    wanted_title = child_title(name)
    for candidate in children(ours if adopter is None else adopter):
        if candidate == pid or candidate in known or candidate in found:
            continue
        info = stat(candidate)
        if info is None:
            continue
        if info.pgid == pid:
            if group:
                found.add(candidate)
            continue  # a living group member: the group's signals reach it
        if info.state == "Z":
            continue  # nothing tells where a zombie came from (but see reap_strays)
        environ = environ_marker(candidate)
        if adopter is not None:
            if environ == marker:
                found.add(candidate)
                found.update(descendants(candidate))
            continue  # (its adopter reaps it: nothing for reap_strays)
        its_title = title(candidate)
        if (environ or "").startswith(f"{ours}:") or its_title.startswith("gymnasiarch["):
            # Some child's escapee, seen alive: reap_strays may reap its zombie.
            _escaped[candidate] = info.start
        came_from_it = environ == marker or (
            its_title == wanted_title and (start is None or info.start >= start)
        )
        if came_from_it:
            found.add(candidate)
            found.update(descendants(candidate))
    return found


class Escapees:
    """The escaped processes of one child, held by pidfd so that a pid is never reused under us."""

    def __init__(self) -> None:
        self.pidfds: dict[int, int] = {}

    def take(self, pids: set[int]) -> None:
        """Hold every one of *pids* not held yet (those already gone are skipped)."""
        for pid in pids:
            if pid in self.pidfds:
                continue
            with contextlib.suppress(OSError):
                self.pidfds[pid] = _platform.pidfd_open(pid)
                info = stat(pid)
                if info is not None:
                    _escaped[pid] = info.start

    def signal(self, signum: int) -> None:
        """Send *signum* to every escapee still around."""
        for pidfd in self.pidfds.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                _platform.pidfd_send_signal(pidfd, signum)

    def reap(self, pid: int) -> None:
        """The escapee *pid* has exited: reap it if it is our child, and let it go."""
        pidfd = self.pidfds.pop(pid)
        reap_pidfd(pidfd)
        os.close(pidfd)

    def close(self) -> None:
        """Let go of every escapee (they were reaped, or are abandoned)."""
        for pidfd in self.pidfds.values():
            os.close(pidfd)
        self.pidfds.clear()


def nothing_escaped(known: Collection[int]) -> bool:
    """True if there is no escapee and no stray to look for: one read of ``/proc``.

    Why: an exited child's escapees (its group's members, the processes
    that left the group, their descendants) and the strays
    :func:`reap_strays` reaps all become direct children of this subreaper,
    or are escapees seen before. So when every direct child of this process
    is in *known* (our fork server and helpers, the runs that live) and no
    escapee was seen before, :func:`escapees` and :func:`reap_strays` would
    find nothing: the common exit is spared their scans of ``/proc``
    (measured: ~60 µs of the event loop's time per exit, more with threads).
    Always True where there is no ``/proc`` (they find nothing there either).
    """
    if not _LINUX:
        return True
    if _escaped:
        return False
    return all(pid in known for pid in children(os.getpid()))


def reap_strays(exclude: set[int]) -> list[int]:
    """Reap our zombie children that are gymnasiarch's by construction; their pids.

    Those are the spare (and children) of a fork server that died: they
    were reparented to this subreaper, and only the server knew their pids
    (a zombie keeps its ``comm``); and escapees seen before whose zombie
    came to us late. *exclude* are pids somebody else reaps (the fork
    server itself: :class:`~gymnasiarch._process.forkserver.ForkServer`).
    """
    reaped: list[int] = []
    if not _LINUX:
        return reaped
    for pid, start in list(_escaped.items()):
        info = stat(pid)
        if info is None or info.start != start:
            del _escaped[pid]  # gone (reaped by whoever was its parent)
    for pid in children(os.getpid()):
        if pid in exclude:
            continue
        info = stat(pid)
        if info is None or info.state != "Z":
            continue
        escaped = _escaped.get(pid) == info.start
        if not escaped and _platform.proc_comm(pid) != _FORKSERVER_COMM:
            continue
        _escaped.pop(pid, None)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
            reaped.append(pid)
    return reaped
