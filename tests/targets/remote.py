"""Targets for the Ray backend's tests: they run in a child of a Ray actor."""

from __future__ import annotations

import os
import sys

from gymnasiarch import child_context


def where() -> dict[str, object]:
    """Our pid, our parent's (the actor's worker process) and its command line."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmdline:
        parent = cmdline.read().replace(b"\0", b" ").decode()
    return {"pid": os.getpid(), "ppid": os.getppid(), "parent_command": parent}


def print_then_crash() -> None:
    """Write to stdout and stderr, then fail."""
    print("hello from the cluster", flush=True)
    print("something is wrong", file=sys.stderr, flush=True)
    raise RuntimeError("crashed on the cluster")


def ready_and_serve(value: str) -> None:
    """Say we are ready (with *value*), then wait to be stopped."""
    import time

    child_context().ready(value)
    while True:
        time.sleep(3600)
