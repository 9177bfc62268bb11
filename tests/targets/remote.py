"""Targets for the Ray backend's tests: they run in a child of a Ray actor."""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing import resource_tracker

from gymnasiarch import child_context


def _command(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode()


def _process_group(pgid: int) -> list[int]:
    """The processes of group *pgid*."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def where() -> dict[str, object]:
    """Our pid; our parent's (the node's fork server) and our requester's (the actor).

    Also: the processes in the actor's process group, and whether a
    semaphore registers with our resource tracker.
    """
    requester = multiprocessing.parent_process()
    assert requester is not None
    assert requester.pid is not None
    multiprocessing.get_context("spawn").Lock()  # registers its name with the tracker
    return {
        "requester_group": _process_group(os.getpgid(requester.pid)),
        "tracker": os.readlink(f"/proc/self/fd/{resource_tracker._resource_tracker._fd}"),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "parent_command": _command(os.getppid()),
        "requester_pid": requester.pid,
        "requester_command": _command(requester.pid),
        "environ": dict(os.environ),
    }


def print_then_crash() -> None:
    """Write to stdout and stderr, then fail."""
    print("hello from the cluster", flush=True)
    print("something is wrong", file=sys.stderr, flush=True)
    raise RuntimeError("crashed on the cluster")


def say_which_run_then_crash_once(marker: str) -> int:
    """Print which run this is; the first writes its actor's pid to *marker* and crashes.

    A later run returns its actor's pid.
    """
    requester = multiprocessing.parent_process()
    assert requester is not None
    first = not os.path.exists(marker)
    print("first run" if first else "later run", flush=True)
    if first:
        with open(marker, "w") as out:
            out.write(str(requester.pid))
        raise RuntimeError("the first run crashes")
    assert requester.pid is not None
    return requester.pid


def host_pid_to(path: str) -> None:
    """Write our actor's pid to *path*, then end."""
    requester = multiprocessing.parent_process()
    assert requester is not None
    with open(path, "w") as out:
        out.write(str(requester.pid))


def ready_and_serve(value: str) -> None:
    """Say we are ready (with *value*), then wait to be stopped."""
    import time

    child_context().ready(value)
    while True:
        time.sleep(3600)
