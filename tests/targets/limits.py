"""Targets for tests/test_limits.py: children that hit their resource limits."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from typing import Any

from gymnasiarch import child_context

MIB = 2**20


def allocate_until_refused(chunk: int = 16 * MIB, cap: int = 2048 * MIB) -> str:
    """Allocate (and touch) memory until the kernel refuses: MemoryError, not caught.

    Up to *cap*: without its limit, the child returns rather than take the machine.
    """
    held = []
    while len(held) * chunk < cap:
        held.append(b"x" * chunk)
    return "never refused"


def hold_resident(size: int) -> None:
    """Make *size* bytes resident, then wait to be stopped."""
    hog = b"x" * size
    time.sleep(3600)
    del hog


def hold_and_spin(size: int, seconds: float) -> None:
    """Make *size* bytes resident, spend *seconds* of CPU, say ready, then wait to be stopped."""
    hog = b"x" * size
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    child_context().ready()
    time.sleep(3600)
    del hog


def open_until_refused(cap: int = 4096) -> str:
    """Open files until the kernel refuses (EMFILE), not caught; up to *cap* of them."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(cap)]
    for fd in held:
        os.close(fd)
    return "never refused"


def limits_seen() -> dict[str, Any]:
    """The limits this child runs with, soft and hard."""
    return {
        "core": resource.getrlimit(resource.RLIMIT_CORE),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "data": resource.getrlimit(resource.RLIMIT_DATA),
        "cpu": resource.getrlimit(resource.RLIMIT_CPU),
    }


def spin(cap: float = 30.0) -> str:
    """Use the CPU until stopped (or for *cap* CPU seconds)."""
    while time.process_time() < cap:
        pass
    return "never stopped"


def hold_resident_ignoring_sigterm(size: int) -> None:
    """Make *size* bytes resident with SIGTERM ignored: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    hog = b"x" * size
    time.sleep(3600)
    del hog


def start_a_thread_with_a_large_stack(stack: int) -> str:
    """Start a thread with a *stack*-byte stack (private writable memory, as RLIMIT_DATA counts)."""
    threading.stack_size(stack)
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    return "started"


def spin_ignoring_sigxcpu(cap: float = 60.0) -> str:
    """Use the CPU with SIGXCPU ignored: the hard RLIMIT_CPU's SIGKILL ends it."""
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    return spin(cap)
