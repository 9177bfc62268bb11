"""Targets for the Ray backend's tests: they run in a child of a Ray actor."""

from __future__ import annotations

import os
import sys

from gymnasiarch import child_context


def where() -> dict[str, int]:
    """Our pid and our parent's (the actor's worker process)."""
    return {"pid": os.getpid(), "ppid": os.getppid()}


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
